import { execFileSync } from 'node:child_process';
import { chown, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run, type CommandSpec } from './process.ts';
import { freePort } from '../test/helpers/free-port.ts';

export const PG_BIN = '/usr/lib/postgresql/15/bin';

/** Settings only for loading the dataset: a build that is interrupted is thrown away, so crash safety buys nothing. */
export const LOADING_SETTINGS = [
  'fsync=off',
  'synchronous_commit=off',
  'full_page_writes=off',
  'maintenance_work_mem=512MB',
];

/** psql as a script runner: no ~/.psqlrc, no chatter, stop at the first error. */
const PSQL_SCRIPT = ['-X', '-q', '-v', 'ON_ERROR_STOP=1'];

const runningAsRoot = process.getuid?.() === 0;

/** PostgreSQL refuses to run as root, so the server programs run as the postgres user then. */
function asServerUser(program: string, args: string[]): CommandSpec {
  const command = path.join(PG_BIN, program);
  return runningAsRoot
    ? { command: 'runuser', args: ['-u', 'postgres', '--', command, ...args] }
    : { command, args };
}

/** A directory the server user may write to. */
export async function serverOwnedDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  if (!runningAsRoot) return;
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }).trim());
  await chown(dir, id('-u'), id('-g'));
}

export async function initCluster(dataDir: string): Promise<void> {
  await serverOwnedDir(dataDir);
  await run(
    asServerUser('initdb', ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C']),
  );
}

/** A server left running by a harness that was killed would keep the next one from starting. */
async function stopLeftover(dataDir: string): Promise<void> {
  const running = await run(asServerUser('pg_ctl', ['-D', dataDir, 'status'])).then(
    () => true,
    () => false,
  );
  if (running) await run(asServerUser('pg_ctl', ['-D', dataDir, '-m', 'fast', '-w', 'stop']));
}

/** A running server on a Unix socket only, in a temp directory of its own. */
export class Cluster {
  private constructor(
    readonly dataDir: string,
    private readonly socketDir: string,
    private readonly port: number,
  ) {}

  static async start(dataDir: string, settings: string[] = []): Promise<Cluster> {
    const socketDir = await mkdtemp(path.join(os.tmpdir(), 'strongbox-bench-pg-'));
    await serverOwnedDir(socketDir);
    const port = await freePort();
    const options = [`-c listen_addresses=''`, `-c unix_socket_directories='${socketDir}'`, `-p ${port}`]
      .concat(settings.map((setting) => `-c ${setting}`))
      .join(' ');
    const log = path.join(socketDir, 'server.log');
    await stopLeftover(dataDir);
    try {
      await run(asServerUser('pg_ctl', ['-D', dataDir, '-l', log, '-o', options, '-w', 'start']));
    } catch (error) {
      const serverLog = await readFile(log, 'utf8').catch(() => '');
      await rm(socketDir, { recursive: true, force: true });
      throw new Error(`PostgreSQL did not start in ${dataDir}\n${serverLog.slice(-2000)}`, { cause: error });
    }
    return new Cluster(dataDir, socketDir, port);
  }

  /** Connection arguments for the client programs, which run as whoever runs the harness. */
  private connection(): string[] {
    return ['-h', this.socketDir, '-p', String(this.port), '-U', 'postgres'];
  }

  /** A client program of PG_BIN, connecting to this cluster. */
  program(name: string, args: string[]): CommandSpec {
    return { command: path.join(PG_BIN, name), args: [...this.connection(), ...args] };
  }

  client(program: 'psql' | 'pg_dump' | 'pg_restore', database: string, args: string[]): CommandSpec {
    return this.program(program, ['-d', database, ...args]);
  }

  /** The same connection as libpq variables, for programs that take no connection arguments. */
  env(database: string): Record<string, string> {
    return { PGHOST: this.socketDir, PGPORT: String(this.port), PGUSER: 'postgres', PGDATABASE: database };
  }

  async createDatabase(name: string): Promise<void> {
    await run(this.program('createdb', [name]));
  }

  async dropDatabaseIfExists(name: string): Promise<void> {
    await run(this.program('dropdb', ['--if-exists', name]));
  }

  async sql(database: string, statement: string): Promise<void> {
    await run(this.client('psql', database, [...PSQL_SCRIPT, '-c', statement]));
  }

  async psqlFile(database: string, file: string, variables: Record<string, string>): Promise<void> {
    const sets = Object.entries(variables).flatMap(([name, value]) => ['-v', `${name}=${value}`]);
    await run(this.client('psql', database, [...PSQL_SCRIPT, ...sets, '-f', file]), {
      discardStdout: true,
    });
  }

  async stop(): Promise<void> {
    try {
      await run(asServerUser('pg_ctl', ['-D', this.dataDir, '-m', 'fast', '-w', 'stop']));
    } finally {
      await rm(this.socketDir, { recursive: true, force: true });
    }
  }
}

/** Runs `action` with the cluster in `dataDir` started, and always stops it. */
export async function withCluster<T>(
  dataDir: string,
  settings: string[],
  action: (cluster: Cluster) => Promise<T>,
): Promise<T> {
  const cluster = await Cluster.start(dataDir, settings);
  try {
    return await action(cluster);
  } finally {
    await cluster.stop();
  }
}
