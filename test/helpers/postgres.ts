import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { rmSync } from 'node:fs';
import { access, appendFile, chown, mkdtemp, open, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './free-port.ts';

export interface TestCluster {
  /** Unix socket directory (local connections there use trust auth). */
  host: string;
  port: number;
  /** Superuser name: 'postgres'. */
  user: string;
  /** The superuser's password, required for TCP connections to 127.0.0.1 (scram-sha-256). */
  password: string;
  binDir: string;
  /** libpq environment for the socket, no password needed: PGHOST, PGPORT, PGUSER. */
  env(): Record<string, string>;
  /** A postgres:// URL; with { tcp: true } it points at 127.0.0.1:port and includes no password. */
  url(database: string, options?: { tcp?: boolean }): string;
  /** Runs SQL with psql -X -q -At -v ON_ERROR_STOP=1 over the socket; returns stdout. */
  psql(sql: string, database?: string): Promise<string>;
  createDatabase(name: string): Promise<void>;
  /** Loads ../shared/bench/dataset.sql (path resolved from the repository root) at `scale` into `database` (created first). */
  loadDataset(database: string, scale: number): Promise<void>;
  /** Stops the server (fast shutdown) and removes the temp directory. Safe to call twice. */
  stop(): Promise<void>;
  /** The data directory (owned by the postgres OS user when running as root). */
  dataDir: string;
  /** Stops the server, runs `between` (on its files, say), and starts it again on the same port. */
  restart(between?: () => Promise<void>): Promise<void>;
}

export interface ClusterOptions {
  /** Server settings added to postgresql.conf (values as they are written there, quoted when text). */
  settings?: Record<string, string>;
  /** initdb --data-checksums. */
  dataChecksums?: boolean;
}

const BIN_DIR = '/usr/lib/postgresql/15/bin';
const SUPERUSER = 'postgres';
const REPOSITORY_ROOT = fileURLToPath(new URL('../../', import.meta.url));
const DATASET = path.resolve(REPOSITORY_ROOT, '../shared/bench/dataset.sql');
const START_ATTEMPTS = 5;
const LOG_TAIL_BYTES = 4096;

/** Settings that trade durability for speed: a test cluster never outlives its test. */
const FAST_SETTINGS = {
  fsync: 'off',
  synchronous_commit: 'off',
  full_page_writes: 'off',
  shared_buffers: '64MB',
  max_wal_size: '1GB',
};

/** PostgreSQL refuses to run as root; when we are root, initdb and pg_ctl run as the postgres OS user. */
const asRoot = process.getuid?.() === 0;

/** Clusters still running, stopped synchronously if the test process exits without stopping them. */
const running = new Set<{ dataDir: string; dir: string }>();
process.on('exit', () => {
  for (const cluster of running) {
    spawnSync(
      ...serverCommand(path.join(BIN_DIR, 'pg_ctl'), ['stop', '-D', cluster.dataDir, '-m', 'immediate']),
      {
        cwd: cluster.dir,
        env: libpqFreeEnv(),
        stdio: 'ignore',
      },
    );
    rmSync(cluster.dir, { recursive: true, force: true });
  }
});

export async function startCluster(options: ClusterOptions = {}): Promise<TestCluster> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'strongbox-pg-'));
  const dataDir = path.join(dir, 'data');
  const logFile = path.join(dir, 'server.log');
  const entry = { dataDir, dir };
  const password = randomBytes(24).toString('base64url');
  try {
    await giveToServerUser(dir);
    await initdb(dir, dataDir, password, options);
    running.add(entry);
    const port = await startServer(dir, dataDir, logFile);
    return makeCluster(dir, dataDir, port, password, () => running.delete(entry));
  } catch (error) {
    await stopServer(dir, dataDir).catch(() => undefined);
    running.delete(entry);
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** Runs fn with a fresh cluster and always stops it. */
export async function withCluster<T>(fn: (cluster: TestCluster) => Promise<T>): Promise<T> {
  const cluster = await startCluster();
  try {
    return await fn(cluster);
  } finally {
    await cluster.stop();
  }
}

/**
 * A server on a data directory made elsewhere (a restored backup), under `dir`, which it owns
 * from then on: stop() removes it. Its socket goes into `dir`.
 */
export async function startClusterOn(dir: string, dataDir: string): Promise<TestCluster> {
  const entry = { dataDir, dir };
  await appendFile(
    path.join(dataDir, 'postgresql.conf'),
    `\n# strongbox test cluster, restored\nunix_socket_directories = ${quoteLiteral(dir)}\n`,
  );
  if (asRoot) execFileSync('chown', ['-R', `${SUPERUSER}:${SUPERUSER}`, dir]);
  running.add(entry);
  try {
    const port = await startServer(dir, dataDir, path.join(dir, 'server.log'));
    return makeCluster(dir, dataDir, port, '', () => running.delete(entry));
  } catch (error) {
    running.delete(entry);
    throw error;
  }
}

function makeCluster(
  dir: string,
  dataDir: string,
  port: number,
  password: string,
  forget: () => void,
): TestCluster {
  let currentPort = port;
  let stopping: Promise<void> | undefined;
  const env = () => ({ PGHOST: dir, PGPORT: String(currentPort), PGUSER: SUPERUSER });
  const psql = async (sql: string, database = 'postgres', variables: Record<string, string> = {}) => {
    const args = ['-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-d', database];
    for (const [name, value] of Object.entries(variables)) args.push('-v', `${name}=${value}`);
    const { stdout } = await run(path.join(BIN_DIR, 'psql'), args, {
      env: { ...libpqFreeEnv(), ...env() },
      input: sql,
    });
    return stdout;
  };
  const createDatabase = async (name: string) => {
    await psql(`create database ${quoteIdentifier(name)}`);
  };
  return {
    host: dir,
    get port() {
      return currentPort;
    },
    dataDir,
    async restart(between) {
      await stopServer(dir, dataDir);
      await between?.();
      currentPort = await startServer(dir, dataDir, path.join(dir, 'server.log'), currentPort);
    },
    user: SUPERUSER,
    password,
    binDir: BIN_DIR,
    env,
    url(database, options = {}) {
      const host = options.tcp ? '127.0.0.1' : encodeURIComponent(dir);
      return `postgres://${SUPERUSER}@${host}:${currentPort}/${encodeURIComponent(database)}`;
    },
    psql: (sql, database) => psql(sql, database),
    createDatabase,
    async loadDataset(database, scale) {
      if (!(Number.isFinite(scale) && scale > 0))
        throw new Error(`dataset scale must be a positive number: ${scale}`);
      await access(DATASET).catch((error: unknown) => {
        throw new Error(`the benchmark dataset is missing: ${DATASET}`, { cause: error });
      });
      await createDatabase(database);
      await psql(`\\i ${quoteLiteral(DATASET)}`, database, { scale: String(scale) });
    },
    stop() {
      stopping ??= (async () => {
        try {
          await stopServer(dir, dataDir);
        } finally {
          forget();
          await rm(dir, { recursive: true, force: true });
        }
      })();
      return stopping;
    },
  };
}

async function initdb(
  dir: string,
  dataDir: string,
  password: string,
  options: ClusterOptions,
): Promise<void> {
  const pwfile = path.join(dir, 'pwfile');
  await writeFile(pwfile, `${password}\n`, { mode: 0o600 });
  try {
    await giveToServerUser(pwfile);
    await runServerTool(dir, 'initdb', [
      '-D',
      dataDir,
      '--auth-local=trust',
      '--auth-host=scram-sha-256',
      `--username=${SUPERUSER}`,
      `--pwfile=${pwfile}`,
      '-E',
      'UTF8',
      '--locale=C',
      '--no-sync',
      '--no-instructions',
      ...(options.dataChecksums ? ['--data-checksums'] : []),
    ]);
  } finally {
    await rm(pwfile, { force: true });
  }
  // Settings go into the configuration rather than `pg_ctl -o`, which passes them through a shell;
  // a later restart of the same data directory keeps them too.
  const settings = {
    ...FAST_SETTINGS,
    unix_socket_directories: quoteLiteral(dir),
    listen_addresses: `'127.0.0.1'`,
    ...options.settings,
  };
  const lines = Object.entries(settings).map(([name, value]) => `${name} = ${value}\n`);
  await appendFile(path.join(dataDir, 'postgresql.conf'), `\n# strongbox test cluster\n${lines.join('')}`);
}

/** Starts the server on a free port, trying again with another port when one was taken meanwhile. */
async function startServer(
  dir: string,
  dataDir: string,
  logFile: string,
  samePort?: number,
): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    const port = samePort ?? (await freePort());
    const logStart = await fileSize(logFile);
    try {
      await runServerTool(dir, 'pg_ctl', ['start', '-w', '-D', dataDir, '-l', logFile, '-o', `-p ${port}`]);
      return port;
    } catch (error) {
      const log = await logTail(logFile, logStart);
      if (log.includes('Address already in use') && attempt < START_ATTEMPTS && samePort === undefined)
        continue;
      throw new Error(`PostgreSQL did not start on port ${port}; server log ends with:\n${log}`, {
        cause: error,
      });
    }
  }
}

async function stopServer(dir: string, dataDir: string): Promise<void> {
  try {
    await runServerTool(dir, 'pg_ctl', ['stop', '-w', '-D', dataDir, '-m', 'fast']);
  } catch (error) {
    // Not running (never started, or a test killed it) is what we wanted; anything else gets one
    // more, immediate, try.
    const alive = await runServerTool(dir, 'pg_ctl', ['status', '-D', dataDir]).then(
      () => true,
      () => false,
    );
    if (!alive) return;
    await runServerTool(dir, 'pg_ctl', ['stop', '-w', '-D', dataDir, '-m', 'immediate']).catch(() => {
      throw error;
    });
  }
}

function runServerTool(dir: string, tool: string, args: string[]) {
  const [command, commandArgs] = serverCommand(path.join(BIN_DIR, tool), args);
  // The server user cannot necessarily enter our working directory.
  return run(command, commandArgs, { cwd: dir, env: libpqFreeEnv() });
}

function serverCommand(command: string, args: string[]): [string, string[]] {
  return asRoot ? ['runuser', ['-u', SUPERUSER, '--', command, ...args]] : [command, args];
}

let serverUserIds: { uid: number; gid: number } | undefined;

async function giveToServerUser(file: string): Promise<void> {
  if (!asRoot) return;
  serverUserIds ??= {
    uid: Number(execFileSync('id', ['-u', SUPERUSER], { encoding: 'utf8' })),
    gid: Number(execFileSync('id', ['-g', SUPERUSER], { encoding: 'utf8' })),
  };
  await chown(file, serverUserIds.uid, serverUserIds.gid);
}

/** The environment without inherited PG* variables, which would point tools at another server. */
function libpqFreeEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && !name.startsWith('PG')) env[name] = value;
  }
  return env;
}

async function fileSize(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw error;
  }
}

async function logTail(logFile: string, from: number): Promise<string> {
  const size = await fileSize(logFile);
  const start = Math.max(from, size - LOG_TAIL_BYTES);
  if (size <= start) return '(the server log is empty)';
  const handle = await open(logFile, 'r');
  try {
    const buffer = Buffer.alloc(size - start);
    await handle.read(buffer, 0, buffer.length, start);
    return buffer.toString('utf8');
  } finally {
    await handle.close();
  }
}

function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

function quoteLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

interface RunOptions {
  env: Record<string, string>;
  cwd?: string;
  input?: string;
}

function run(
  command: string,
  args: string[],
  options: RunOptions,
): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd,
      env: options.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (data: string) => (stdout += data));
    child.stderr.setEncoding('utf8').on('data', (data: string) => (stderr += data));
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) return resolve({ stdout, stderr });
      const status = signal ? `signal ${signal}` : `exit code ${code}`;
      const output = (stderr || stdout).trim();
      reject(new Error(`${path.basename(command)} ${args.join(' ')} failed with ${status}\n${output}`));
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

/** A postgres:/// URL for `database` on the test cluster, through its socket directory. */
export function socketUrl(cluster: TestCluster, database: string): string {
  return `postgres:///${database}?host=${encodeURIComponent(cluster.host)}&port=${cluster.port}&user=${cluster.user}`;
}
