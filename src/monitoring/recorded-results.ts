import type { Stored } from '../repository/appended-records.ts';
import type { Repository } from '../repository/repository.ts';
import type { DrillResult } from '../repository/result-records.ts';
import type { GroupLabels } from './metrics.ts';

/** One recorded run, as health checks show it. */
export interface RecordedRun {
  finished: Date;
  result: 'success' | 'failure';
  exitCode: number;
  message?: string;
  /** By name as CommandOutcome.figures: rto_seconds, rpo_seconds… */
  figures: Readonly<Record<string, number>>;
}

/**
 * What the repository records about an operation's runs for one group (a drill record, a check
 * record), as `strongbox metrics` reports it: strongbox_OP_last_success_timestamp_seconds and
 * _last_failure_, and the figures that have a gauge (strongbox_drill_rto_seconds…).
 */
export interface RecordedResult {
  operation: 'drill' | 'check';
  /** host, kind, name, env of what was drilled; none for a check of the whole repository. */
  group: Omit<GroupLabels, 'repository'>;
  lastSuccess?: Date;
  lastFailure?: Date;
  /** Of the newest run, by name as CommandOutcome.figures: rto_seconds, rpo_seconds… */
  figures?: Readonly<Record<string, number>>;
  /** The newest run, and the newest that succeeded. */
  newest: RecordedRun;
  newestSuccess?: RecordedRun;
}

/** Reads the results one kind of record holds; only records a full key accepts count. */
export type RecordedResultsReader = (repository: Repository) => Promise<RecordedResult[]>;

/** The figures of a drill record that metrics publish (drill.ts in cli names the same). */
function drillFigures(drill: Stored<DrillResult>): Record<string, number> {
  const figures: Record<string, number> = { rpo_seconds: drill.rpoSeconds };
  if (drill.rtoSeconds !== undefined) figures.rto_seconds = drill.rtoSeconds;
  if (drill.objectives.rtoSeconds !== undefined) figures.rto_objective_seconds = drill.objectives.rtoSeconds;
  if (drill.objectives.rpoSeconds !== undefined) figures.rpo_objective_seconds = drill.objectives.rpoSeconds;
  return figures;
}

interface AnyRun {
  finished: string;
  result: 'success' | 'failure';
  exitCode: number;
  message?: string;
}

/** Runs grouped by `groupOf`, summarised: the newest run, the newest success and failure. */
function summarise<T extends AnyRun>(
  operation: RecordedResult['operation'],
  runs: readonly T[],
  groupOf: (run: T) => RecordedResult['group'],
  figuresOf: (run: T) => Record<string, number>,
): RecordedResult[] {
  const groups = new Map<string, RecordedResult>();
  // Oldest first by the time each run ended, so that each later run replaces what it supersedes.
  const sorted = [...runs].sort((a, b) => Date.parse(a.finished) - Date.parse(b.finished));
  for (const run of sorted) {
    const group = groupOf(run);
    const key = JSON.stringify([group.host, group.kind, group.name, group.env]);
    const finished = new Date(run.finished);
    const recorded: RecordedRun = {
      finished,
      result: run.result,
      exitCode: run.exitCode,
      ...(run.message !== undefined ? { message: run.message } : {}),
      figures: figuresOf(run),
    };
    const summary: RecordedResult = groups.get(key) ?? { operation, group, newest: recorded };
    summary.newest = recorded;
    summary.figures = recorded.figures;
    if (run.result === 'success') {
      summary.lastSuccess = finished;
      summary.newestSuccess = recorded;
    } else summary.lastFailure = finished;
    groups.set(key, summary);
  }
  return [...groups.values()];
}

/** The drills recorded, per database drilled (its snapshots' group). */
export const readDrillResults: RecordedResultsReader = async (repository) =>
  summarise(
    'drill',
    (await repository.listResults('drill')).trusted.map((entry) => entry.value),
    (drill) => ({
      host: drill.subject.host,
      kind: drill.subject.kind,
      name: drill.subject.name,
      ...(drill.subject.env !== undefined ? { env: drill.subject.env } : {}),
    }),
    drillFigures,
  );

/** The checks recorded, of the repository as a whole. */
export const readCheckResults: RecordedResultsReader = async (repository) =>
  summarise(
    'check',
    (await repository.listResults('check')).trusted.map((entry) => entry.value),
    () => ({}),
    (check) => ({ problems: check.problems, read_data_ratio: check.readData }),
  );

/**
 * Where `strongbox metrics` and `strongbox health` read results recorded in the repository, one
 * line per kind of record, so that further kinds (physical drills) plug in without touching them.
 */
export const RECORDED_RESULT_READERS: readonly RecordedResultsReader[] = [readDrillResults, readCheckResults];
