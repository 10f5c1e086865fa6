import path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, stdinSource } from '../src/index.ts';
import { forget } from '../src/ops/forget.ts';
import { expectExit, runCli } from './helpers/cli.ts';
import { createTestRepo, PASSWORD, type TestRepo } from './helpers/repo.ts';

/**
 * `forget` on real repositories: the CLI with dates set by `backup --time`, the local state of
 * another client that must not report forgotten snapshots as deleted, pins by tag, named policies
 * by environment, and a year of daily snapshots under the seeds' 7 daily, 4 weekly and 12 monthly.
 */

let repo: TestRepo;
beforeAll(async () => {
  repo = await createTestRepo();
});
afterAll(async () => {
  await repo.repository.close();
  await repo.cleanup();
});

function env(state = 'cli-state') {
  return {
    STRONGBOX_REPO: repo.location,
    STRONGBOX_PASSWORD: PASSWORD,
    STRONGBOX_STATE_DIR: path.join(repo.dir, state),
  };
}

async function backupAt(day: string, extra: string[] = []): Promise<string> {
  const result = await runCli(
    ['backup', 'stdin', '--name', 'db.dump', '--time', `${day}T02:00:00Z`, '--json', ...extra],
    { env: env(), input: `dump of ${day} ${extra.join(' ')}` },
  );
  expectExit(result, 0);
  return (JSON.parse(String(result.stdout)) as { snapshot: string }).snapshot;
}

async function listed(envVars = env()): Promise<{ id: string; time: string; tags: string[] }[]> {
  const result = await runCli(['snapshots', '--json'], { env: envVars });
  expectExit(result, 0);
  return JSON.parse(String(result.stdout)) as { id: string; time: string; tags: string[] }[];
}

describe('forget', () => {
  it('keeps what the policy keeps, says why, and other clients do not take the rest for deleted', async () => {
    const ids = new Map<string, string>();
    for (let day = 1; day <= 10; day++) {
      const date = `2026-11-${String(day).padStart(2, '0')}`;
      ids.set(date, await backupAt(date));
    }
    // Another client lists them all before the forget.
    expect(await listed(env('other-client'))).toHaveLength(10);
    const dry = await runCli(['forget', '--keep-daily', '3', '--keep-weekly', '2', '--dry-run', '--json'], {
      env: env(),
    });
    expectExit(dry, 0);
    const plan = JSON.parse(String(dry.stdout)) as {
      groups: { keep: { id: string; reasons: string[] }[] }[];
      removed: string[];
    };
    const keep = plan.groups[0]!.keep;
    // 2026-11-08 is a Sunday: the newest of its ISO week.
    expect(keep.map((snapshot) => snapshot.id)).toEqual([
      ids.get('2026-11-10'),
      ids.get('2026-11-09'),
      ids.get('2026-11-08'),
    ]);
    expect(keep[0]!.reasons).toEqual(['daily', 'weekly']);
    expect(keep[2]!.reasons).toEqual(['daily', 'weekly']);
    expect(plan.removed).toHaveLength(7);
    expect(await listed()).toHaveLength(10);

    const real = await runCli(['forget', '--keep-daily', '3', '--keep-weekly', '2'], { env: env() });
    expectExit(real, 0);
    expect(String(real.stdout) + String(real.stderr)).toMatch(/removed 7 snapshots, kept 3/);
    expect((await listed()).map((snapshot) => snapshot.id).sort()).toEqual(
      keep.map((snapshot) => snapshot.id).sort(),
    );
    const other = await runCli(['snapshots'], { env: env('other-client') });
    expectExit(other, 0);
    expect(String(other.stdout) + String(other.stderr)).not.toMatch(/disappeared/);
    expectExit(await runCli(['check'], { env: env('other-client') }), 0);
    // forget --dry-run --prune counts what the forget would remove as gone.
    const preview = await runCli(['forget', '--keep-last', '1', '--dry-run', '--prune', '--json'], {
      env: env(),
    });
    expectExit(preview, 0);
    const previewed = JSON.parse(String(preview.stdout)) as {
      removed: string[];
      prune: { packs: { deleted: number } };
    };
    expect(previewed.removed).toHaveLength(2);
    expect(previewed.prune.packs.deleted).toBeGreaterThanOrEqual(7 + 2);
    expectExit(await runCli(['prune'], { env: env() }), 0);
    expectExit(await runCli(['check', '--read-data'], { env: env('other-client') }), 0);
  });

  it('refuses an empty policy, keeps pinned snapshots, and applies a named policy to its environment only', async () => {
    expectExit(await runCli(['forget'], { env: env() }), 3);
    const pinned = await backupAt('2026-01-01', ['--env', 'staging']);
    const old = await backupAt('2026-01-02', ['--env', 'staging']);
    const recent = await backupAt('2026-11-20', ['--env', 'staging']);
    const tagged = await runCli(['tag', pinned.slice(0, 8), '--add', 'keep', '--json'], { env: env() });
    expectExit(tagged, 0);
    const pinnedNow = (JSON.parse(String(tagged.stdout)) as { snapshot: string }).snapshot;
    // staging: within 14 days of the newest, and `keep` pins.
    const result = await runCli(['forget', '--policy', 'staging', '--keep-tag', 'keep', '--json'], {
      env: env(),
    });
    expectExit(result, 0);
    expect((JSON.parse(String(result.stdout)) as { removed: string[] }).removed).toEqual([old]);
    const left = (await listed()).map((snapshot) => snapshot.id);
    expect(left).toContain(pinnedNow);
    expect(left).toContain(recent);
    expect(left).not.toContain(old);
    // The production snapshots of the first test are untouched by the staging policy.
    expect(left.length).toBe(3 + 2);
  });

  it('after a key rotation, removals made before it are still not taken for deletions', async () => {
    const separate = await createTestRepo();
    const stateOf = (name: string) => path.join(separate.dir, name);
    const cli = (args: string[], password: string, state: string) =>
      runCli(args, {
        env: {
          STRONGBOX_REPO: separate.location,
          STRONGBOX_PASSWORD: password,
          STRONGBOX_STATE_DIR: stateOf(state),
        },
      });
    try {
      const source = stdinSource('db.dump', Readable.from([Buffer.from('old dump')]));
      const { snapshot } = await backup(separate.repository, source, { threads: 1 });
      expectExit(await cli(['snapshots'], PASSWORD, 'observer'), 0);
      await separate.repository.removeSnapshots([snapshot], 'forget');
      await separate.repository.rotate('the rotated password');
      const seen = await cli(['snapshots'], 'the rotated password', 'observer');
      expectExit(seen, 0);
      expect(String(seen.stdout) + String(seen.stderr)).not.toMatch(/disappeared|ignored removal record/);
      expectExit(await cli(['check'], 'the rotated password', 'observer'), 0);
    } finally {
      await separate.repository.close();
      await separate.cleanup();
    }
  });

  it('a year of daily snapshots under 7 daily, 4 weekly and 12 monthly leaves exactly the right ones', async () => {
    const year = await createTestRepo();
    try {
      // One real backup, then its snapshot written again under each day's time: the history a
      // year of nightly backups leaves, in seconds.
      const source = stdinSource('db.dump', Readable.from([Buffer.from('the dump')]));
      const first = await backup(year.repository, source, { threads: 1 });
      const { header, body } = await year.repository.loadSnapshot(first.snapshot);
      await year.repository.removeSnapshots([first.snapshot], 'forget');
      const start = Date.UTC(2025, 0, 1, 2);
      const byDay = new Map<string, string>();
      for (let day = 0; day < 365; day++) {
        const time = new Date(start + day * 86_400_000).toISOString();
        const { id } = await year.repository.saveSnapshot({ ...header, time }, body);
        byDay.set(time.slice(0, 10), id);
      }
      const result = await forget(year.repository, { policy: { daily: 7, weekly: 4, monthly: 12 } });
      const left = new Set((await year.repository.listSnapshots()).map((snapshot) => snapshot.id));
      // Worked out by hand: the last 7 days (Dec 25–31, 2025), the newest of the last 4 ISO weeks
      // (Sun Dec 14, Sun Dec 21, Sun Dec 28, and Wed Dec 31 of the week that runs on), and the
      // last day of each of the 12 months of 2025.
      const expected = [
        '2025-12-25',
        '2025-12-26',
        '2025-12-27',
        '2025-12-28',
        '2025-12-29',
        '2025-12-30',
        '2025-12-31',
        '2025-12-14',
        '2025-12-21',
        '2025-01-31',
        '2025-02-28',
        '2025-03-31',
        '2025-04-30',
        '2025-05-31',
        '2025-06-30',
        '2025-07-31',
        '2025-08-31',
        '2025-09-30',
        '2025-10-31',
        '2025-11-30',
      ];
      expect([...left].sort()).toEqual(expected.map((day) => byDay.get(day)!).sort());
      expect(result.removed).toHaveLength(365 - expected.length);
    } finally {
      await year.repository.close();
      await year.cleanup();
    }
  });
});
