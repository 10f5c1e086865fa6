import type { TreeNode } from '../../repository/tree.ts';
import {
  previousContent,
  type BackupSource,
  type ContentSink,
  type SourceResult,
} from '../../sources/source.ts';
import { storeProduced } from '../../sources/stdin.ts';
import { withDatabase, type PostgresConnection } from '../connection.ts';
import { openDump, spawnTool, type DumpOptions, type PostgresSnapshotDetails } from './logical.ts';
import { LIST_DATABASES } from '../queries.ts';
import { psql, type PostgresTools, type ServerVersion } from '../tools.ts';

export const CLUSTER_KIND = 'postgres-cluster';
export const GLOBALS_FILE = 'globals.sql';

/** What a cluster backup records (the snapshot body's `source`). */
export type PostgresClusterDetails = {
  cluster: string;
  serverVersion: number;
  pgDumpMajor: number;
  /** The file of the roles and tablespaces (pg_dumpall --globals-only). */
  globals: string;
  /** Each database's archive file and what its backup recorded. */
  databases: Record<string, { file: string } & PostgresSnapshotDetails>;
};

/** A file name for a database's archive: any database name, even one with "/" in it, gives a valid one. */
export function archiveFileName(database: string): string {
  return `${encodeURIComponent(database)}.dump`;
}

/**
 * Every database of a cluster, each as its own pg_dump archive with its own fingerprints, and
 * the cluster's roles and tablespaces (pg_dumpall --globals-only), as one snapshot.
 */
export function clusterSource(
  connection: PostgresConnection,
  tools: PostgresTools & { server: ServerVersion },
  options: DumpOptions = {},
): BackupSource {
  const cluster = connection.display.replace(/\/[^/]*$/, '');
  return {
    kind: CLUSTER_KIND,
    name: cluster,
    async run(sink: ContentSink, parent): Promise<SourceResult> {
      const databases = (await psql(connection, tools.binDir, LIST_DATABASES)).split('\n').filter(Boolean);
      const globals = await storeProduced(
        sink,
        spawnTool(tools, 'pg_dumpall', ['--globals-only', '--no-password'], connection),
        GLOBALS_FILE,
      );
      const nodes: TreeNode[] = [globals];
      const details: PostgresClusterDetails = {
        cluster,
        serverVersion: tools.server.number,
        pgDumpMajor: tools.major,
        globals: GLOBALS_FILE,
        // Without a prototype, a database named __proto__ is recorded like any other.
        databases: Object.create(null) as PostgresClusterDetails['databases'],
      };
      for (const database of databases) {
        const file = archiveFileName(database);
        // Read before pg_dump starts: a failure to read it must not leave a dump running unread.
        const previous = await previousContent(parent, file);
        const dump = await openDump(withDatabase(connection, database), tools, options);
        nodes.push(await storeProduced(sink, dump.producer, file, previous));
        details.databases[database] = { file, ...dump.details() };
      }
      const size = nodes.reduce((sum, node) => sum + (node.size ?? 0), 0);
      return {
        tree: await sink.storeTree({ nodes }),
        size,
        paths: nodes.map((node) => node.name),
        summary: { databases: databases.length, files: nodes.length, bytes: size },
        details,
      };
    },
  };
}
