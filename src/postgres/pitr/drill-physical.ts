import os from 'node:os';
import { judgeDrill, recordDrill, type DrillRecord } from '../../ops/drill-outcome.ts';
import type { Repository, SnapshotFilter } from '../../repository/repository.ts';
import { walStatus } from '../wal/status.ts';
import type { RecoveryTarget } from './recovery-target.ts';
import type { PointInTimeRestoreResult } from './restore-pitr.ts';
import { withScratchCluster } from './scratch.ts';

/** A physical drill's phases: the files laid out, the WAL replayed to the target, every database checked. */
export const PHYSICAL_DRILL_PHASES = ['restore', 'replay', 'verify'] as const;
export type PhysicalDrillPhase = (typeof PHYSICAL_DRILL_PHASES)[number];

export interface PhysicalDrillOptions {
  target: RecoveryTarget;
  strongbox: readonly string[];
  objectives?: { rtoSeconds?: number; rpoSeconds?: number };
  pgBin?: string;
  filter?: SnapshotFilter;
  /** Keep the scratch cluster's data directory (stopped) instead of removing it. */
  keep?: boolean;
  record?: boolean;
  onStep?: (message: string) => void;
  onPhase?: (phase: PhysicalDrillPhase, seconds: number) => void;
}

export interface PhysicalDrillResult {
  record: DrillRecord<PhysicalDrillPhase>;
  restore?: PointInTimeRestoreResult;
  /** The scratch data directory, when kept. */
  keptAs?: string;
  error?: unknown;
}

/**
 * A physical restore drill: the base backup laid out in a scratch data directory, recovered to the
 * target (by default the end of the archive) on a free local port with archiving off, every
 * database checked with pg_amcheck, the server stopped and the directory removed. RTO is the time
 * to a checked, open server (restore + replay + verify); RPO the age of the newest archived WAL
 * segment when the drill began (of the newest base backup without WAL). Judged, recorded and
 * thrown as every drill is (ops/drill-outcome.ts).
 */
export async function drillPhysical(
  repository: Repository,
  reference: string | undefined,
  options: PhysicalDrillOptions,
): Promise<PhysicalDrillResult> {
  const started = new Date();
  const status = await walStatus(repository.wal);
  const failures: string[] = [];
  const result: Omit<PhysicalDrillResult, 'record'> = {};
  const phases: Record<PhysicalDrillPhase, number | null> = { restore: null, replay: null, verify: null };
  const clock = Date.now();
  try {
    await withScratchCluster(
      repository,
      reference,
      {
        target: options.target,
        strongbox: options.strongbox,
        checkDatabases: true,
        prefix: 'strongbox-drill-',
        ...(options.keep ? { keep: true } : {}),
        ...(options.pgBin ? { pgBin: options.pgBin, fallbackBinDir: options.pgBin } : {}),
        ...(options.filter ? { filter: options.filter } : {}),
        ...(options.onStep ? { onStep: options.onStep } : {}),
      },
      async ({ restored, pgdata }) => {
        result.restore = restored;
        if (options.keep) result.keptAs = pgdata;
        const replay = restored.recovery?.recoverySeconds ?? 0;
        const verify = restored.amcheckSeconds ?? 0;
        phases.restore = Math.max(0, restored.durationSeconds - replay - verify);
        phases.replay = replay;
        phases.verify = verify;
        for (const phase of PHYSICAL_DRILL_PHASES) options.onPhase?.(phase, phases[phase]!);
        if (restored.amcheck?.error) failures.push(`pg_amcheck could not run: ${restored.amcheck.error}`);
        failures.push(...(restored.amcheck?.problems ?? []).map((line) => `pg_amcheck: ${line}`));
      },
    );
  } catch (error) {
    result.error = error;
    failures.push(error instanceof Error ? error.message : String(error));
  }

  const { snapshots } = await repository.scanSnapshots({
    ...(options.filter ?? {}),
    kind: 'postgres-physical',
  });
  const newestBackup = [...snapshots].sort(
    (a, b) => Date.parse(b.header.time) - Date.parse(a.header.time),
  )[0];
  const chosen = snapshots.find((snapshot) => snapshot.id === result.restore?.snapshot) ?? newestBackup;
  const newestPoint = status.newest?.archived ?? newestBackup?.header.time ?? started.toISOString();
  const rpoSeconds = Math.max(0, (started.getTime() - Date.parse(newestPoint)) / 1000);
  const rtoSeconds = failures.length === 0 || result.restore?.recovery ? (Date.now() - clock) / 1000 : null;
  const objectives = {
    rtoSeconds: options.objectives?.rtoSeconds ?? null,
    rpoSeconds: options.objectives?.rpoSeconds ?? null,
  };
  const header = chosen?.header;
  const record: DrillRecord<PhysicalDrillPhase> = {
    database: result.restore?.cluster ?? header?.name ?? 'cluster',
    host: header?.host ?? os.hostname(),
    kind: 'postgres-physical',
    env: header?.tags.findLast((tag) => tag.startsWith('env='))?.slice('env='.length) ?? null,
    snapshot: chosen?.id ?? '',
    snapshotTime: header?.time ?? started.toISOString(),
    newestSnapshot: newestBackup?.id ?? '',
    newestSnapshotTime: newestPoint,
    started: started.toISOString(),
    finished: new Date().toISOString(),
    phases,
    rtoSeconds: result.restore?.recovery ? rtoSeconds : null,
    rpoSeconds,
    objectives,
    ...judgeDrill({
      failures,
      rtoSeconds: result.restore?.recovery ? rtoSeconds : null,
      rpoSeconds,
      objectives,
    }),
    failures,
  };
  const done: PhysicalDrillResult = { record, ...result };
  if (options.record !== false && chosen) await recordDrill(repository, done, started);
  return done;
}
