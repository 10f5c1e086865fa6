import { spawn } from 'node:child_process';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { SourceError, StrongboxError } from '../../errors.ts';
import { stopOnInterrupt } from '../../util/interrupt.ts';
import { withDatabase, type PostgresConnection } from './connection.ts';
import * as queries from './queries.ts';
import { firstError, psql, withLargeStdioBuffers, type PostgresTools } from './tools.ts';

/** Kept of pg_restore's standard error, for the message when it fails. */
const STDERR_KEPT = 8192;

/** A server to restore into, reached through its maintenance database for CREATE, DROP and RENAME. */
export class RestoreTarget {
  private readonly admin: PostgresConnection;

  constructor(
    readonly connection: PostgresConnection,
    readonly tools: PostgresTools,
  ) {
    this.admin = { ...connection, env: { ...connection.env, PGDATABASE: 'postgres' }, database: 'postgres' };
  }

  async exists(database: string): Promise<boolean> {
    return (await psql(this.admin, this.tools.binDir, queries.databaseExists(database))).trim() !== '0';
  }

  async create(database: string): Promise<void> {
    await psql(this.admin, this.tools.binDir, queries.createDatabase(database));
  }

  async drop(database: string): Promise<void> {
    await psql(this.admin, this.tools.binDir, queries.dropDatabase(database));
  }

  /** Renames `from` to `to`, ending the sessions connected to `from` first. */
  async rename(from: string, to: string): Promise<void> {
    for (const sql of queries.closeDatabase(from)) await psql(this.admin, this.tools.binDir, sql);
    try {
      await psql(this.admin, this.tools.binDir, queries.renameDatabase(from, to));
    } finally {
      await psql(this.admin, this.tools.binDir, queries.openDatabase((await this.exists(to)) ? to : from));
    }
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
        env: { ...process.env, ...this.admin.env },
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
      env: { ...process.env, ...this.connection.env, PGDATABASE: database },
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
