import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initRepository, type Repository } from '../src/index.ts';
import { check } from '../src/ops/check.ts';
import { prune, type PruneResult } from '../src/ops/prune.ts';
import { repairIndex } from '../src/ops/repair-index.ts';
import type { Lock } from '../src/repository/locks.ts';
import { expectExit, runCli } from './helpers/cli.ts';
import { seededBytes } from './helpers/data.ts';
import { seededRandom } from './helpers/fault-proxy.ts';
import {
  copyCliRepo,
  emptyCliRepo,
  expectReadsBack,
  SMALL,
  start,
  storedFiles,
  waitUntil,
  type CliRepo,
  type Running,
} from './helpers/prune-repo.ts';
import { backupBuffer, PASSWORD } from './helpers/repo.ts';
import { rounds, seed } from './helpers/soak.ts';

/**
 * The real `strongbox prune` killed with SIGKILL at every step of its two phases: once its plan
 * is written, once the plan names whom it waits for, while it waits for a writer, once it has
 * written new packs or index files, once it has deleted old index files or packs, while it
 * merges removal records, and once its plan is gone. Whatever it was doing, every kept snapshot
 * still reads back byte for byte, `check --read-data` finds nothing wrong (packs in no index file
 * are allowed until the next prune), and the next prune finishes the work: after it, no pack is
 * left in no index file and nothing more would be deleted.
 */

/** What a round compares the repository to: its state before the prune started. */
interface Baseline {
  packs: Set<string>;
  indexFiles: Set<string>;
  removals: Set<string>;
}

interface Round {
  repo: CliRepo;
  baseline: Baseline;
  /** A session of the test's own, to read the plans the prune writes. */
  reader: Repository;
  /** The lock of a writer the test holds, in the round that kills prune while it waits. */
  writerLock?: Lock;
}

interface KillPoint {
  moment: string;
  /** The moment is the k-th of its kind, k drawn from 1 to `most`. */
  most: number;
  reached(round: Round, k: number): Promise<boolean>;
  /** A writer holds a lock from before the prune: the prune must wait for it. */
  holdsWriter?: boolean;
  /** The prune may end before the moment is seen; the kill then finds nothing to kill. */
  mayFinish?: boolean;
}

const newFiles = (now: Set<string>, before: Set<string>) =>
  [...now].filter((name) => !before.has(name)).length;
const goneFiles = (now: Set<string>, before: Set<string>) =>
  [...before].filter((name) => !now.has(name)).length;

const ordinal = (k: number) => ['first', 'second', 'third', 'fourth'][k - 1]!;

async function plans(round: Round) {
  return (await round.reader.records.prunePlans()).trusted.map((record) => record.value);
}

const KILL_POINTS: KillPoint[] = [
  {
    moment: 'its plan is written',
    most: 1,
    reached: async ({ repo }) => (await storedFiles(repo.location, 'prune')).size > 0,
  },
  {
    moment: 'its plan names the writers it waits for',
    most: 1,
    reached: async (round) => (await plans(round)).some((plan) => plan.waitFor !== undefined),
  },
  {
    moment: 'it waits for a writer that began before its plan',
    most: 1,
    holdsWriter: true,
    reached: async (round) =>
      (await plans(round)).some((plan) => plan.waitFor?.includes(round.writerLock!.name)),
  },
  {
    moment: 'the k-th new pack is written',
    most: 2,
    reached: async ({ repo, baseline }, k) =>
      newFiles(await storedFiles(repo.location, 'data'), baseline.packs) >= k,
  },
  {
    moment: 'the k-th new index file is written',
    most: 2,
    reached: async ({ repo, baseline }, k) =>
      newFiles(await storedFiles(repo.location, 'index'), baseline.indexFiles) >= k,
  },
  {
    moment: 'the k-th old index file is deleted',
    most: 2,
    reached: async ({ repo, baseline }, k) =>
      goneFiles(await storedFiles(repo.location, 'index'), baseline.indexFiles) >= k,
  },
  {
    moment: 'the k-th old pack is deleted',
    most: 4,
    reached: async ({ repo, baseline }, k) =>
      goneFiles(await storedFiles(repo.location, 'data'), baseline.packs) >= k,
  },
  {
    moment: 'removal records are being merged',
    most: 1,
    mayFinish: true,
    reached: async ({ repo, baseline }) => {
      const now = await storedFiles(repo.location, 'removed');
      return newFiles(now, baseline.removals) + goneFiles(now, baseline.removals) > 0;
    },
  },
  {
    moment: 'its plan is deleted',
    most: 1,
    mayFinish: true,
    reached: async ({ repo, baseline }) =>
      goneFiles(await storedFiles(repo.location, 'data'), baseline.packs) > 0 &&
      (await storedFiles(repo.location, 'prune')).size === 0,
  },
];

/** Where the killed prune had got to, for the log: what a replay should see again. */
async function progressOf(round: Round): Promise<string> {
  const { repo, baseline } = round;
  const packs = await storedFiles(repo.location, 'data');
  const indexFiles = await storedFiles(repo.location, 'index');
  const removals = await storedFiles(repo.location, 'removed');
  const plan = (await plans(round))[0];
  return [
    `plan ${plan ? (plan.waitFor ? `waiting for ${plan.waitFor.length}` : 'without waitFor') : 'none'}`,
    `packs +${newFiles(packs, baseline.packs)} -${goneFiles(packs, baseline.packs)}`,
    `index files +${newFiles(indexFiles, baseline.indexFiles)} -${goneFiles(indexFiles, baseline.indexFiles)}`,
    `removal records +${newFiles(removals, baseline.removals)} -${goneFiles(removals, baseline.removals)}`,
  ].join(', ');
}

const ROUNDS = rounds(KILL_POINTS.length);

describe('prune killed with SIGKILL', () => {
  let template: CliRepo;
  /** Snapshots that stay, with their content. */
  const kept = new Map<string, Buffer>();
  let keptAlone: { id: string; data: Buffer };
  let planned: PruneResult;

  beforeAll(async () => {
    template = await emptyCliRepo();
    const building = await initRepository({
      repo: template.location,
      passphrase: PASSWORD,
      stateDirectory: template.env.STRONGBOX_STATE_DIR,
      ...SMALL,
    });
    const segments = Array.from({ length: 8 }, (_, i) => seededBytes(`segment ${i}`, 300_000));
    const alone = seededBytes('kept alone', 1_000_000);
    const even = Buffer.concat(segments.filter((_, i) => i % 2 === 0));
    let first: string;
    let all: string;
    try {
      keptAlone = { id: (await backupBuffer(building, alone, 'alone')).snapshot, data: alone };
      kept.set(keptAlone.id, alone);
      first = (await backupBuffer(building, seededBytes('forgotten 1', 1_000_000), 'forgotten-1')).snapshot;
      // The packs of `all` end half used once it goes and `even` stays: they are repacked.
      all = (await backupBuffer(building, Buffer.concat(segments), 'all')).snapshot;
      kept.set((await backupBuffer(building, even, 'even')).snapshot, even);
      // One index file listing packs that stay beside packs that go: prune writes it anew without them.
      await repairIndex(building);
    } finally {
      await building.close();
    }
    const repository = await template.open();
    try {
      const second = await backupBuffer(repository, seededBytes('forgotten 2', 1_000_000), 'forgotten-2');
      // Two removal records, so that the prune also merges them.
      await repository.removeSnapshots([first], 'forget');
      await repository.removeSnapshots([all, second.snapshot], 'forget');
      planned = await prune(repository, { dryRun: true });
    } finally {
      await repository.close();
    }
    expect(planned.packs.repacked, 'packs to repack').toBeGreaterThan(0);
    expect(planned.packs.deleted - planned.packs.repacked, 'unused packs').toBeGreaterThan(0);
    // The kill points count up to the fourth pack deleted.
    expect(planned.packs.deleted, 'packs deleted or repacked').toBeGreaterThanOrEqual(4);
  });
  afterAll(() => template?.cleanup());

  it(
    'loses nothing a kept snapshot needs at any step, and the next prune finishes',
    async () => {
      const random = seededRandom(seed('prune killed'));
      const offset = Math.floor(random() * KILL_POINTS.length);
      for (let i = 0; i < ROUNDS; i++) {
        // Every kill point once in the suite's rounds, from a seeded start; soak runs repeat them.
        const point = KILL_POINTS[(offset + i) % KILL_POINTS.length]!;
        const k = 1 + Math.floor(random() * point.most);
        const label = `round ${i}: killed when ${point.moment.replace('k-th', ordinal(k))}`;
        const repo = await copyCliRepo(template);
        const reader = await repo.open();
        const round: Round = {
          repo,
          reader,
          baseline: {
            packs: await storedFiles(repo.location, 'data'),
            indexFiles: await storedFiles(repo.location, 'index'),
            removals: await storedFiles(repo.location, 'removed'),
          },
        };
        let running: Running | undefined;
        try {
          if (point.holdsWriter) round.writerLock = await reader.lock(false, 'backup stdin');
          running = start(['prune'], repo.env);
          const outcome = await waitUntil(point.moment, () => point.reached(round, k), running);
          running.child.kill('SIGKILL');
          const { signal } = await running.closed;
          if (outcome === 'exited' && !point.mayFinish)
            throw new Error(`${label}: prune ended first (${running.stderr()})`);
          console.log(
            `${label}: ${signal === 'SIGKILL' ? 'killed' : 'it had finished'}; ${await progressOf(round)}`,
          );
          await round.writerLock?.release();

          const afterKill = await repo.open();
          try {
            await expectReadsBack(afterKill, kept);
            const checked = await check(afterKill, { readData: 1 });
            expect(checked.problems, label).toEqual([]);
          } finally {
            await afterKill.close();
          }

          const again = await runCli(['prune', '--json'], { env: repo.env });
          expectExit(again, 0);
          expect((JSON.parse(again.stdout.toString()) as PruneResult).outcome, label).toBe('done');
          expect((await storedFiles(repo.location, 'prune')).size, label).toBe(0);
          const checked = await runCli(['check', '--read-data', '--json'], { env: repo.env });
          expectExit(checked, 0);
          const report = JSON.parse(checked.stdout.toString()) as {
            problems: unknown[];
            unreferencedPacks: number;
          };
          expect(report.problems, label).toEqual([]);
          expect(report.unreferencedPacks, label).toBe(0);

          const last = await repo.open();
          try {
            await expectReadsBack(last, kept);
            const left = await prune(last, { dryRun: true });
            expect(left.packs.deleted + left.packs.orphansDeleted, `${label}: left to prune`).toBe(0);
          } finally {
            await last.close();
          }
        } finally {
          if (running && !running.hasExited()) {
            running.child.kill('SIGKILL');
            await running.closed;
          }
          await round.writerLock?.release();
          await reader.close();
          await repo.cleanup();
        }
      }
    },
    ROUNDS * 20_000,
  );

  it('finishes a removal killed after its record: the snapshot is hidden, and prune deletes its files', async () => {
    const repo = await copyCliRepo(template);
    try {
      const session = await repo.open();
      try {
        // What `forget` writes first; killed right after it, nothing of the snapshot is deleted yet.
        await session.records.writeRemoval({
          version: 1,
          created: new Date().toISOString(),
          reason: 'forget',
          snapshots: [keptAlone.id],
        });
      } finally {
        await session.close();
      }
      expect(await storedFiles(repo.location, 'snapshots')).toContain(`snapshots/${keptAlone.id}`);
      const listed = await runCli(['snapshots', '--json'], { env: repo.env });
      expectExit(listed, 0);
      const ids = (JSON.parse(listed.stdout.toString()) as { id: string }[]).map((snapshot) => snapshot.id);
      expect(ids).not.toContain(keptAlone.id);
      expect(ids).toHaveLength(kept.size - 1);

      const pruned = await runCli(['prune', '--json'], { env: repo.env });
      expectExit(pruned, 0);
      const result = JSON.parse(pruned.stdout.toString()) as PruneResult;
      // Its packs go as well as those of the snapshots forgotten before.
      expect(result.packs.deleted).toBeGreaterThan(planned.packs.deleted);
      expect(await storedFiles(repo.location, 'snapshots')).not.toContain(`snapshots/${keptAlone.id}`);
      expectExit(await runCli(['check', '--read-data'], { env: repo.env }), 0);
      const last = await repo.open();
      try {
        await expectReadsBack(last, new Map([...kept].filter(([id]) => id !== keptAlone.id)));
      } finally {
        await last.close();
      }
    } finally {
      await repo.cleanup();
    }
  });
});
