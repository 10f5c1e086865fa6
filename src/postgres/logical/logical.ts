import path from 'node:path';
import { SourceError } from '../../errors.ts';
import { isFileName } from '../../repository/schemas.ts';
import { awaitedLater } from '../../util/awaited-later.ts';
import type { BackupSource } from '../../sources/source.ts';
import { processProducer } from '../../sources/process-producer.ts';
import { streamSource, type StreamProducer } from '../../sources/stdin.ts';
import type { PostgresConnection } from '../connection.ts';
import { DATABASE_PROPERTIES, type DatabaseProperties } from '../database-properties.ts';
import { parseServerProperties, requireReadableDetails } from '../record-schema.ts';
import { DumpFollower, type ArchiveBlocks } from './dump-follower.ts';
import {
  readLargeObjectMetadata,
  recordLargeObjects,
  type CatalogLargeObjects,
  type RecordedLargeObjects,
} from './large-objects.ts';
import { CATALOG_FINGERPRINT, EXPORT_SNAPSHOT } from '../queries.ts';
import { PsqlSession } from '../session.ts';
import {
  firstError,
  toolEnvironment,
  withLargeStdioBuffers,
  type PostgresTools,
  type ServerVersion,
} from '../tools.ts';
import type { CatalogFingerprint, RecordedTable } from '../verify/verify.ts';
import { fingerprintViews, readSchema, type SchemaFingerprint } from './schema-fingerprint.ts';

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
  /** Every schema object's definition and materialized view's rows, in that snapshot; whole-database dumps only. */
  schema?: SchemaFingerprint;
  /** Where each data block lies in the archive, for a parallel restore. */
  blocks?: ArchiveBlocks;
  /** The large objects the archive carries (large-objects.ts); absent when pg_dump left them out. */
  largeObjects?: RecordedLargeObjects;
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
      fileName: databaseArchiveName(connection.database),
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
 * The archive's file name in a snapshot of one database: the database's own, but URL-encoded
 * (as a cluster snapshot's are) when the name could not be a file's, as "a/b" could not.
 */
function databaseArchiveName(database: string): string {
  const plain = `${database}.dump`;
  return isFileName(plain) ? plain : `${encodeURIComponent(database)}.dump`;
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
  // A dump of some tables holds only those: the rest of the schema would be missed by design.
  const wholeDatabase = !options.tables?.length && !options.excludeTables?.length;
  let schema: Awaited<ReturnType<typeof readSchema>> | undefined;
  let largeObjects: CatalogLargeObjects;
  let databaseProperties: DatabaseProperties;
  try {
    let exported = '';
    for (const sql of EXPORT_SNAPSHOT) exported = await session.query(sql);
    snapshot = exported.trim();
    catalog = JSON.parse(await session.query(CATALOG_FINGERPRINT)) as CatalogFingerprint;
    if (wholeDatabase) schema = await readSchema((sql) => session.query(sql));
    largeObjects = await readLargeObjectMetadata(session);
    databaseProperties = parseServerProperties(
      JSON.parse(await session.query(DATABASE_PROPERTIES)),
      connection.database,
    );
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
  // Read while pg_dump runs, in its snapshot; a schema-only dump restores them unpopulated.
  const views =
    schema && !options.schemaOnly
      ? fingerprintViews(connection, tools, snapshot, schema.populatedViews)
      : Promise.resolve(undefined);
  let materializedViews: SchemaFingerprint['materializedViews'] | undefined;
  const finished = (async () => {
    try {
      const [dumped, hashed] = await Promise.allSettled([dump.finished, views]);
      if (dumped.status === 'rejected') throw dumped.reason;
      if (hashed.status === 'rejected') throw hashed.reason;
      materializedViews = hashed.value;
    } finally {
      // The session holds the snapshot until pg_dump and the views are done with it.
      await session.close();
    }
  })();
  return {
    producer: {
      ...dump,
      content: follower.follow(dump.content),
      finished: awaitedLater(finished),
    },
    details: () => {
      const details: PostgresSnapshotDetails = {
        database: connection.database,
        connection: connection.display,
        serverVersion: tools.server.number,
        pgDumpMajor: tools.major,
        format: 'custom',
        archiveVersion: follower.header?.archiveVersion ?? '',
        tables: follower.tables,
        catalog,
        ...(schema
          ? {
              schema: {
                version: 1,
                objects: schema.objects,
                data: !options.schemaOnly,
                materializedViews: materializedViews ?? {},
              },
            }
          : {}),
        blocks: follower.blocks,
        largeObjects: recordLargeObjects(largeObjects, follower.largeObjects),
        databaseProperties,
      };
      requireReadableDetails(details, connection.database);
      return details;
    },
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
    env: toolEnvironment({ ...connection.env, PGTZ: 'UTC' }),
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
