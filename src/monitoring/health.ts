import { StrongboxError } from '../errors.ts';
import { listLocks, type LockInfo } from '../repository/locks.ts';
import type { Repository } from '../repository/repository.ts';
import type { AlertThresholds } from './alert-rules.ts';
import type { RecordedResult, RecordedResultsReader, RecordedRun } from './recorded-results.ts';
import { groupKey, groupSnapshots, type SnapshotGroup } from './repository-metrics.ts';
import { archivedWal, type ArchivedWal } from './wal-metrics.ts';

/**
 * `strongbox health`: what the alert rules watch (alert-rules.ts), checked at once against the
 * repository itself (its snapshots, records, locks and WAL), for those without Prometheus (Nagios, Icinga, a cron job that mails) and for
 * the on-call engineer who wants one answer. Findings are data; cli/commands/health.ts words them.
 */

/** Nagios's states, in the order a report takes the worst of them. */
export const HEALTH_STATUSES = ['ok', 'unknown', 'warning', 'critical'] as const;
export type HealthStatus = (typeof HEALTH_STATUSES)[number];

/** A group of snapshots as findings name it. */
export type GroupName = Pick<SnapshotGroup, 'host' | 'kind' | 'name' | 'env'>;

/** The kinds of snapshot `strongbox drill` restores: groups of other kinds need no drill. */
export const DRILLED_KINDS: ReadonlySet<string> = new Set(['postgres']);

export type HealthFinding =
  | {
      /** Reachable and open (ok), or not (critical, with why). */
      check: 'repository';
      status: HealthStatus;
      snapshots?: number;
      groups?: number;
      error?: string;
    }
  | {
      /** The newest snapshot's age against maxAgeSeconds: critical over it. */
      check: 'backup-age';
      status: HealthStatus;
      group: GroupName;
      snapshot: string;
      time: string;
      ageSeconds: number;
      limitSeconds: number;
    }
  | {
      /** The newest snapshot's size against the average of those of the window before it: warning beyond sizeChangePercent. */
      check: 'backup-size';
      status: HealthStatus;
      group: GroupName;
      sizeBytes: number;
      /** Snapshots of the window before the newest that were averaged; none: nothing to compare. */
      compared: number;
      averageBytes?: number;
      changePercent?: number;
      limitPercent: number;
      windowSeconds: number;
    }
  | {
      /**
       * The drills of a database: critical when the newest failed, warning when it was over its
       * objective, when none succeeded within maxDrillAgeSeconds, or when the newest success's
       * RTO or RPO is over the configured objective.
       */
      check: 'drill';
      status: HealthStatus;
      group: GroupName;
      problem?: 'never' | 'too-old' | 'failed' | 'over-objective' | 'rto' | 'rpo';
      newest?: RecordedRun;
      newestSuccess?: RecordedRun;
      /** Seconds since the newest success. */
      successAgeSeconds?: number;
      limitSeconds: number;
      /** The objective the RTO or RPO problem is measured against. */
      objectiveSeconds?: number;
    }
  | {
      /** The repository's checks: critical when the newest failed, warning when none passed within maxCheckAgeSeconds. */
      check: 'check';
      status: HealthStatus;
      problem?: 'never' | 'too-old' | 'failed';
      newest?: RecordedRun;
      successAgeSeconds?: number;
      limitSeconds: number;
    }
  | { check: 'locks'; status: HealthStatus; stale: { name: string; info?: LockInfo }[] }
  | {
      /**
       * Databases killed restores and drills left on a database server (postgres/restore/cleanup.ts),
       * not those a running restore holds: warning. Unknown when the server could not be asked.
       */
      check: 'leftovers';
      status: HealthStatus;
      server: string;
      leftovers: { database: string; kind: string; target?: string }[];
      error?: string;
    }
  | {
      /**
       * The newest WAL segment archived into the repository, when any is: warning beyond half of
       * maxWalAgeSeconds, critical beyond it, and critical with `error` when the archive could
       * not be read.
       */
      check: 'wal-age';
      status: HealthStatus;
      segment?: string;
      archived?: string;
      ageSeconds?: number;
      warningSeconds: number;
      limitSeconds: number;
      error?: string;
    }
  | {
      /** The WAL gaps a recovery from each timeline's newest base backup would stop at (wal-metrics.ts): critical. */
      check: 'wal-gaps';
      status: HealthStatus;
      gaps: { timeline: number; from: string; to: string; segments: number }[];
    }
  | {
      /** Snapshot files that are damaged or not trusted: critical. */
      check: 'snapshots';
      status: HealthStatus;
      damaged: { id: string; problem: string }[];
    };

export interface HealthOptions {
  thresholds: AlertThresholds;
  /** Where recorded drills and checks are read (recorded-results.ts). */
  readers: readonly RecordedResultsReader[];
  now?: Date;
}

/** The worst of `statuses`, ok when there are none. */
export function worstStatus(statuses: Iterable<HealthStatus>): HealthStatus {
  let worst = 0;
  for (const status of statuses) worst = Math.max(worst, HEALTH_STATUSES.indexOf(status));
  return HEALTH_STATUSES[worst]!;
}

/** Every finding about an open repository: it is reachable, since it opened. */
export async function checkHealth(repository: Repository, options: HealthOptions): Promise<HealthFinding[]> {
  const now = (options.now ?? new Date()).getTime();
  const { thresholds } = options;
  const { snapshots, damaged } = await repository.scanSnapshots();
  const groups = groupSnapshots(snapshots);
  const recorded: RecordedResult[] = [];
  for (const read of options.readers) recorded.push(...(await read(repository)));
  const drills = new Map(
    recorded
      .filter((result) => result.operation === 'drill')
      .map((result) => [groupKey(result.group), result]),
  );
  const findings: HealthFinding[] = [
    { check: 'repository', status: 'ok', snapshots: snapshots.length, groups: groups.length },
    {
      check: 'snapshots',
      status: damaged.length > 0 ? 'critical' : 'ok',
      damaged: damaged.map(({ id, problem }) => ({ id, problem })),
    },
  ];
  for (const group of groups) {
    const { snapshots: members, ...name } = group;
    findings.push(ageFinding(name, members, now, thresholds), sizeFinding(name, members, thresholds));
    const drill = drills.get(groupKey(name));
    if (drill || DRILLED_KINDS.has(name.kind)) findings.push(drillFinding(name, drill, now, thresholds));
  }
  findings.push(
    checkFinding(
      recorded.find((result) => result.operation === 'check'),
      now,
      thresholds,
    ),
  );
  findings.push(...(await walFindings(repository, new Date(now), thresholds)));
  const stale = (await listLocks(repository.backend, repository.metadataKey)).filter((lock) => lock.stale);
  findings.push({
    check: 'locks',
    status: stale.length > 0 ? 'warning' : 'ok',
    stale: stale.map(({ name, info }) => ({ name, ...(info ? { info } : {}) })),
  });
  return findings;
}

/** The WAL's age and gaps, when the repository holds any WAL. */
async function walFindings(
  repository: Repository,
  now: Date,
  thresholds: AlertThresholds,
): Promise<HealthFinding[]> {
  const limits = {
    warningSeconds: thresholds.maxWalAgeSeconds / 2,
    limitSeconds: thresholds.maxWalAgeSeconds,
  };
  let wal: ArchivedWal;
  try {
    wal = await archivedWal(repository, { now });
  } catch (error) {
    // A WAL object that is damaged or not trusted: the archive cannot be vouched for.
    if (!(error instanceof StrongboxError)) throw error;
    return [{ check: 'wal-age', status: 'critical', ...limits, error: error.message }];
  }
  const newest = wal.status.newest;
  if (!newest) return [];
  const gaps = wal.timelines.flatMap(({ timeline, gaps: found }) =>
    found.map((gap) => ({ timeline, ...gap })),
  );
  return [
    {
      check: 'wal-age',
      status:
        newest.ageSeconds > limits.limitSeconds
          ? 'critical'
          : newest.ageSeconds > limits.warningSeconds
            ? 'warning'
            : 'ok',
      segment: newest.name,
      archived: newest.archived,
      ageSeconds: newest.ageSeconds,
      ...limits,
    },
    { check: 'wal-gaps', status: gaps.length > 0 ? 'critical' : 'ok', gaps },
  ];
}

function ageFinding(
  group: GroupName,
  members: SnapshotGroup['snapshots'],
  now: number,
  thresholds: AlertThresholds,
): HealthFinding {
  const { id, header } = members[0]!;
  const ageSeconds = Math.max(0, (now - Date.parse(header.time)) / 1000);
  return {
    check: 'backup-age',
    status: ageSeconds > thresholds.maxAgeSeconds ? 'critical' : 'ok',
    group,
    snapshot: id,
    time: header.time,
    ageSeconds,
    limitSeconds: thresholds.maxAgeSeconds,
  };
}

/** The newest snapshot's size against the average of the group's snapshots of the window before it. */
function sizeFinding(
  group: GroupName,
  members: SnapshotGroup['snapshots'],
  thresholds: AlertThresholds,
): HealthFinding {
  const [newest, ...older] = members;
  const newestTime = Date.parse(newest!.header.time);
  const window = older.filter(
    (snapshot) => newestTime - Date.parse(snapshot.header.time) <= thresholds.sizeWindowSeconds * 1000,
  );
  const base = {
    check: 'backup-size' as const,
    group,
    sizeBytes: newest!.header.size,
    compared: window.length,
    limitPercent: thresholds.sizeChangePercent,
    windowSeconds: thresholds.sizeWindowSeconds,
  };
  if (window.length === 0) return { ...base, status: 'ok' };
  const averageBytes = window.reduce((sum, snapshot) => sum + snapshot.header.size, 0) / window.length;
  const changePercent =
    averageBytes === 0
      ? base.sizeBytes === 0
        ? 0
        : Infinity
      : ((base.sizeBytes - averageBytes) / averageBytes) * 100;
  return {
    ...base,
    status: Math.abs(changePercent) > thresholds.sizeChangePercent ? 'warning' : 'ok',
    averageBytes,
    changePercent,
  };
}

function drillFinding(
  group: GroupName,
  drills: RecordedResult | undefined,
  now: number,
  thresholds: AlertThresholds,
): HealthFinding {
  const base = { check: 'drill' as const, group, limitSeconds: thresholds.maxDrillAgeSeconds };
  if (!drills) return { ...base, status: 'warning', problem: 'never' };
  const { newest, newestSuccess } = drills;
  const found = {
    ...base,
    newest,
    ...(newestSuccess
      ? { newestSuccess, successAgeSeconds: Math.max(0, (now - newestSuccess.finished.getTime()) / 1000) }
      : {}),
  };
  if (newest.result === 'failure') {
    // Exit 8: the database restored and verified, but slower or older than its objective.
    return newest.exitCode === 8
      ? { ...found, status: 'warning', problem: 'over-objective' }
      : { ...found, status: 'critical', problem: 'failed' };
  }
  if (found.successAgeSeconds === undefined || found.successAgeSeconds > thresholds.maxDrillAgeSeconds)
    return { ...found, status: 'warning', problem: newestSuccess ? 'too-old' : 'never' };
  // A drill run without an objective is held to the configured one.
  const figures = newest.figures;
  for (const [problem, measured, objective] of [
    ['rto', figures.rto_seconds, thresholds.rtoSeconds],
    ['rpo', figures.rpo_seconds, thresholds.rpoSeconds],
  ] as const) {
    const own = figures[`${problem}_objective_seconds`];
    if (own === undefined && objective !== undefined && measured !== undefined && measured > objective)
      return { ...found, status: 'warning', problem, objectiveSeconds: objective };
  }
  return { ...found, status: 'ok' };
}

function checkFinding(
  checks: RecordedResult | undefined,
  now: number,
  thresholds: AlertThresholds,
): HealthFinding {
  const base = { check: 'check' as const, limitSeconds: thresholds.maxCheckAgeSeconds };
  if (!checks) return { ...base, status: 'warning', problem: 'never' };
  const { newest, newestSuccess } = checks;
  const found = {
    ...base,
    newest,
    ...(newestSuccess
      ? { successAgeSeconds: Math.max(0, (now - newestSuccess.finished.getTime()) / 1000) }
      : {}),
  };
  if (newest.result === 'failure') return { ...found, status: 'critical', problem: 'failed' };
  if (found.successAgeSeconds === undefined || found.successAgeSeconds > thresholds.maxCheckAgeSeconds)
    return { ...found, status: 'warning', problem: newestSuccess ? 'too-old' : 'never' };
  return { ...found, status: 'ok' };
}

/** What a restore cleanup's dry run found on `server`, as a finding. */
export function leftoversFinding(
  server: string,
  found:
    readonly { database: string; kind: string; target?: string; running?: boolean }[] | { error: string },
): HealthFinding {
  if ('error' in found)
    return { check: 'leftovers', status: 'unknown', server, leftovers: [], error: found.error };
  const leftovers = found
    .filter((leftover) => !leftover.running)
    .map(({ database, kind, target }) => ({ database, kind, ...(target !== undefined ? { target } : {}) }));
  return { check: 'leftovers', status: leftovers.length > 0 ? 'warning' : 'ok', server, leftovers };
}
