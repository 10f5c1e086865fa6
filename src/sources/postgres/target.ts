import { spawn } from 'node:child_process';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { SourceError } from '../../errors.ts';
import type { PostgresConnection } from './connection.ts';
import * as queries from './queries.ts';
import { firstError, psql, type PostgresTools } from './tools.ts';

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

  /** Streams a custom-format archive into pg_restore for `database`. */
  async restore(database: string, archive: AsyncIterable<Uint8Array>, args: string[]): Promise<void> {
    // As a conninfo string, so that a database name with '=' in it is still just a name.
    const dbname = `dbname='${database.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`;
    const child = spawn(
      path.join(this.tools.binDir, 'pg_restore'),
      ['--exit-on-error', `--dbname=${dbname}`, ...args],
      {
        env: { ...process.env, ...this.connection.env, PGDATABASE: database },
        stdio: ['pipe', 'ignore', 'pipe'],
      },
    );
    let stderr = '';
    child.stderr.on('data', (data: Buffer) => (stderr = (stderr + data.toString()).slice(-STDERR_KEPT)));
    const exited = new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code) => resolve(code));
    });
    // pg_restore may stop reading early when it fails: its exit status tells why, not the EPIPE.
    const fed = pipeline(Readable.from(archive), child.stdin).catch((error: unknown) => error);
    const [code, feedError] = await Promise.all([exited, fed]);
    if (code !== 0) {
      throw new SourceError(
        `pg_restore into ${database} failed: ${firstError(stderr, 'pg_restore') ?? `exit ${code}`}`,
        {
          hint: 'The partly restored database was dropped; fix the cause and restore again.',
        },
      );
    }
    if (feedError) throw feedError;
  }
}
