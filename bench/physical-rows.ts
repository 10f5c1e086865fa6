import {
  LATENCY_SEGMENTS,
  PGBACKREST,
  STRONGBOX,
  SUSTAINED_SEGMENTS,
  type Arrival,
  type ContenderResults,
  type PhysicalResults,
  type PushRun,
} from './physical.ts';
import type { Baseline, Row, Unit } from './report.ts';

const MB = 1e6;
const MiB = 1024 * 1024;

/** The nearest-rank percentile of `values`. */
function percentile(values: number[], p: number): number {
  const sorted = values.toSorted((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** A figure of both contenders, strongbox's absent until it is measured. */
type Figure = (run: ContenderResults) => number | undefined;

/**
 * The physical rows: strongbox's figure (absent until its physical backups join the section)
 * beside pgBackRest's, measured in the same run on the same cluster.
 */
export function physicalRows(results: PhysicalResults): Row[] {
  const strongboxRun = results.runs[STRONGBOX];
  const pgBackRestRun = results.runs[PGBACKREST];
  const row = (measure: string, unit: Unit, what: string, figure: Figure): Row => {
    const baseline: Baseline = pgBackRestRun
      ? { what: `pgBackRest ${what}`, value: figure(pgBackRestRun) }
      : { what: `pgBackRest ${what}`, missing: results.missing[PGBACKREST] ?? 'not measured' };
    const strongbox = strongboxRun && figure(strongboxRun);
    return { measure, unit, ...(strongbox !== undefined ? { strongbox } : {}), baseline };
  };
  const dayMB = (results.dayWalBytes / MB).toFixed(0);
  return [
    row('physical full backup (wall time)', 's', 'backup --type=full', (r) => r.full.seconds),
    row('peak RSS, physical full backup', 'MiB', 'backup --type=full', (r) => r.full.maxRssBytes / MiB),
    row('stored by full backup (repository growth)', 'MB', 'backup --type=full', (r) => r.full.stored / MB),
    row(
      'incremental backup after day.sql (wall time)',
      's',
      'backup --type=incr',
      (r) => r.incremental.seconds,
    ),
    row('peak RSS, incremental backup', 'MiB', 'backup --type=incr', (r) => r.incremental.maxRssBytes / MiB),
    row(
      'stored by incremental backup (repository growth)',
      'MB',
      'backup --type=incr',
      (r) => r.incremental.stored / MB,
    ),
    row(
      'stored by incremental backup / full',
      '%',
      'backup --type=incr',
      (r) => (100 * r.incremental.stored) / r.full.stored,
    ),
    row(
      `WAL of one day archived (${dayMB} MB written; repository growth)`,
      'MB',
      'archive-push',
      (r) => r.dayWalStored / MB,
    ),
    ...pushRows(row),
    row(
      'restore of the incremental + replay of a day, to accepting writes (wall time)',
      's',
      'restore --type=default, then the server started',
      (r) => r.restore.secondsToWrites,
    ),
    row('restore command alone (wall time)', 's', 'restore', (r) => r.restore.restore.seconds),
    row('peak RSS, restore command', 'MiB', 'restore', (r) => r.restore.restore.maxRssBytes / MiB),
  ];
}

/**
 * For each run of pgBackRest's archive_command, the same run of strongbox's mode of the same name,
 * when it has one: latency median and p95, and for the sustained run, segments per second.
 */
function pushRows(row: (measure: string, unit: Unit, what: string, figure: Figure) => Row): Row[] {
  const plans: { mode: string; arrival: Arrival; segments: number }[] = [
    { mode: 'sync', arrival: 'one at a time', segments: LATENCY_SEGMENTS },
    { mode: 'async', arrival: 'one at a time', segments: LATENCY_SEGMENTS },
    { mode: 'async', arrival: 'all waiting', segments: LATENCY_SEGMENTS },
  ];
  const find = (r: ContenderResults, mode: string, arrival: Arrival, segments: number): PushRun | undefined =>
    r.pushes.find((push) => push.mode === mode && push.arrival === arrival && push.segments === segments);
  const latencyRows = plans.flatMap(({ mode, arrival, segments }) => {
    const what = `archive-push${mode === 'async' ? ' (archive-async=y)' : ''}`;
    const measure = `archive_command, ${mode}, ${segments} segments ${arrival}`;
    const latency = (p: number) => (r: ContenderResults) => {
      const run = find(r, mode, arrival, segments);
      return run && 1000 * percentile(run.latencies, p);
    };
    return [
      row(`${measure}: median latency`, 'ms', what, latency(50)),
      row(`${measure}: p95 latency`, 'ms', what, latency(95)),
    ];
  });
  const sustained = (mode: string, arrival: Arrival, segments: number) => (r: ContenderResults) => {
    const run = find(r, mode, arrival, segments);
    return run && run.segments / run.seconds;
  };
  return [
    ...latencyRows,
    row(
      `archive_command, sync, ${LATENCY_SEGMENTS} segments one at a time, in sequence`,
      'segments/s',
      'archive-push',
      sustained('sync', 'one at a time', LATENCY_SEGMENTS),
    ),
    row(
      `archive_command, async, ${SUSTAINED_SEGMENTS} segments all waiting, in sequence`,
      'segments/s',
      'archive-push (archive-async=y)',
      sustained('async', 'all waiting', SUSTAINED_SEGMENTS),
    ),
  ];
}
