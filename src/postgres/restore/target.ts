import { spawn } from 'node:child_process';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { SourceError, StrongboxError } from '../../errors.ts';
import { stopOnInterrupt } from '../../util/interrupt.ts';
import { withDatabase, type PostgresConnection } from '../connection.ts';
import { createDatabaseAs, creationRefused, type DatabaseCreation } from '../database-properties.ts';
import * as queries from '../queries.ts';
import { RESTORE_LOCK_CLASS, SCRATCH_PREFIX } from './restore-names.ts';
import {
  firstError,
  psql,
  QueryError,
  toolEnvironment,
  withLargeStdioBuffers,
  type PostgresTools,
  type ServerVersion,
} from '../tools.ts';

/** Kept of pg_restore's standard error, for the message when it fails. */
const STDERR_KEPT = 8192;

/** SQLSTATEs: a database of that name exists; a database has sessions (or prepared transactions). */
const DUPLICATE_DATABASE = '42P04';
const OBJECT_IN_USE = '55006';

/** Swaps tried while sessions keep slipping into the target before its lock is taken. */
const SWAP_ATTEMPTS = 5;

/** A database queries.restoreLeftovers found, as the server described it. */
export interface DatabaseFound {
  database: string;
  comment: string | null;
  allowsConnections: boolean;
  /** null when this user may not connect to it. */
  bytes: number | null;
  /** Whether a running restore holds its name. */
  held: boolean;
  sessions: number;
}

/** A server to restore into, reached through its maintenance database for CREATE, DROP and RENAME. */
export class RestoreTarget {
  private readonly admin: PostgresConnection;

  constructor(
    readonly connection: PostgresConnection,
    readonly tools: PostgresTools & { server: ServerVersion },
  ) {
    this.admin = { ...connection, env: { ...connection.env, PGDATABASE: 'postgres' }, database: 'postgres' };
  }

  async exists(database: string): Promise<boolean> {
    return (await psql(this.admin, this.tools.binDir, queries.databaseExists(database))).trim() !== '0';
  }

  /** Creates `database`, `as` a backed-up one was (database-properties.ts) when given. */
  async create(database: string, as?: DatabaseCreation): Promise<void> {
    try {
      await psql(this.admin, this.tools.binDir, createDatabaseAs(database, as));
    } catch (error) {
      throw creationRefused(error, as);
    }
  }

  /** Creates `database` as `create` does; false when that name is taken. */
  async createIfFree(database: string, as?: DatabaseCreation): Promise<boolean> {
    try {
      await psql(this.admin, this.tools.binDir, createDatabaseAs(database, as));
      return true;
    } catch (error) {
      if (error instanceof QueryError && error.sqlState === DUPLICATE_DATABASE) return false;
      throw creationRefused(error, as);
    }
  }

  /** Runs SQL in the maintenance database; returns psql's unaligned output. */
  run(sql: string): Promise<string> {
    return psql(this.admin, this.tools.binDir, sql);
  }

  /** Drops `database` if it exists; `force` first ends its sessions, where the server can (13+). */
  async drop(database: string, force = false): Promise<void> {
    await psql(
      this.admin,
      this.tools.binDir,
      queries.dropDatabase(database, force && this.tools.server.major >= 13),
    );
  }

  async comment(database: string, comment: string | null): Promise<void> {
    await psql(this.admin, this.tools.binDir, queries.commentOnDatabase(database, comment));
  }

  /**
   * Swaps `scratch` in for `target` in one transaction (queries.swapDatabases), the old one
   * renamed to `keptAs`. Returns false, with nothing changed, when `keptAs` is taken; retries
   * while sessions that slipped in keep the target busy, up to a few times.
   */
  swap(swap: {
    target: string;
    scratch: string;
    keptAs: string;
    keptMark?: string;
    comment?: string | null;
  }): Promise<boolean> {
    return this.rename(queries.swapDatabases(swap));
  }

  /**
   * Renames the verified scratch database to `target` (queries.moveIntoPlace: one transaction).
   * Returns false, with nothing changed, when `target` was created meanwhile by someone else.
   */
  moveIntoPlace(move: { scratch: string; target: string; comment?: string | null }): Promise<boolean> {
    return this.rename(queries.moveIntoPlace(move));
  }

  /**
   * Runs a transaction of renames: false, with nothing changed, when a new name is taken; run
   * again while sessions that slipped in keep a database busy, up to a few times.
   */
  private async rename(transaction: string): Promise<boolean> {
    for (let attempt = 1; ; attempt++) {
      try {
        await psql(this.admin, this.tools.binDir, transaction);
        return true;
      } catch (error) {
        if (error instanceof QueryError && error.sqlState === DUPLICATE_DATABASE) return false;
        if (!(error instanceof QueryError && error.sqlState === OBJECT_IN_USE) || attempt >= SWAP_ATTEMPTS)
          throw error;
      }
    }
  }

  /**
   * Holds strongbox's advisory lock on `name` (restore-names.ts) in a session of its own, until
   * the returned release is called or this process dies: the mark of a running restore, which a
   * cleanup leaves alone. Returns undefined when another session holds it.
   */
  async claim(name: string): Promise<(() => Promise<void>) | undefined> {
    const child = spawn(
      path.join(this.tools.binDir, 'psql'),
      ['-X', '-w', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1'],
      {
        env: toolEnvironment({ ...this.admin.env, PGAPPNAME: 'strongbox restore' }),
        stdio: ['pipe', 'pipe', 'pipe'],
      },
    );
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
    const exited = new Promise<number | null>((resolve) => {
      child.once('error', () => resolve(null));
      child.once('close', resolve);
    });
    const answered = new Promise<string | undefined>((resolve) => {
      child.stdout.on('data', (data: Buffer) => {
        stdout += data.toString();
        if (stdout.includes('\n')) resolve(stdout.trim());
      });
      void exited.then(() => resolve(undefined));
    });
    child.stdin.on('error', () => undefined);
    child.stdin.write(`${queries.claimName(RESTORE_LOCK_CLASS, name)};\n`);
    const answer = await answered;
    const release = async () => {
      child.stdin.end();
      await exited;
    };
    if (answer === 't') return release;
    await release();
    if (answer === 'f') return undefined;
    throw new SourceError(
      `cannot query ${this.admin.display}: ${firstError(stderr, 'psql') ?? 'psql failed'}`,
      {
        hint: 'Check the connection settings (URL, PGHOST/PGUSER/PGPASSWORD, ~/.pgpass) and that the server is up.',
      },
    );
  }

  /** The databases restores may have left on this server: queries.restoreLeftovers. */
  async leftovers(): Promise<DatabaseFound[]> {
    return JSON.parse(
      await psql(this.admin, this.tools.binDir, queries.restoreLeftovers(SCRATCH_PREFIX, RESTORE_LOCK_CLASS)),
    ) as DatabaseFound[];
  }

  /** Whether `database` holds no table of its own (a fresh `postgres` database). */
  async isEmpty(database: string): Promise<boolean> {
    return (
      (
        await psql(withDatabase(this.connection, database), this.tools.binDir, queries.USER_TABLE_COUNT)
      ).trim() === '0'
    );
  }

  /**
   * Runs a SQL script (pg_dumpall's globals) with psql. Errors that say an object already exists
   * (SQLSTATE 42710: the roles a fresh cluster has, such as its superuser) are expected; any
   * other fails the restore.
   */
  async runScript(script: AsyncIterable<Uint8Array>): Promise<{ existing: number }> {
    const child = spawn(
      path.join(this.tools.binDir, 'psql'),
      ['-X', '-w', '-q', '-v', 'VERBOSITY=verbose', '-f', '-'],
      {
        env: toolEnvironment(this.admin.env),
        stdio: ['pipe', 'ignore', 'pipe'],
      },
    );
    stopOnInterrupt(child);
    let stderr = '';
    child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
    const exited = new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code) => resolve(code));
    });
    const fed = pipeline(Readable.from(script), child.stdin).catch((error: unknown) => error);
    const [code, feedError] = await Promise.all([exited, fed]);
    if (feedError instanceof StrongboxError) throw feedError;
    const errors = [...stderr.matchAll(/ERROR:\s+([0-9A-Z]{5}):\s*(.*)/g)];
    const unexpected = errors.filter((match) => match[1] !== '42710');
    if (code !== 0 || unexpected.length > 0) {
      throw new SourceError(
        `restoring roles and tablespaces failed: ${unexpected[0]?.[2] ?? firstError(stderr, 'psql') ?? `psql exit ${code}`}`,
        {
          hint: 'No database was restored; fix the cause and run the restore again.',
        },
      );
    }
    if (feedError) throw feedError;
    return { existing: errors.length };
  }

  /** Streams a custom-format archive into pg_restore for `database`; `signal` stops it. */
  async restore(
    database: string,
    archive: AsyncIterable<Uint8Array>,
    args: string[],
    signal?: AbortSignal,
  ): Promise<void> {
    // As a conninfo string, so that a database name with '=' in it is still just a name.
    const dbname = `dbname='${database.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
    const command = withLargeStdioBuffers(path.join(this.tools.binDir, 'pg_restore'), [
      '--exit-on-error',
      '--no-password',
      `--dbname=${dbname}`,
      ...args,
    ]);
    const child = spawn(command.command, command.args, {
      env: toolEnvironment({ ...this.connection.env, PGDATABASE: database }),
      stdio: ['pipe', 'ignore', 'pipe'],
      ...(signal ? { signal } : {}),
    });
    stopOnInterrupt(child);
    let stderr = '';
    child.stderr.on('data', (data: Buffer) => (stderr = (stderr + data.toString()).slice(-STDERR_KEPT)));
    const exited = new Promise<number | null>((resolve, reject) => {
      // An abort is reported by whoever aborted; here it only ends the process.
      child.once('error', (error) => (signal?.aborted ? undefined : reject(error)));
      child.once('close', (code) => resolve(code));
    });
    // pg_restore may stop reading early when it fails: its exit status tells why, not the EPIPE.
    const fed = pipeline(Readable.from(archive), child.stdin).catch((error: unknown) => error);
    const [code, feedError] = await Promise.all([exited, fed]);
    signal?.throwIfAborted();
    // When reading the archive failed (a damaged blob), pg_restore only saw its input end early.
    if (feedError instanceof StrongboxError) throw feedError;
    if (code !== 0) {
      throw new SourceError(
        `pg_restore into ${database} failed: ${firstError(stderr, 'pg_restore') ?? `exit ${code}`}`,
        {
          hint: 'Fix the cause and restore again.',
        },
      );
    }
    if (feedError) throw feedError;
  }
}
