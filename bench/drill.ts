import { rm } from 'node:fs/promises';
import path from 'node:path';
import { initCluster, withCluster } from './cluster.ts';
import { strongbox } from './contenders.ts';
import {
  intoNewDatabase,
  loadBeforeState,
  SCRATCH_SETTINGS,
  TIMED_RUNS,
  typical,
  type PostgresBench,
} from './postgres.ts';
import type { Measurement } from './process.ts';
import type { DrillPhase } from '../src/postgres/drill.ts';

/** `strongbox drill` of a snapshot of the before state, beside the verified restore it is built on. */
export interface DrillResults {
  /** `strongbox restore latest --jobs 2` (every table verified) of the snapshot, median of three. */
  restore: Measurement;
  /** `strongbox --json drill latest --jobs 2` of the same snapshot, median of three wall times. */
  drill: Measurement;
  /** The drill's own RTO (fetch + restore + verify, from its --json), median of the three drills. */
  rtoSeconds: number;
  /** The phases of the drill whose RTO is the median. */
  phases: Record<DrillPhase, number | null>;
}

interface DrillJson {
  rtoSeconds: number | null;
  phases: Record<DrillPhase, number | null>;
  result: string;
}

/**
 * A throwaway cluster in the before state, one `strongbox backup postgres` of it (not timed),
 * then three restores and three drills of that snapshot, taken in turns so that the machine's
 * other load falls on both alike, each into a new database after a CHECKPOINT and a sync.
 */
export async function measureDrill(bench: PostgresBench): Promise<DrillResults> {
  const dataDir = path.join(bench.workDir, 'pgdata');
  await initCluster(dataDir);
  try {
    return await withCluster(dataDir, SCRATCH_SETTINGS, async (cluster) => {
      bench.log('drill: restoring the before dump into a throwaway cluster');
      await loadBeforeState(cluster, bench.dataset.before);
      const repo = strongbox(bench.cli, bench.workDir);
      await repo.init();
      bench.log('drill: backup postgres');
      await repo.backup({ cluster });
      const restores: Measurement[] = [];
      const drills: { run: Measurement; json: DrillJson }[] = [];
      for (let run = 1; run <= TIMED_RUNS; run++) {
        bench.log(`drill: strongbox restore latest --jobs 2 (${run} of ${TIMED_RUNS})`);
        restores.push(await intoNewDatabase(cluster, 'shop_restore', (db) => repo.restore(cluster, db)));
        bench.log(`drill: strongbox drill latest --jobs 2 (${run} of ${TIMED_RUNS})`);
        const drilled = await intoNewDatabase(cluster, 'shop_drill', (db) => repo.drill(cluster, db));
        const json = JSON.parse(drilled.stdout) as DrillJson;
        if (json.result !== 'passed' || json.rtoSeconds === null)
          throw new Error(`the drill did not pass: ${drilled.stdout.slice(0, 2000)}`);
        drills.push({ run: drilled, json });
      }
      const byRto = drills.toSorted((a, b) => a.json.rtoSeconds! - b.json.rtoSeconds!);
      const median = byRto[Math.floor(byRto.length / 2)]!;
      return {
        restore: typical(restores, restores.at(-1)!),
        drill: typical(
          drills.map((drilled) => drilled.run),
          median.run,
        ),
        rtoSeconds: median.json.rtoSeconds!,
        phases: median.json.phases,
      };
    });
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}
