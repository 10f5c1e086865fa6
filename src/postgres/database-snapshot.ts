import {
  ConfigError,
  DatabaseChoiceError,
  SnapshotFilterMismatchError,
  SnapshotKindError,
} from '../errors.ts';
import { shortName, type Repository, type SnapshotFilter } from '../repository/repository.ts';
import type { SnapshotInfo } from '../repository/snapshot.ts';
import { CLUSTER_KIND, type PostgresClusterDetails } from './logical/cluster.ts';
import type { PostgresSnapshotDetails } from './logical/logical.ts';
import { parseClusterSource, parsePostgresSource } from './record-schema.ts';
import { findFile } from '../ops/read-content.ts';

/** The kind of a snapshot of one database (backup postgres without --all). */
export const DATABASE_KIND = 'postgres';

/** One database's archive in a snapshot: a snapshot of that database, or one database of a cluster snapshot. */
export interface DatabaseSnapshot {
  snapshot: SnapshotInfo;
  /** The snapshot's root tree. */
  tree: string;
  /** The database as it was backed up. */
  database: string;
  /** What the backup recorded of it (fingerprints, archive layout). */
  details: PostgresSnapshotDetails | undefined;
  /** The archive's path in the tree; none for a snapshot of one database, whose tree holds the archive alone. */
  path: string | undefined;
}

/**
 * Finds the archive of one database, in snapshots of one database (kind postgres) and in cluster
 * snapshots (kind postgres-cluster, which hold several). `filter.name` names the database, in
 * either kind; `filter.kind` may narrow the search to one of them.
 *
 * An id of a cluster snapshot takes the database filter.name names, else `target`'s namesake when
 * the cluster holds it. `latest` takes the newest snapshot holding the database; a snapshot of
 * one database wins over a cluster snapshot taken at the same time. Without filter.name, the
 * database is `target`'s namesake when a snapshot holds it, else the one database that snapshots
 * of one database are of (several: a ConfigError); without a target (dump), `latest` is the
 * newest snapshot of one database, whichever it is, as before cluster snapshots could be used.
 */
export async function findDatabaseSnapshot(
  repository: Repository,
  reference: string,
  filter: SnapshotFilter = {},
  target?: string,
): Promise<DatabaseSnapshot> {
  if (reference !== 'latest') return byId(repository, reference, filter, target);
  const { name, kind, ...rest } = filter;
  const { snapshots, damaged } = await repository.scanSnapshots(rest);
  const wanted = (candidate: string) =>
    kind === undefined ? candidate === DATABASE_KIND || candidate === CLUSTER_KIND : candidate === kind;
  const clusters = new ClusterSnapshots(
    repository,
    snapshots.filter((snapshot) => snapshot.header.kind === CLUSTER_KIND && wanted(CLUSTER_KIND)),
  );
  const single = snapshots.filter(
    (snapshot) => snapshot.header.kind === DATABASE_KIND && wanted(DATABASE_KIND),
  );
  const database = name ?? (await chosenDatabase(single, clusters, target));
  const found = await newestHolding(repository, database, single, clusters);
  // As findSnapshot does: a damaged snapshot that might have been the one is said to be skipped.
  const mightHold = ({ kind: skippedKind, name: skippedName }: SnapshotInfo['header']) =>
    wanted(skippedKind) &&
    (skippedKind === CLUSTER_KIND || database === undefined || skippedName === database);
  for (const skipped of damaged) {
    if (
      !skipped.header ||
      (mightHold(skipped.header) && (!found || skipped.header.time > found.snapshot.header.time))
    )
      repository.onWarning(`skipped damaged snapshot ${shortName(skipped.id)}: ${skipped.problem}`);
  }
  if (found) return found;
  if (database !== undefined)
    throw new ConfigError(`there is no snapshot of database ${database}`, {
      hint: 'Check the name and the filters, or run `strongbox snapshots`.',
    });
  const newestCluster = await clusters.newest();
  if (newestCluster) {
    throw new DatabaseChoiceError(
      `cluster snapshot ${shortName(newestCluster.id)} holds several databases (${databaseList(newestCluster.details)})`,
      databasesOf(newestCluster.details),
    );
  }
  throw new ConfigError('there is no snapshot to use', {
    hint: 'Check the filters, or run `strongbox snapshots`.',
  });
}

/**
 * The database `latest` looks for when none is named: `target`'s namesake when a snapshot holds
 * it, else the one database that snapshots of one database were taken of; undefined (any) when
 * there is no target.
 */
async function chosenDatabase(
  single: readonly SnapshotInfo[],
  clusters: ClusterSnapshots,
  target: string | undefined,
): Promise<string | undefined> {
  if (target === undefined) return undefined;
  const names = new Set(single.map((snapshot) => snapshot.header.name));
  if (names.has(target) || (await clusters.newestHolding(target))) return target;
  if (names.size === 1) return [...names][0];
  if (names.size > 1) {
    const databases = [...names].sort();
    throw new DatabaseChoiceError(
      `snapshots of several databases match (${databases.join(', ')})`,
      databases,
    );
  }
  return undefined;
}

async function newestHolding(
  repository: Repository,
  database: string | undefined,
  single: readonly SnapshotInfo[],
  clusters: ClusterSnapshots,
): Promise<DatabaseSnapshot | undefined> {
  const newestSingle = single.findLast(
    (snapshot) => database === undefined || snapshot.header.name === database,
  );
  const cluster =
    database === undefined ? undefined : await clusters.newestHolding(database, newestSingle?.header.time);
  if (cluster) return inCluster(cluster.snapshot, cluster.tree, cluster.details, database!);
  return newestSingle && ofOneDatabase(repository, newestSingle);
}

async function byId(
  repository: Repository,
  reference: string,
  filter: SnapshotFilter,
  target: string | undefined,
): Promise<DatabaseSnapshot> {
  const { name, ...rest } = filter;
  const snapshot = await repository.findSnapshot(reference, rest);
  const { header } = snapshot;
  if (header.kind === DATABASE_KIND) {
    if (name !== undefined && header.name !== name) {
      throw new SnapshotFilterMismatchError(
        `snapshot ${shortName(snapshot.id)} is of database ${header.name}, not ${name}`,
        snapshot.id,
        ['name'],
      );
    }
    return ofOneDatabase(repository, snapshot);
  }
  if (header.kind !== CLUSTER_KIND)
    throw new SnapshotKindError(snapshot.id, header.kind, header.name, DATABASE_KIND);
  const { body } = await repository.loadSnapshot(snapshot.id);
  const details = parseClusterSource(body.source, snapshot.id);
  const database = name ?? (target !== undefined && holds(details, target) ? target : undefined);
  if (database === undefined) {
    throw new DatabaseChoiceError(
      `snapshot ${shortName(snapshot.id)} is of cluster ${header.name}, which holds several databases (${databaseList(details)})`,
      databasesOf(details),
    );
  }
  if (!holds(details, database)) {
    throw new DatabaseChoiceError(
      `snapshot ${shortName(snapshot.id)} of cluster ${header.name} holds no database ${database}; it holds ${databaseList(details)}`,
      databasesOf(details),
      database,
    );
  }
  return inCluster(snapshot, body.tree, details, database);
}

async function ofOneDatabase(repository: Repository, snapshot: SnapshotInfo): Promise<DatabaseSnapshot> {
  const { body } = await repository.loadSnapshot(snapshot.id);
  return {
    snapshot,
    tree: body.tree,
    database: snapshot.header.name,
    details: parsePostgresSource(body.source, snapshot.id),
    path: undefined,
  };
}

function inCluster(
  snapshot: SnapshotInfo,
  tree: string,
  details: PostgresClusterDetails,
  database: string,
): DatabaseSnapshot {
  const { file, ...recorded } = details.databases[database]!;
  return { snapshot, tree, database, details: recorded, path: file };
}

function holds(details: PostgresClusterDetails, database: string): boolean {
  return Object.hasOwn(details.databases, database);
}

function databasesOf(details: PostgresClusterDetails): string[] {
  return Object.keys(details.databases).sort();
}

function databaseList(details: PostgresClusterDetails): string {
  return databasesOf(details).join(', ');
}

/** Cluster snapshots, newest first, each body read once and only when asked for. */
class ClusterSnapshots {
  private readonly loaded = new Map<string, Promise<{ tree: string; details: PostgresClusterDetails }>>();

  constructor(
    private readonly repository: Repository,
    private readonly snapshots: readonly SnapshotInfo[],
  ) {}

  async newest(): Promise<{ id: string; details: PostgresClusterDetails } | undefined> {
    const snapshot = this.snapshots.at(-1);
    return snapshot && { id: snapshot.id, details: (await this.load(snapshot)).details };
  }

  /** The newest cluster snapshot holding `database`, among those taken after `after` if given. */
  async newestHolding(
    database: string,
    after?: string,
  ): Promise<{ snapshot: SnapshotInfo; tree: string; details: PostgresClusterDetails } | undefined> {
    for (const snapshot of this.snapshots.toReversed()) {
      if (after !== undefined && snapshot.header.time <= after) break;
      const { tree, details } = await this.load(snapshot);
      if (holds(details, database)) return { snapshot, tree, details };
    }
    return undefined;
  }

  private load(snapshot: SnapshotInfo) {
    let loading = this.loaded.get(snapshot.id);
    if (!loading) {
      loading = this.repository
        .loadSnapshot(snapshot.id)
        .then(({ body }) => ({ tree: body.tree, details: parseClusterSource(body.source, snapshot.id) }));
      this.loaded.set(snapshot.id, loading);
    }
    return loading;
  }
}

/** The bytes of the database's archive: a snapshot of one database holds nothing else; a cluster's file is looked up. */
export async function archiveSize(repository: Repository, found: DatabaseSnapshot): Promise<number> {
  if (found.path === undefined) return found.snapshot.header.size;
  await repository.loadIndex();
  return (await findFile(repository, found.tree, found.path)).size ?? 0;
}
