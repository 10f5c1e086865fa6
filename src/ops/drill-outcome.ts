import { hostname } from 'node:os';
import { ExitCode, StrongboxError, ThresholdError, VerificationError } from '../errors.ts';
import type { Repository } from '../repository/repository.ts';
import { formatElapsed } from '../util/duration.ts';

/*
 * What every restore drill ends with, whatever engine restored it: the record, judged against its
 * objectives, kept in the repository, and the error a drill that did not pass throws. The engine
 * (src/postgres/drill.ts) restores, verifies and times; this decides what that proved.
 */

/**
 * What a drill proved, as plain data: the record kept of it (in the repository, and by metrics
 * and health checks) and the figures a report prints. Times are ISO 8601, durations seconds.
 */
export interface DrillRecord<Phase extends string = string> {
  /** The database as it was backed up. */
  database: string;
  /** The snapshot's host, kind and env tag: the group it belongs to. */
  host: string;
  kind: string;
  env: string | null;
  snapshot: string;
  snapshotTime: string;
  /** The newest snapshot of the database when the drill began, whose age is the RPO. */
  newestSnapshot: string;
  newestSnapshotTime: string;
  started: string;
  finished: string;
  /** Seconds each phase took; null for a phase the drill did not reach. */
  phases: Record<Phase, number | null>;
  /** The time to a verified copy (for a logical drill fetch + restore + verify); null when the restore failed. */
  rtoSeconds: number | null;
  /** The age of the newest snapshot at the drill's start: the data a loss then would have lost. */
  rpoSeconds: number;
  objectives: { rtoSeconds: number | null; rpoSeconds: number | null };
  /** failed: any difference from the backup, failed check or error; else over-objective when RTO or RPO exceeds its objective. */
  result: 'passed' | 'failed' | 'over-objective';
  /** The objectives exceeded. */
  exceeded: ('rto' | 'rpo')[];
  /** Every difference from the backup and every failed check, one sentence each; and the error that ended the drill. */
  failures: string[];
}

/** A drill's record and what ended it early, if anything. */
export interface DrillOutcome {
  record: DrillRecord;
  /**
   * What ended the drill before it was done (a restore that failed, the storage gone…), already
   * among the record's failures; drillError hands it back to be thrown.
   */
  error?: unknown;
}

/** Whether a drill passed: any failure fails it, else an objective exceeded puts it over. */
export function judgeDrill(figures: {
  failures: readonly string[];
  rtoSeconds: number | null;
  rpoSeconds: number;
  objectives: DrillRecord['objectives'];
}): Pick<DrillRecord, 'result' | 'exceeded'> {
  const { objectives, rtoSeconds, rpoSeconds } = figures;
  const exceeded: DrillRecord['exceeded'] = [];
  if (objectives.rtoSeconds !== null && rtoSeconds !== null && rtoSeconds > objectives.rtoSeconds)
    exceeded.push('rto');
  if (objectives.rpoSeconds !== null && rpoSeconds > objectives.rpoSeconds) exceeded.push('rpo');
  const result = figures.failures.length > 0 ? 'failed' : exceeded.length > 0 ? 'over-objective' : 'passed';
  return { result, exceeded };
}

/**
 * Keeps the drill's result in the repository (result-records.ts), where `health` and
 * `strongbox metrics` find when each database was last proven restorable. A result that cannot be
 * written is a warning: the drill itself, and its report, stand.
 */
export async function recordDrill(
  repository: Repository,
  result: DrillOutcome,
  started: Date,
): Promise<void> {
  if (repository.readLocking.skip) return;
  const { record } = result;
  const failure = drillError(result);
  const exitCode = failure === undefined ? ExitCode.ok : exitCodeOf(failure);
  try {
    await repository.recordResult('drill', {
      started,
      finished: new Date(record.finished),
      host: hostname(),
      subject: {
        kind: record.kind,
        name: record.database,
        host: record.host,
        ...(record.env !== null ? { env: record.env } : {}),
      },
      snapshot: record.snapshot,
      snapshotTime: record.snapshotTime,
      phases: Object.fromEntries(
        Object.entries(record.phases).filter((entry): entry is [string, number] => entry[1] !== null),
      ),
      ...(record.rtoSeconds !== null ? { rtoSeconds: record.rtoSeconds } : {}),
      rpoSeconds: record.rpoSeconds,
      objectives: {
        ...(record.objectives.rtoSeconds !== null ? { rtoSeconds: record.objectives.rtoSeconds } : {}),
        ...(record.objectives.rpoSeconds !== null ? { rpoSeconds: record.objectives.rpoSeconds } : {}),
      },
      result: failure === undefined ? 'success' : 'failure',
      exitCode,
      ...(failure !== undefined ? { message: messageOf(failure) } : {}),
      mismatches: record.failures.slice(0, 1000),
    });
  } catch (error) {
    repository.onWarning(`the drill's result was not recorded in the repository: ${messageOf(error)}`);
  }
}

function exitCodeOf(error: unknown): number {
  return error instanceof StrongboxError ? error.exitCode : ExitCode.general;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A drill that found the restored database different from its backup, or a check failing (exit 7). */
export class DrillFailedError extends VerificationError {
  constructor(readonly record: DrillRecord) {
    super(
      `the drill of ${record.database} (snapshot ${record.snapshot.slice(0, 8)}) failed: ${record.failures.length === 1 ? record.failures[0] : `${record.failures.length} problems, the first: ${record.failures[0]}`}`,
      { hint: 'The report lists every problem.' },
    );
  }
}

/** A drill that passed every check, but took longer than its RTO or found data older than its RPO (exit 8). */
export class DrillObjectiveError extends ThresholdError {
  constructor(readonly record: DrillRecord) {
    const over = (what: string, seconds: number | null, objective: number | null) =>
      `${what} ${formatElapsed(seconds ?? 0)} is over its objective of ${formatElapsed(objective ?? 0)}`;
    super(
      `the drill of ${record.database} (snapshot ${record.snapshot.slice(0, 8)}) passed, but ${record.exceeded
        .map((which) =>
          which === 'rto'
            ? over('the recovery time', record.rtoSeconds, record.objectives.rtoSeconds)
            : over('the age of the newest snapshot', record.rpoSeconds, record.objectives.rpoSeconds),
        )
        .join(', and ')}`,
    );
  }
}

/**
 * What to throw for a drill that did not pass: the error that ended it early (with its own exit
 * code: 4 for a failed pg_restore…), else DrillFailedError (7), else DrillObjectiveError (8).
 */
export function drillError(result: DrillOutcome): unknown {
  if (result.error !== undefined) return result.error;
  if (result.record.result === 'failed') return new DrillFailedError(result.record);
  if (result.record.result === 'over-objective') return new DrillObjectiveError(result.record);
  return undefined;
}
