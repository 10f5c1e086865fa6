import type { Repository } from '../repository/repository.ts';
import type { SnapshotInfo } from '../repository/snapshot.ts';
import {
  figureMetric,
  groupLabels,
  operationMetricNames,
  REPOSITORY_METRICS,
  type GroupLabels,
  type Sample,
} from './metrics.ts';
import type { RecordedResult, RecordedResultsReader } from './recorded-results.ts';
import { archivedWal, walSamples, type WalTimelineMetrics } from './wal-metrics.ts';

/** The snapshots of one group (host, kind, name, env) and its newest one. */
export interface SnapshotGroupMetrics {
  host: string;
  kind: string;
  name: string;
  /** The value of its env= tag, if it has one. */
  env?: string;
  snapshots: number;
  newest: { id: string; time: string; size: number; stored: number };
}

/** What `strongbox metrics` reports. */
export interface RepositoryMetrics {
  /** The repository's location, without credentials: the `repository` label. */
  repository: string;
  /** Every stored object's bytes, as the storage lists them. */
  sizeBytes: number;
  objects: number;
  snapshots: number;
  /** Snapshot files that are damaged or not trusted (`strongbox check` says more). */
  damagedSnapshots: number;
  groups: SnapshotGroupMetrics[];
  /** Drill and check results the repository records (RECORDED_RESULT_READERS). */
  recorded: RecordedResult[];
  /** The WAL archived into the repository, per timeline (wal-metrics.ts); none when nothing is. */
  wal: WalTimelineMetrics[];
}

/**
 * The repository-wide gauges: its size (listing the storage), and per group of snapshots how many
 * there are and the newest one's time and size, plus what `readers` find recorded and the WAL
 * archived per timeline.
 */
export async function repositoryMetrics(
  repository: Repository,
  options: { location: string; readers?: readonly RecordedResultsReader[] },
): Promise<RepositoryMetrics> {
  let sizeBytes = 0;
  let objects = 0;
  for await (const object of repository.backend.list('')) {
    sizeBytes += object.size;
    objects++;
  }
  const { snapshots, damaged } = await repository.scanSnapshots();
  const groups = groupSnapshots(snapshots).map(({ snapshots: members, ...group }) => {
    const { id, header } = members[0]!;
    return {
      ...group,
      snapshots: members.length,
      newest: { id, time: header.time, size: header.size, stored: header.stored },
    };
  });
  const recorded: RecordedResult[] = [];
  for (const read of options.readers ?? []) recorded.push(...(await read(repository)));
  const { timelines } = await archivedWal(repository);
  return {
    repository: options.location,
    sizeBytes,
    objects,
    snapshots: snapshots.length,
    damagedSnapshots: damaged.length,
    groups,
    recorded,
    wal: timelines,
  };
}

/** A group of snapshots (host, kind, name, env tag), newest first. */
export interface SnapshotGroup {
  host: string;
  kind: string;
  name: string;
  /** The value of its env= tag, if it has one. */
  env?: string;
  /** Newest first; a snapshot dated in the future is never the newest while another is not. */
  snapshots: SnapshotInfo[];
}

/** The snapshots by group, in a stable order (host, kind, name, env). */
export function groupSnapshots(snapshots: readonly SnapshotInfo[]): SnapshotGroup[] {
  const sorted = [...snapshots].sort(
    (a, b) =>
      Number(Boolean(a.future)) - Number(Boolean(b.future)) || (a.header.time < b.header.time ? 1 : -1),
  );
  const groups = new Map<string, SnapshotGroup>();
  for (const snapshot of sorted) {
    const { header } = snapshot;
    const env = header.tags.findLast((tag) => tag.startsWith('env='))?.slice('env='.length);
    const key = groupKey({ host: header.host, kind: header.kind, name: header.name, env });
    const group = groups.get(key);
    if (group) group.snapshots.push(snapshot);
    else
      groups.set(key, {
        host: header.host,
        kind: header.kind,
        name: header.name,
        ...(env !== undefined ? { env } : {}),
        snapshots: [snapshot],
      });
  }
  return [...groups.values()].sort((a, b) => (groupKey(a) < groupKey(b) ? -1 : 1));
}

/** What tells one group from another, as one string. */
export function groupKey(group: Omit<GroupLabels, 'repository'>): string {
  return [group.host, group.kind, group.name, group.env].join('\u0000');
}

/** `metrics` as series, to render in the exposition format. */
export function repositoryMetricSamples(metrics: RepositoryMetrics): Sample[] {
  const repository = groupLabels({ repository: metrics.repository });
  const samples: Sample[] = [
    { name: REPOSITORY_METRICS.size.name, labels: repository, value: metrics.sizeBytes },
    { name: REPOSITORY_METRICS.snapshots.name, labels: repository, value: metrics.snapshots },
  ];
  for (const group of metrics.groups) {
    const labels = groupLabels({ repository: metrics.repository, ...group });
    samples.push(
      { name: REPOSITORY_METRICS.groupSnapshots.name, labels, value: group.snapshots },
      { name: REPOSITORY_METRICS.newestTime.name, labels, value: Date.parse(group.newest.time) / 1000 },
      { name: REPOSITORY_METRICS.newestSize.name, labels, value: group.newest.size },
    );
  }
  for (const result of metrics.recorded) {
    const labels = groupLabels({ repository: metrics.repository, ...result.group });
    const names = operationMetricNames(result.operation);
    if (result.lastSuccess)
      samples.push({ name: names.lastSuccess, labels, value: result.lastSuccess.getTime() / 1000 });
    if (result.lastFailure)
      samples.push({ name: names.lastFailure, labels, value: result.lastFailure.getTime() / 1000 });
    for (const [figure, value] of Object.entries(result.figures ?? {})) {
      const name = figureMetric(result.operation, figure);
      if (name && Number.isFinite(value)) samples.push({ name, labels, value });
    }
  }
  samples.push(...walSamples(metrics.repository, metrics.wal));
  return samples;
}
