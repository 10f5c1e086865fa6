import type { BackupSource } from '../sources/source.ts';
import { resolveConnection } from './connection.ts';
import { clusterSource } from './logical/cluster.ts';
import { logicalSource } from './logical/logical.ts';
import { findTools } from './tools.ts';

export interface PostgresBackupOptions {
  /** postgres://user@host:port/database; else libpq's and the DB_* environment variables. */
  url?: string;
  /** The database password, given to the PostgreSQL programs as PGPASSWORD, never as an argument. */
  password?: string;
  /** Directory of pg_dump and psql; else the newest found on PATH or in /usr/lib/postgresql. */
  pgBin?: string;
  schemaOnly?: boolean;
  tables?: string[];
  excludeTables?: string[];
  /** Every database of the cluster, and its roles and tablespaces, as one snapshot. */
  all?: boolean;
  /**
   * Start pg_dump at once, while the caller opens the repository, instead of when the backup
   * runs (one database only). Call the source's abandon() if it is not run after all.
   */
  startNow?: boolean;
}

/** A logical backup source for one database, its connection resolved and its pg_dump checked against the server. */
export async function postgresSource(options: PostgresBackupOptions = {}): Promise<BackupSource> {
  // For a whole cluster the URL names the server; any database (by default `postgres`) reaches it.
  const connection = resolveConnection(
    options.url,
    options.all ? { PGDATABASE: 'postgres', ...process.env } : process.env,
    options.password,
  );
  const tools = await findTools(connection, options.pgBin);
  if (options.all) {
    return clusterSource(connection, tools, {
      ...(options.schemaOnly ? { schemaOnly: true } : {}),
      ...(options.excludeTables ? { excludeTables: options.excludeTables } : {}),
    });
  }
  return logicalSource({
    connection,
    tools,
    ...(options.schemaOnly ? { schemaOnly: true } : {}),
    ...(options.tables ? { tables: options.tables } : {}),
    ...(options.excludeTables ? { excludeTables: options.excludeTables } : {}),
    ...(options.startNow ? { startNow: true } : {}),
  });
}
