import type { BackupSource } from '../sources/source.ts';
import { ConflictingOptionsError } from '../errors.ts';
import { resolveConnection } from './connection.ts';
import { clusterSource } from './logical/cluster.ts';
import { logicalSource } from './logical/logical.ts';
import { physicalSource, type PhysicalMethod } from './physical/physical.ts';
import { findBasebackup, findTools } from './tools.ts';

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
  /** The whole cluster's files (physical/), instead of pg_dump. */
  physical?: boolean;
  /** With `physical`: the WAL the backup needs, fetched into it, so that it restores without an archive. */
  includeWal?: boolean;
  /** With `physical`: how the files are read (physical.ts); by default the files when they can be. */
  method?: PhysicalMethod | 'auto';
}

/**
 * A logical backup source for one database (or the cluster, `all`), its connection resolved and
 * its pg_dump checked against the server; or, `physical`, the cluster's files through pg_basebackup.
 */
export async function postgresSource(options: PostgresBackupOptions = {}): Promise<BackupSource> {
  // For a whole cluster the URL names the server; any database (by default `postgres`) reaches it.
  const connection = resolveConnection(
    options.url,
    options.all || options.physical ? { PGDATABASE: 'postgres', ...process.env } : process.env,
    options.password,
  );
  refuseConflicts(options);
  const tools = await findTools(connection, options.pgBin);
  if (options.physical) {
    return physicalSource({
      connection,
      binDir: tools.binDir,
      findPgBasebackup: () => findBasebackup(tools.server, tools, options.pgBin),
      server: tools.server,
      ...(options.includeWal ? { includeWal: true } : {}),
      ...(options.method ? { method: options.method } : {}),
    });
  }
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

/** A physical backup copies the whole cluster: options that choose what pg_dump dumps do not apply. */
function refuseConflicts(options: PostgresBackupOptions): void {
  if (options.includeWal && !options.physical)
    throw new ConflictingOptionsError('including WAL applies to a physical backup only', ['includeWal']);
  if (options.method && !options.physical)
    throw new ConflictingOptionsError('how the files are read applies to a physical backup only', ['method']);
  if (!options.physical) return;
  const logical = (
    [
      ['all', options.all],
      ['schemaOnly', options.schemaOnly],
      ['table', options.tables?.length],
      ['excludeTable', options.excludeTables?.length],
    ] as const
  )
    .filter(([, given]) => given)
    .map(([option]) => option);
  if (logical.length > 0)
    throw new ConflictingOptionsError(
      'a physical backup copies the whole cluster: it takes no choice of what to dump',
      ['physical', ...logical],
    );
}
