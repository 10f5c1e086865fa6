import { execFile, spawnSync } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { MissingDependencyError, MissingToolError, SourceError, type ErrorDetails } from '../errors.ts';
import { stopOnInterrupt } from '../util/interrupt.ts';
import type { PostgresConnection } from './connection.ts';
import { SERVER_VERSION } from './queries.ts';

const run = promisify(execFile);

/** A directory of PostgreSQL client programs (pg_dump, pg_restore, psql) and their major version. */
export interface PostgresTools {
  binDir: string;
  major: number;
}

/**
 * What of strongbox's own environment a PostgreSQL program gets: what it needs to run (its path,
 * locale, home for ~/.pgpass, a preloaded library) and nothing else, so that STRONGBOX_PASSWORD,
 * cloud credentials and the like never reach pg_dump, psql or pg_restore. Connection settings
 * (PG* variables, inherited ones included) come with the connection.
 */
const PASSED_TO_TOOLS =
  /^(PATH|HOME|USER|LOGNAME|LANG|LANGUAGE|LC_[A-Z]+|TZ|TMPDIR|LD_LIBRARY_PATH|LD_PRELOAD|FAKETIME\w*)$/;

export function toolEnvironment(connectionEnv: Record<string, string | undefined>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) {
    if (value !== undefined && PASSED_TO_TOOLS.test(name)) env[name] = value;
  }
  return { ...env, ...connectionEnv };
}

/** Where Debian and Ubuntu install each PostgreSQL version's programs. */
const DEBIAN_ROOT = '/usr/lib/postgresql';

/**
 * The newest PostgreSQL client programs, checked against the server: pg_dump refuses servers
 * newer than itself. Looks in `binDir` when given, else on PATH and in /usr/lib/postgresql/<version>/bin.
 */
export async function findTools(
  connection: PostgresConnection,
  binDir?: string,
): Promise<PostgresTools & { server: ServerVersion }> {
  const dirs = binDir ? [binDir] : await candidateDirs();
  const majors = await Promise.all(dirs.map((dir) => pgDumpMajor(dir)));
  const found = dirs
    .map((dir, i) => ({ binDir: dir, major: majors[i] }))
    .filter((tools): tools is PostgresTools => tools.major !== undefined);
  // Of one version, the programs themselves rather than Debian's /usr/bin wrappers, a Perl
  // script that picks a version and runs it: 50 ms more at every start.
  const newest = found.sort(
    (a, b) => b.major - a.major || isVersionedDir(b.binDir) - isVersionedDir(a.binDir),
  )[0];
  if (!newest) {
    throw new MissingToolError(`pg_dump was not found${binDir ? ` in ${binDir}` : ''}`, 'pg_dump');
  }
  const server = await serverVersion(connection, newest.binDir);
  if (newest.major < server.major) {
    throw new MissingToolError(
      `pg_dump ${server.major} or later is needed for this PostgreSQL ${server.major} server (the newest found is ${newest.major}, in ${newest.binDir})`,
      'pg_dump',
      server.major,
    );
  }
  return { ...newest, server };
}

export interface ServerVersion {
  /** server_version_num, e.g. 150019. */
  number: number;
  major: number;
}

const isVersionedDir = (dir: string): number => (dir.startsWith(DEBIAN_ROOT + path.sep) ? 1 : 0);

async function candidateDirs(): Promise<string[]> {
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
  const versions = await fs.readdir(DEBIAN_ROOT).catch(() => [] as string[]);
  for (const version of versions) dirs.push(path.join(DEBIAN_ROOT, version, 'bin'));
  return [...new Set(dirs)];
}

/**
 * pg_basebackup of the server's own major version: an older one refuses a newer server, and a
 * newer one writes archives of its own version's layout. Looks beside psql first (`tools`), then
 * where findTools looks, or only in `binDir` when given.
 */
export async function findBasebackup(
  server: ServerVersion,
  tools: PostgresTools,
  binDir?: string,
): Promise<{ program: string; major: number }> {
  const dirs = binDir ? [binDir] : [tools.binDir, ...(await candidateDirs())];
  for (const dir of [...new Set(dirs)].sort((a, b) => isVersionedDir(b) - isVersionedDir(a))) {
    if ((await programMajor(dir, 'pg_basebackup')) === server.major)
      return { program: path.join(dir, 'pg_basebackup'), major: server.major };
  }
  throw new MissingToolError(
    `pg_basebackup ${server.major} is needed for this PostgreSQL ${server.major} server, and was not found${binDir ? ` in ${binDir}` : ''}`,
    'pg_basebackup',
    server.major,
  );
}

function pgDumpMajor(dir: string): Promise<number | undefined> {
  return programMajor(dir, 'pg_dump');
}

async function programMajor(dir: string, name: string): Promise<number | undefined> {
  const program = path.join(dir, name);
  try {
    await fs.access(program, fs.constants.X_OK);
    const { stdout } = await run(program, ['--version'], { env: toolEnvironment({}) });
    const match = /\(PostgreSQL\)\s+(\d+)/.exec(stdout);
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** The server's version number (e.g. 150019) and major version, asked with psql. */
export async function serverVersion(connection: PostgresConnection, psqlDir: string): Promise<ServerVersion> {
  const output = await psql(connection, psqlDir, SERVER_VERSION);
  const number = Number(output.trim());
  if (!Number.isInteger(number))
    throw new SourceError(`cannot read the server version of ${connection.display}`);
  return { number, major: Math.floor(number / 10000) };
}

/** A statement the server refused; `sqlState` is PostgreSQL's error code, to branch on. */
export class QueryError extends SourceError {
  constructor(
    message: string,
    readonly sqlState: string | undefined,
    details: ErrorDetails,
  ) {
    super(message, details);
  }
}

/**
 * Runs SQL with psql and returns its unaligned output. Like every PostgreSQL program strongbox
 * runs, psql never prompts for a password (-w): a scheduled backup must fail with a message, not
 * wait for a keyboard. Errors are printed verbosely for their SQLSTATE, which QueryError carries.
 */
export async function psql(connection: PostgresConnection, binDir: string, sql: string): Promise<string> {
  try {
    const running = run(
      path.join(binDir, 'psql'),
      ['-X', '-w', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=verbose', '-c', sql],
      {
        env: toolEnvironment(connection.env),
        maxBuffer: 64 * 1024 * 1024,
      },
    );
    stopOnInterrupt(running.child);
    return (await running).stdout;
  } catch (cause) {
    const output = (cause as { stderr?: string }).stderr ?? '';
    if ((cause as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new MissingDependencyError(`psql is missing from ${binDir}`, {
        hint: 'Install the PostgreSQL client programs.',
        cause,
      });
    }
    const refused = /ERROR:\s+([0-9A-Z]{5}):\s*(.*)/.exec(output);
    throw new QueryError(
      `cannot query ${connection.display}: ${refused?.[2] ?? firstError(output, 'psql') ?? 'psql failed'}`,
      refused?.[1],
      {
        hint: 'Check the connection settings (URL, PGHOST/PGUSER/PGPASSWORD, ~/.pgpass) and that the server is up.',
        cause,
      },
    );
  }
}

/**
 * The first error line a PostgreSQL program printed, without its "program: error:" prefix, and
 * the server's own words when the next line gives them: pg_dump that loses its connection while
 * reading a table says only "PQgetCopyData() failed." on its error line.
 */
export function firstError(stderr: string, program: string): string | undefined {
  const lines = stderr
    .split('\n')
    .map((line) => line.trim())
    .filter(Boolean);
  const at = lines.findIndex((candidate) => candidate.includes('error:'));
  const line = (at >= 0 ? lines[at] : lines.at(-1))?.replace(new RegExp(`^${program}: (error: )?`), '');
  const server = /^\S+: detail: Error message from server: (.+)$/.exec(lines[at + 1] ?? '')?.[1];
  return at >= 0 && server ? `${line!.replace(/\.$/, '')}: ${server}` : line;
}

/**
 * stdbuf works by preloading a library of its own into the program; where that library is
 * missing it runs nothing and exits 125, so it is tried once before it is trusted.
 */
function stdbufWorks(program: string): boolean {
  return (
    spawnSync(program, ['--output=64K', 'true'], { stdio: 'ignore', timeout: 5000, env: toolEnvironment({}) })
      .status === 0
  );
}

/** Where GNU coreutils installs stdbuf. */
const STDBUF_PATHS = ['/usr/bin/stdbuf', '/bin/stdbuf'];
let stdbuf: string | null | undefined;

/**
 * The command that runs `program` with bigger stdio buffers: 1 MiB on its standard input, 64 KiB
 * on its standard output. pg_dump, psql and pg_restore read and write through stdio, whose buffer
 * on a pipe is 4 KiB: every 4 KiB written woke the reader, 130 000 times for a 900 MB dump, and
 * those wakeups cost strongbox and pg_dump more CPU than pg_dump's own work. Output buffers of
 * 64 KiB measured best: with 1 MiB ones, pg_dump stalled its server backend while each write
 * drained. stdbuf (GNU coreutils) sets the buffers and then runs the program itself, changing
 * none of its bytes; where there is no stdbuf the program runs as it is.
 */
export function withLargeStdioBuffers(program: string, args: string[]): { command: string; args: string[] } {
  stdbuf ??= STDBUF_PATHS.find((candidate) => existsSync(candidate) && stdbufWorks(candidate)) ?? null;
  if (!stdbuf) return { command: program, args };
  return { command: stdbuf, args: ['--input=1M', '--output=64K', program, ...args] };
}
