import path from 'node:path';
import { SourceError } from '../../errors.ts';
import { awaitedLater } from '../../util/awaited-later.ts';
import type { BackupSource } from '../source.ts';
import { processProducer } from '../process-producer.ts';
import { streamSource, type StreamProducer } from '../stdin.ts';
import type { PostgresConnection } from './connection.ts';
import { DATABASE_PROPERTIES, type DatabaseProperties } from './database-properties.ts';
import { DumpFollower, type ArchiveBlocks } from './dump-follower.ts';
import { CATALOG_FINGERPRINT, EXPORT_SNAPSHOT } from './queries.ts';
import { PsqlSession } from './session.ts';
import { firstError, withLargeStdioBuffers, type PostgresTools, type ServerVersion } from './tools.ts';
import type { CatalogFingerprint, RecordedTable } from './verify.ts';

/** What a logical backup records of one database (the snapshot body's `source`). */
export type PostgresSnapshotDetails = {
  database: string;
  connection: string;
  serverVersion: number;
  pgDumpMajor: number;
  format: 'custom';
  archiveVersion: string;
  /** Every table's row count and fingerprint, from the dump itself. */
  tables: RecordedTable[];
  /** Sequences and object counts, read in the dump's own snapshot. */
  catalog?: CatalogFingerprint;
  /** Where each data block lies in the archive, for a parallel restore. */
  blocks?: ArchiveBlocks;
  /** The database's own properties (owner, ACL, settings, locale…), which its archive lacks. */
  databaseProperties?: DatabaseProperties;
};

export interface DumpOptions {
  schemaOnly?: boolean;
  tables?: string[];
  excludeTables?: string[];
}

export interface LogicalBackupOptions extends DumpOptions {
  connection: PostgresConnection;
  tools: PostgresTools & { server: ServerVersion };
  /**
   * Start pg_dump now rather than when the backup runs, so that it reads the catalog and the
   * server starts on the rows while the repository opens. A source started so and then not run
   * must be abandoned.
   */
  startNow?: boolean;
}

/**
 * One database as pg_dump's custom-format archive (-Fc -Z0: uncompressed, so deduplication and
 * our own compression see the data, and pg_restore can still restore selectively and in
 * parallel), streamed into the repository without a temporary file. The snapshot is written
 * only when pg_dump exits 0 and the archive is complete.
 */
export function logicalSource(options: LogicalBackupOptions): BackupSource {
  const { connection } = options;
  let opening: ReturnType<typeof openDump> | undefined;
  const start = () => {
    opening ??= openDump(connection, options.tools, options);
    return opening;
  };
  // run() or abandon() awaits it; until then it may fail unobserved.
  if (options.startNow) awaitedLater(start());
  let dump: Awaited<ReturnType<typeof openDump>> | undefined;
  let taken = false;
  const source = streamSource(
    {
      name: connection.database,
      fileName: `${connection.database}.dump`,
      kind: 'postgres',
      details: () => dump!.details(),
    },
    async () => {
      taken = true;
      return (dump = await start()).producer;
    },
  );
  return {
    ...source,
    abandon: async () => {
      if (taken || !opening) return;
      taken = true;
      const started = await opening.catch(() => undefined);
      if (!started) return;
      started.producer.stop();
      await started.producer.finished.catch(() => undefined);
    },
  };
}

/**
 * Starts pg_dump of one database, in a snapshot a psql session exports and reads the catalog in
 * (both describe the database at the same instant), its archive followed as it streams.
 */
export async function openDump(
  connection: PostgresConnection,
  tools: PostgresTools & { server: ServerVersion },
  options: DumpOptions,
): Promise<{ producer: StreamProducer; details: () => PostgresSnapshotDetails }> {
  const session = new PsqlSession(connection, tools.binDir);
  let snapshot: string;
  let catalog: CatalogFingerprint;
  let databaseProperties: DatabaseProperties;
  try {
    let exported = '';
    for (const sql of EXPORT_SNAPSHOT) exported = await session.query(sql);
    snapshot = exported.trim();
    catalog = JSON.parse(await session.query(CATALOG_FINGERPRINT)) as CatalogFingerprint;
    databaseProperties = JSON.parse(await session.query(DATABASE_PROPERTIES)) as DatabaseProperties;
  } catch (error) {
    await session.close();
    throw error;
  }
  const args = ['--format=custom', '--compress=0', '--no-password', `--snapshot=${snapshot}`];
  if (options.schemaOnly) args.push('--schema-only');
  for (const table of options.tables ?? []) args.push(`--table=${table}`);
  for (const table of options.excludeTables ?? []) args.push(`--exclude-table=${table}`);
  const follower = new DumpFollower();
  let dump;
  try {
    dump = spawnTool(tools, 'pg_dump', args, connection);
  } catch (error) {
    await session.close();
    throw error;
  }
  return {
    producer: {
      ...dump,
      content: follower.follow(dump.content),
      // The session holds the snapshot until pg_dump is done with it.
      finished: awaitedLater(dump.finished.finally(() => session.close())),
    },
    details: () => ({
      database: connection.database,
      connection: connection.display,
      serverVersion: tools.server.number,
      pgDumpMajor: tools.major,
      format: 'custom',
      archiveVersion: follower.header?.archiveVersion ?? '',
      tables: follower.tables,
      catalog,
      blocks: follower.blocks,
      databaseProperties,
    }),
  };
}

/** A PostgreSQL program's standard output as a stream producer; its failure is a SourceError (exit 4). */
export function spawnTool(
  tools: PostgresTools,
  program: string,
  args: string[],
  connection: PostgresConnection,
) {
  const command = withLargeStdioBuffers(path.join(tools.binDir, program), args);
  return processProducer(command.command, command.args, {
    // UTC, as the fingerprint check after a restore reads timestamptz values in (verify.ts).
    env: { ...process.env, ...connection.env, PGTZ: 'UTC' },
    captureStderr: true,
    failure: (reason, stderr) => {
      const detail = firstError(stderr, program);
      return new SourceError(
        `${program} of ${connection.display} ${reason.replace(/^exited with status/, 'failed, exit')}${detail ? `: ${detail}` : ''}; no snapshot was written`,
        {
          hint: 'Fix the cause and run the backup again.',
        },
      );
    },
  });
}
