import { TargetExistsError } from '../../errors.ts';
import type { Repository, SnapshotFilter } from '../../repository/repository.ts';
import { CLUSTER_KIND, GLOBALS_FILE } from '../logical/cluster.ts';
import { resolveConnection, withDatabase } from '../connection.ts';
import { RestoreTarget } from './target.ts';
import { checksFor } from '../verify/checks.ts';
import { applyDatabaseProperties, creationFor, reusedAsIs } from '../database-properties.ts';
import { parseClusterSource } from '../record-schema.ts';
import { findTools } from '../tools.ts';
import { verifyDatabase, type DatabaseVerification } from '../verify/verify.ts';
import { catFile } from '../../ops/read-content.ts';
import { restoreArchive } from './restore-parallel.ts';

export interface ClusterRestoreOptions {
  /** postgres://user@host:port/ of the server to restore into; else the PG* and DB_* variables. */
  to?: string;
  /** The database password, given to the PostgreSQL programs as PGPASSWORD, never as an argument. */
  password?: string;
  pgBin?: string;
  noOwner?: boolean;
  /** pg_restore runs at once within each database. */
  jobs?: number;
  dryRun?: boolean;
  filter?: SnapshotFilter;
  onStep?: (message: string) => void;
  /** Called as each database's archive is handed to pg_restore: bytes so far, and its size. */
  onProgress?: (bytes: number, archiveBytes: number) => void;
}

export interface ClusterRestoreResult {
  snapshot: string;
  target: string;
  dryRun: boolean;
  databases: string[];
  steps: string[];
  verification: Record<string, DatabaseVerification>;
  /** What of the databases' own properties could not be reproduced here (a missing tablespace…). */
  notes: string[];
  durationMs: number;
}

/**
 * Rebuilds a cluster's logical content from a cluster snapshot: roles and tablespaces first,
 * then every database, each created, restored and verified. A database that already exists is
 * refused (a restore of it alone can replace it), except a `postgres` database that holds no
 * tables, as every new cluster has.
 */
export async function restorePostgresCluster(
  repository: Repository,
  reference: string,
  options: ClusterRestoreOptions = {},
): Promise<ClusterRestoreResult> {
  const started = Date.now();
  const step = options.onStep ?? (() => undefined);
  return repository.withReadLock('restore postgres cluster', async () => {
    const snapshot = await repository.findSnapshot(reference, { ...options.filter, kind: CLUSTER_KIND });
    const { body } = await repository.loadSnapshot(snapshot.id);
    const details = parseClusterSource(body.source, snapshot.id);
    const connection = resolveConnection(
      options.to,
      { PGDATABASE: 'postgres', ...process.env },
      options.password,
    );
    const target = new RestoreTarget(connection, await findTools(connection, options.pgBin));
    const databases = Object.keys(details.databases);
    const reuse = new Set<string>();
    for (const database of databases) {
      if (!(await target.exists(database))) continue;
      if (database === 'postgres' && (await target.isEmpty(database))) reuse.add(database);
      else throw new TargetExistsError(database, connection.display, 'replace-alone');
    }
    const steps = [
      `restore roles and tablespaces (${GLOBALS_FILE})`,
      ...databases.map(
        (database) =>
          `${reuse.has(database) ? 'restore into the empty' : 'create and restore'} database ${database}, then verify it`,
      ),
    ];
    const result = {
      snapshot: snapshot.id,
      target: connection.display,
      databases,
      steps,
      verification: {} as Record<string, DatabaseVerification>,
      notes: [] as string[],
    };
    if (options.dryRun) return { ...result, dryRun: true, durationMs: Date.now() - started };
    await repository.loadIndex();
    step(steps[0]!);
    await target.runScript(catFile(repository, snapshot.id, GLOBALS_FILE));
    for (const [i, database] of databases.entries()) {
      step(steps[i + 1]!);
      const recorded = details.databases[database]!;
      // Created as pg_dump --create would; a reused database keeps its encoding and locale.
      let properties = recorded.databaseProperties;
      if (reuse.has(database)) {
        const reused = await reusedAsIs(target, database, properties);
        properties = reused.recorded;
        result.notes.push(...reused.notes);
      } else {
        const creation = await creationFor(target, properties, database);
        result.notes.push(...creation.notes);
        await target.create(database, creation.creation);
      }
      const compared = await restoreArchive({
        repository,
        tree: body.tree,
        path: recorded.file,
        target,
        database,
        args: options.noOwner ? ['--no-owner'] : [],
        jobs: options.jobs ?? 1,
        blocks: recorded.blocks,
        tables: recorded.tables,
        onStep: step,
        onProgress: options.onProgress,
      });
      result.notes.push(
        ...(await applyDatabaseProperties(target, database, properties, {
          owners: !options.noOwner,
          comment: true,
          label: database,
        })),
      );
      result.verification[database] = await verifyDatabase(
        withDatabase(connection, database),
        target.tools,
        database,
        {
          tables: recorded.tables,
          catalog: recorded.catalog,
          expect: { sequences: true, objects: true },
          checks: checksFor(
            { ...recorded, databaseProperties: properties },
            {
              schema: true,
              largeObjects: true,
              database: true,
              owners: !options.noOwner,
              materializedViewRows: true,
            },
          ),
        },
        { snapshot: snapshot.id, hint: `${database} was left for inspection.` },
        compared,
      );
    }
    return { ...result, dryRun: false, durationMs: Date.now() - started };
  });
}
