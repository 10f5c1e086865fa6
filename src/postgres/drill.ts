import { performance } from 'node:perf_hooks';
import type { DrillSqlCheck } from '../config-file/config-file.ts';
import { ConfigError, MissingDependencyError, TargetExistsError } from '../errors.ts';
import type { Repository, SnapshotFilter } from '../repository/repository.ts';
import { resolveConnection } from './connection.ts';
import { runDrillChecks, type DrillCheckResult, type ObjectCount } from './verify/drill-checks.ts';
import { RestoreTarget } from './restore/target.ts';
import { findTools } from './tools.ts';
import {
  DatabaseMismatchError,
  differenceOf,
  displayTable,
  type DatabaseVerification,
} from './verify/verify.ts';
import { judgeDrill, recordDrill, type DrillRecord } from '../ops/drill-outcome.ts';
import { onInterrupt } from '../util/interrupt.ts';
import { findDatabaseSnapshot } from './database-snapshot.ts';
import { clearLeftoversOf } from './restore/cleanup.ts';
import { restorePostgres } from './restore/restore-database.ts';

export type { DrillCheckResult, ObjectCount };
export { DrillFailedError, DrillObjectiveError, drillError, type DrillRecord } from '../ops/drill-outcome.ts';

/** The timed phases of a drill, in order. fetch, restore and verify make its recovery time. */
export const DRILL_PHASES = ['fetch', 'restore', 'verify', 'checks'] as const;
export type DrillPhase = (typeof DRILL_PHASES)[number];

export interface DrillOptions {
  /** postgres://…/database: a database that must not exist, restored into and dropped afterwards. */
  to: string;
  /** The database password, given to the PostgreSQL programs as PGPASSWORD, never as an argument. */
  password?: string;
  pgBin?: string;
  /** pg_restore runs at once, as `restore --jobs`. */
  jobs?: number;
  filter?: SnapshotFilter;
  /** Keep the restored database instead of dropping it. */
  keep?: boolean;
  objectives?: { rtoSeconds?: number; rpoSeconds?: number };
  /** The configuration file's checks (drill.checks). */
  sqlChecks?: readonly DrillSqlCheck[];
  /** Count, for every foreign key, the rows that reference no row. */
  orphans?: boolean;
  /** Told once the snapshot is found, before anything is restored: the group it belongs to. */
  onSnapshot?: (group: { host: string; kind: string; name: string; env?: string }) => void;
  /** Told as each phase ends, with its seconds. */
  onPhase?: (phase: DrillPhase, seconds: number) => void;
  onStep?: (message: string) => void;
  onProgress?: (bytes: number, archiveBytes: number) => void;
  /** Record the result in the repository (default true), for health checks and metrics. */
  record?: boolean;
}

export interface DrillResult {
  record: DrillRecord<DrillPhase>;
  /** The database restored into, as messages show it: user@host:port/database. */
  target: string;
  /** The comparison with the backup's fingerprints, when the restore got that far. */
  verification?: DatabaseVerification;
  checks: DrillCheckResult[];
  objects: ObjectCount[];
  /** The restored database, left for inspection (keep). */
  keptAs?: string;
  notes: string[];
  /**
   * What ended the drill before it was done (pg_restore failed, the storage went away…), already
   * among the failures; drillError hands it back to be thrown. Not part of the record.
   */
  error?: unknown;
}

/**
 * A restore drill: restores a PostgreSQL snapshot into a database of its own (one that exists is
 * refused, and nothing else on the server is touched), verifies it against the backup's
 * fingerprints as every restore does, runs the drill's checks in it (foreign keys, object counts,
 * the configuration's SQL checks), times each phase, and drops it again unless asked to keep it.
 * Failures during the drill do not throw: they make the result `failed`, so that its report is
 * still written; drillError gives what to throw then. Problems with the call itself (a database
 * that exists, no snapshot) throw before anything is restored.
 */
export async function drill(
  repository: Repository,
  reference: string,
  options: DrillOptions,
): Promise<DrillResult> {
  const started = new Date();
  const connection = resolveConnection(options.to, process.env, options.password);
  const database = connection.database;
  const found = await findDatabaseSnapshot(repository, reference, options.filter, database);
  const { before: _before, ...filter } = options.filter ?? {};
  const newest = await findDatabaseSnapshot(repository, 'latest', {
    ...filter,
    name: found.database,
    host: found.snapshot.header.host,
  });
  const env = envTag(found.snapshot.header.tags);
  options.onSnapshot?.({
    host: found.snapshot.header.host,
    kind: found.snapshot.header.kind,
    name: found.database,
    ...(env !== null ? { env } : {}),
  });
  const tools = await findTools(
    { ...connection, env: { ...connection.env, PGDATABASE: 'postgres' } },
    options.pgBin,
  );
  const target = new RestoreTarget(connection, tools);
  if (await target.exists(database))
    throw new TargetExistsError(database, connection.display, 'another-name');

  const step = options.onStep ?? (() => undefined);
  const clock = performance.now();
  const at = () => (performance.now() - clock) / 1000;
  const marks: Partial<Record<'firstByte' | 'verifying' | 'verified' | 'checking' | 'checked', number>> = {};
  const result: Omit<DrillResult, 'record'> = {
    target: connection.display,
    checks: [],
    objects: [],
    notes: [],
  };
  const failures: string[] = [];
  const fail = (error: unknown) => {
    result.error ??= error;
    failures.push(error instanceof Error ? error.message : String(error));
  };
  // The database holding the restore: the target once verified, its scratch name when it differed.
  let restored: string | undefined;
  try {
    const restore = await restorePostgres(repository, found.snapshot.id, {
      to: options.to,
      ...(options.password !== undefined ? { password: options.password } : {}),
      ...(options.pgBin ? { pgBin: options.pgBin } : {}),
      ...(options.jobs ? { jobs: options.jobs } : {}),
      filter: { name: found.database },
      onStep: step,
      onProgress: (bytes, archiveBytes) => {
        if (marks.firstByte === undefined) {
          marks.firstByte = at();
          options.onPhase?.('fetch', marks.firstByte);
        }
        options.onProgress?.(bytes, archiveBytes);
      },
      onVerifying: () => {
        marks.verifying = at();
        options.onPhase?.('restore', marks.verifying - (marks.firstByte ?? 0));
      },
    });
    restored = database;
    result.verification = restore.verification;
    result.notes.push(...restore.notes);
  } catch (error) {
    if (error instanceof DatabaseMismatchError) {
      restored = error.database;
      result.verification = error.verification;
      failures.push(...verificationFailures(error.verification));
    } else if (error instanceof TargetExistsError) {
      throw new TargetExistsError(database, connection.display, 'another-name', {
        createdDuringRestore: true,
      });
    } else if (error instanceof ConfigError || error instanceof MissingDependencyError) {
      throw error;
    } else {
      fail(error);
      // A restore that failed while verifying leaves its scratch database for inspection.
      if (!options.keep) await clearLeftoversOf(target, database, step).catch(fail);
    }
  }
  if (marks.verifying !== undefined && restored !== undefined) {
    marks.verified = at();
    options.onPhase?.('verify', marks.verified - marks.verifying);
  }

  if (restored !== undefined) {
    const name = restored;
    const dropOnInterrupt = options.keep ? () => undefined : onInterrupt(() => target.drop(name, true));
    try {
      marks.checking = at();
      step(
        `check foreign keys, object counts${options.sqlChecks?.length ? ' and the configured checks' : ''} in ${name}`,
      );
      const checked = await runDrillChecks(connection, tools, name, {
        recorded: found.details?.catalog,
        sqlChecks: options.sqlChecks ?? [],
        orphans: Boolean(options.orphans),
      });
      marks.checked = at();
      options.onPhase?.('checks', marks.checked - marks.checking);
      result.checks = checked.checks;
      result.objects = checked.objects;
      for (const check of checked.checks)
        failures.push(...check.failures.map((line) => `${check.name}: ${line}`));
    } catch (error) {
      fail(error);
    } finally {
      dropOnInterrupt();
    }
    if (options.keep) result.keptAs = name;
    else {
      step(`drop ${name}`);
      try {
        await target.drop(name, true);
      } catch (error) {
        result.notes.push(`${name} could not be dropped: drop it by hand`);
        fail(error);
      }
    }
  }

  const phase = (from: number | undefined, to: number | undefined) =>
    from !== undefined && to !== undefined ? to - from : null;
  const phases: Record<DrillPhase, number | null> = {
    fetch: phase(0, marks.firstByte),
    restore: phase(marks.firstByte, marks.verifying),
    verify: phase(marks.verifying, marks.verified),
    checks: phase(marks.checking, marks.checked),
  };
  const rtoSeconds = marks.verified ?? null;
  const rpoSeconds = Math.max(0, (started.getTime() - Date.parse(newest.snapshot.header.time)) / 1000);
  const objectives = {
    rtoSeconds: options.objectives?.rtoSeconds ?? null,
    rpoSeconds: options.objectives?.rpoSeconds ?? null,
  };
  const { header } = found.snapshot;
  const record: DrillRecord<DrillPhase> = {
    database: found.database,
    host: header.host,
    kind: header.kind,
    env,
    snapshot: found.snapshot.id,
    snapshotTime: header.time,
    newestSnapshot: newest.snapshot.id,
    newestSnapshotTime: newest.snapshot.header.time,
    started: started.toISOString(),
    finished: new Date().toISOString(),
    phases,
    rtoSeconds,
    rpoSeconds,
    objectives,
    ...judgeDrill({ failures, rtoSeconds, rpoSeconds, objectives }),
    failures,
  };
  const done: DrillResult = { record, ...result };
  if (options.record !== false) await recordDrill(repository, done, started);
  return done;
}

function envTag(tags: readonly string[]): string | null {
  return tags.findLast((tag) => tag.startsWith('env='))?.slice('env='.length) ?? null;
}

/** Every difference a verification found, one sentence each, as its error message lists them. */
function verificationFailures(verification: DatabaseVerification): string[] {
  return [
    ...verification.mismatched.map((table) => `${displayTable(table)}: ${differenceOf(table)}`),
    ...verification.catalogDifferences,
    ...verification.checks.flatMap((check) =>
      check.differences.map((difference) => `${check.name}: ${difference}`),
    ),
  ];
}
