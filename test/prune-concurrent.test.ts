import { afterEach, describe, expect, it } from 'vitest';
import { initRepository, type BackupResult } from '../src/index.ts';
import type { PruneResult } from '../src/ops/prune.ts';
import { expectExit, runCli } from './helpers/cli.ts';
import { seededBytes } from './helpers/data.ts';
import {
  emptyCliRepo,
  expectReadsBack,
  feed,
  SMALL,
  start,
  storedFiles,
  waitUntil,
  type CliRepo,
  type Running,
} from './helpers/prune-repo.ts';
import { backupBuffer, PASSWORD } from './helpers/repo.ts';

/**
 * The real `strongbox prune` beside real `strongbox backup stdin` processes, whose input the test
 * feeds itself so that it decides when each runs. A backup that began before the plan may
 * deduplicate onto the packs the plan condemns: prune waits for it, deleting nothing meanwhile,
 * and copies out what it used. A backup that begins after the plan reads it and stores those
 * bytes again. `--no-wait` leaves the plan for the next prune. Every snapshot kept or written
 * meanwhile reads back byte for byte, and `check --read-data` passes.
 */

interface History {
  repo: CliRepo;
  /** The content of the removed snapshot: only condemned packs hold it. */
  removed: Buffer;
  kept: Map<string, Buffer>;
}

let history: History | undefined;
const running: Running[] = [];

afterEach(async () => {
  for (const started of running.splice(0)) {
    if (!started.hasExited()) started.child.kill('SIGKILL');
    await started.closed;
  }
  await history?.repo.cleanup();
  history = undefined;
});

/** A repository with a kept snapshot, and a removed one whose packs the next prune deletes. */
async function makeHistory(): Promise<History> {
  const repo = await emptyCliRepo();
  const repository = await initRepository({
    repo: repo.location,
    passphrase: PASSWORD,
    stateDirectory: repo.env.STRONGBOX_STATE_DIR,
    ...SMALL,
  });
  try {
    const keptData = seededBytes('kept', 1_000_000);
    const kept = new Map([[(await backupBuffer(repository, keptData, 'kept.bin')).snapshot, keptData]]);
    const removed = seededBytes('removed', 1_500_000);
    const { snapshot } = await backupBuffer(repository, removed, 'removed.bin');
    await repository.removeSnapshots([snapshot], 'forget');
    return { repo, removed, kept };
  } finally {
    await repository.close();
  }
}

function startStrongbox(args: string[], env: Record<string, string>, feedInput = false): Running {
  const started = start(args, env, { stdout: 'pipe', ...(feedInput ? { stdin: 'pipe' } : {}) });
  running.push(started);
  return started;
}

/** Waits for a new lock beside `held`, and returns its name. */
async function newLock(repo: CliRepo, held: Set<string>, holder: Running): Promise<string> {
  let found: string | undefined;
  const outcome = await waitUntil(
    'a new lock is taken',
    async () => {
      found = [...(await storedFiles(repo.location, 'locks'))].find((name) => !held.has(name));
      return found !== undefined;
    },
    holder,
  );
  if (outcome === 'exited') throw new Error(`it ended before taking its lock: ${holder.stderr()}`);
  return found!;
}

/** Waits until a plan of the prune names `lock` among the writers it waits for. */
async function planWaitingFor(repo: CliRepo, lock: string, pruning: Running): Promise<void> {
  const reader = await repo.open();
  try {
    const outcome = await waitUntil(
      `the plan waits for ${lock}`,
      async () =>
        (await reader.records.prunePlans()).trusted.some((plan) => plan.value.waitFor?.includes(lock)),
      pruning,
    );
    if (outcome === 'exited') throw new Error(`prune ended before its plan waited: ${pruning.stderr()}`);
  } finally {
    await reader.close();
  }
}

async function exitsWith(strongbox: Running, code: number): Promise<void> {
  const closed = await strongbox.closed;
  expect(closed.code, strongbox.stderr()).toBe(code);
}

async function expectEverythingReadsBack(repo: CliRepo, snapshots: Map<string, Buffer>): Promise<void> {
  const session = await repo.open();
  try {
    await expectReadsBack(session, snapshots);
  } finally {
    await session.close();
  }
  const checked = await runCli(['check', '--read-data'], { env: repo.env });
  expectExit(checked, 0);
  expect(checked.stderr).toMatch(/no errors were found/);
}

describe('prune beside running backups', () => {
  it('waits for a backup that began before its plan, which deduplicates onto condemned packs', async () => {
    history = await makeHistory();
    const { repo, removed } = history;
    const fresh = seededBytes('fresh', 500_000);
    const backup = startStrongbox(['backup', 'stdin', '--name', 'during.bin', '--json'], repo.env, true);
    const spawned = Date.now();
    const backupLock = await newLock(repo, new Set(), backup);
    console.log(`a backup with no prune running took its lock ${Date.now() - spawned} ms after it started`);
    // Taken by the pipe once the backup reads: it is past its lock, the plans and the index.
    await feed(backup, removed.subarray(0, 1_000_000));
    const packs = await storedFiles(repo.location, 'data');

    const pruning = startStrongbox(['prune', '--json'], repo.env);
    await planWaitingFor(repo, backupLock, pruning);
    expect(pruning.hasExited()).toBe(false);
    const stored = await storedFiles(repo.location, 'data');
    expect(
      [...packs].filter((pack) => !stored.has(pack)),
      'packs deleted while the backup runs',
    ).toEqual([]);

    await feed(backup, Buffer.concat([removed.subarray(1_000_000), fresh]));
    backup.child.stdin!.end();
    await exitsWith(backup, 0);
    await exitsWith(pruning, 0);
    const written = JSON.parse(backup.stdout()) as BackupResult;
    // The removed snapshot's bytes were deduplicated: only the fresh ones are new.
    expect(written.bytesNew).toBeLessThan(fresh.length + 100_000);
    const result = JSON.parse(pruning.stdout()) as PruneResult;
    expect(result.outcome).toBe('done');
    // What the backup deduplicated onto stayed: the packs the plan found unused are spared whole
    // rather than copied out.
    expect(result.packs.spared).toBeGreaterThan(0);
    expect(result.waitedMs).toBeGreaterThan(0);

    await expectEverythingReadsBack(
      repo,
      new Map([...history.kept, [written.snapshot, Buffer.concat([removed, fresh])]]),
    );
  });

  it('keeps a backup that begins after its plan off the condemned packs, while it waits for an earlier writer', async () => {
    history = await makeHistory();
    const { repo, removed } = history;
    const early = startStrongbox(['backup', 'stdin', '--name', 'early.bin', '--json'], repo.env, true);
    const earlyLock = await newLock(repo, new Set(), early);
    const pruning = startStrongbox(['prune', '--json'], repo.env);
    await planWaitingFor(repo, earlyLock, pruning);

    const fresh = seededBytes('late fresh', 500_000);
    const locks = await storedFiles(repo.location, 'locks');
    const late = startStrongbox(['backup', 'stdin', '--name', 'late.bin', '--json'], repo.env, true);
    const spawned = Date.now();
    await newLock(repo, locks, late);
    console.log(
      `a backup started while prune waits took its lock ${Date.now() - spawned} ms after it started`,
    );
    await feed(late, Buffer.concat([removed, fresh]));
    late.child.stdin!.end();
    await exitsWith(late, 0);
    const written = JSON.parse(late.stdout()) as BackupResult;
    // It read the plan: the bytes only condemned packs hold were stored again, not deduplicated.
    expect(written.bytesNew).toBeGreaterThanOrEqual(removed.length + fresh.length);
    expect(pruning.hasExited(), 'prune still waits for the earlier writer').toBe(false);

    early.child.stdin!.end('early\n');
    await exitsWith(early, 0);
    await exitsWith(pruning, 0);
    const result = JSON.parse(pruning.stdout()) as PruneResult;
    expect(result.outcome).toBe('done');
    expect(result.packs.deleted).toBeGreaterThan(0);
    // Nothing needed copying out of the condemned packs: no snapshot used them.
    expect(result.bytes.written).toBe(0);

    const earlySnapshot = (JSON.parse(early.stdout()) as BackupResult).snapshot;
    await expectEverythingReadsBack(
      repo,
      new Map([
        ...history.kept,
        [written.snapshot, Buffer.concat([removed, fresh])],
        [earlySnapshot, Buffer.from('early\n')],
      ]),
    );
  });

  it('prune --no-wait leaves its plan while a backup runs, and the next prune finishes it', async () => {
    history = await makeHistory();
    const { repo } = history;
    const backup = startStrongbox(['backup', 'stdin', '--name', 'held.bin', '--json'], repo.env, true);
    await newLock(repo, new Set(), backup);
    const packs = await storedFiles(repo.location, 'data');

    const left = await runCli(['prune', '--no-wait'], { env: repo.env });
    expectExit(left, 0);
    expect(left.stderr).toMatch(/the plan is written and waits for backups that began before it/);
    expect((await storedFiles(repo.location, 'prune')).size).toBe(1);
    expect(await storedFiles(repo.location, 'data')).toEqual(packs);

    backup.child.stdin!.end('held\n');
    await exitsWith(backup, 0);
    const finished = await runCli(['prune', '--json'], { env: repo.env });
    expectExit(finished, 0);
    const result = JSON.parse(finished.stdout.toString()) as PruneResult;
    expect(result.resumedPlans).toBe(1);
    expect(result.outcome).toBe('done');
    expect(result.packs.deleted).toBeGreaterThan(0);
    expect((await storedFiles(repo.location, 'prune')).size).toBe(0);

    const held = (JSON.parse(backup.stdout()) as BackupResult).snapshot;
    await expectEverythingReadsBack(repo, new Map([...history.kept, [held, Buffer.from('held\n')]]));
  });
});
