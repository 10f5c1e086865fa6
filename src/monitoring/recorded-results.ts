import type { Repository } from '../repository/repository.ts';
import type { GroupLabels } from './metrics.ts';

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
}

/** Reads the results one kind of record holds; only records a full key accepts count. */
export type RecordedResultsReader = (repository: Repository) => Promise<RecordedResult[]>;

/**
 * Where `strongbox metrics` reads results recorded in the repository, one line per kind of record
 * (drills, checks), so that those records plug in without touching the metrics.
 */
export const RECORDED_RESULT_READERS: readonly RecordedResultsReader[] = [];
