import { randomBytes } from 'node:crypto';
import { readdirSync, watch } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { strongboxCommand } from './contenders.ts';
import type { Dataset } from './dataset.ts';
import { treeSize } from './files.ts';
import { ensureHistory, resticEnv, type HistoryManifest } from './history.ts';
import { measure, run, type CommandSpec, type Measurement } from './process.ts';
import type { Outcome } from './rows.ts';
import { missingBaselines } from './tools.ts';

/** The policy both tools apply to the 30 daily backups: it keeps 9 (Oct 24–30, and the 11th and 18th). */
export const KEEP_POLICY = ['--keep-daily', '7', '--keep-weekly', '4'];

/** Bytes of each small backup started during a prune: a few chunks, written in well under a second. */
const SMALL_BACKUP_BYTES = 8 * 1024 * 1024;

/**
 * The prune settings measured, the same for both tools. By default both tolerate 5 % of unused
 * space, which strongbox's history, storing ~0.5 % of a dump a day, may not reach: its prune then
 * deletes nothing. With none tolerated, both repack every pack holding a forgotten byte.
 */
export const PRUNE_SETTINGS = [
  { name: 'default', args: [] },
  { name: '--max-unused 0', args: ['--max-unused', '0'] },
] as const;

export type PruneSetting = (typeof PRUNE_SETTINGS)[number]['name'];

/** The prune setting of the prune a backup runs beside: the one with the most work, so the longest. */
const CONCURRENT_PRUNE = PRUNE_SETTINGS[1];

export interface RetentionResults {
  history: HistoryManifest;
  runs: RetentionRun[];
  backupsDuringPrune: BackupDuringPrune[];
}

/** Both tools, one prune setting, each on a copy of the history. */
export interface RetentionRun {
  setting: PruneSetting;
  strongbox: StrongboxRetention;
  /** `restic forget --prune` with the same policy and setting. */
  restic: Outcome<ResticRetention>;
}

/**
 * `strongbox forget --prune`, one process as restic's is; and on another copy `strongbox forget`
 * then `strongbox prune`, each timed on its own. Their `--json` reports are in `stdout`.
 */
export interface StrongboxRetention {
  sizeBefore: number;
  forgetPrune: Measurement;
  forget: Measurement;
  prune: Measurement;
  /** After `forget --prune`. */
  sizeAfter: number;
}

export interface ResticRetention {
  sizeBefore: number;
  forgetPrune: Measurement;
  sizeAfter: number;
}

/**
 * When, in a prune, the backup starts: as soon as the prune holds its lock (it is planning, so the
 * backup begins before the plan and the prune waits for it), or once it is repacking (the plan is
 * written: the backup must not deduplicate onto the packs it condemns).
 */
export const PRUNE_MOMENTS = ['planning', 'repacking'] as const;
export type PruneMoment = (typeof PRUNE_MOMENTS)[number];

/** A small `backup stdin` started while `prune` runs on the same repository, then one alone. */
export interface BackupDuringPrune {
  moment: PruneMoment;
  during: Measurement;
  alone: Measurement;
  prune: Measurement;
  /** Whether the prune was still running when the backup finished. */
  pruneOutlastedBackup: boolean;
}

export interface RetentionBench {
  cli: string;
  cacheDir: string;
  dataset: Dataset;
  sqlDir: string;
  /** Removed by the caller afterwards. */
  workDir: string;
  log: (line: string) => void;
}

export async function measureRetention(bench: RetentionBench): Promise<RetentionResults> {
  const resticMissing = missingBaselines(['restic']);
  const history = await ensureHistory({ ...bench, withRestic: !resticMissing });
  const copy = (from: string, name: string) => copyRepository(from, path.join(bench.workDir, name));
  // Each copy is another location: a state directory of the run's own keeps the user's untouched.
  const stateDir = path.join(bench.workDir, 'strongbox-state');
  const strongbox = (repository: string, args: string[], env: Record<string, string> = {}) =>
    strongboxCommand(bench.cli, repository, args, { ...env, STRONGBOX_STATE_DIR: stateDir });

  const runs: RetentionRun[] = [];
  for (const setting of PRUNE_SETTINGS) {
    bench.log(`retention: strongbox forget --prune (${setting.name})`);
    const strongboxRepo = await copy(history.strongbox, 'strongbox');
    const strongboxSizeBefore = await treeSize(strongboxRepo);
    const forgetPrune = await measure(
      strongbox(strongboxRepo, ['--json', 'forget', ...KEEP_POLICY, '--prune', ...setting.args]),
    );
    const strongboxSizeAfter = await treeSize(strongboxRepo);
    await rm(strongboxRepo, { recursive: true, force: true });
    bench.log(`retention: strongbox forget, then prune (${setting.name})`);
    const separateRepo = await copy(history.strongbox, 'strongbox');
    const forget = await measure(strongbox(separateRepo, ['--json', 'forget', ...KEEP_POLICY]));
    const prune = await measure(strongbox(separateRepo, ['--json', 'prune', ...setting.args]));
    await rm(separateRepo, { recursive: true, force: true });
    const strongboxRetention = {
      sizeBefore: strongboxSizeBefore,
      forgetPrune,
      forget,
      prune,
      sizeAfter: strongboxSizeAfter,
    };

    let restic: Outcome<ResticRetention> = { missing: resticMissing ?? '' };
    if (history.restic) {
      bench.log(`retention: restic forget --prune (${setting.name})`);
      const repository = await copy(history.restic.repository, 'restic');
      const cache = await copy(history.restic.cache, 'restic-cache');
      const sizeBefore = await treeSize(repository);
      const forgetPrune = await measure({
        command: 'restic',
        args: ['forget', ...KEEP_POLICY, '--prune', ...setting.args],
        env: resticEnv(repository, cache),
      });
      restic = { ok: { sizeBefore, forgetPrune, sizeAfter: await treeSize(repository) } };
      await rm(repository, { recursive: true, force: true });
      await rm(cache, { recursive: true, force: true });
    }
    runs.push({ setting: setting.name, strongbox: strongboxRetention, restic });
  }

  const backupsDuringPrune: BackupDuringPrune[] = [];
  for (const moment of PRUNE_MOMENTS) {
    bench.log(`retention: a backup started while prune ${CONCURRENT_PRUNE.name} is ${moment}`);
    const repository = await copy(history.strongbox, 'strongbox-concurrent');
    await run(strongbox(repository, ['forget', ...KEEP_POLICY]));
    backupsDuringPrune.push(await backupDuringPruneOf(repository, moment, bench.workDir, strongbox));
    await rm(repository, { recursive: true, force: true });
  }

  return { history: history.manifest, runs, backupsDuringPrune };
}

/** `cp -a`, then `sync`, so that no timed command pays for writing the copy back. */
async function copyRepository(from: string, to: string): Promise<string> {
  await run({ command: 'cp', args: ['-a', from, to] });
  await run({ command: 'sync', args: [] });
  return to;
}

async function backupDuringPruneOf(
  repository: string,
  moment: PruneMoment,
  workDir: string,
  strongbox: (repository: string, args: string[], env?: Record<string, string>) => CommandSpec,
): Promise<BackupDuringPrune> {
  // Fresh bytes for each backup, so that the second deduplicates nothing the first stored.
  const inputs = ['during', 'alone'].map((name) => path.join(workDir, `small-${name}.bin`));
  for (const input of inputs) await writeFile(input, randomBytes(SMALL_BACKUP_BYTES));
  const [duringInput, aloneInput] = inputs as [string, string];
  const backup = (input: string) =>
    measure(strongbox(repository, ['backup', 'stdin', '--name', 'small.bin']), { stdinFile: input });

  const locks = path.join(repository, 'locks');
  await mkdir(locks, { recursive: true });
  let pruneEnded = false;
  let pruneStderr = '';
  let repackingStarted = () => {};
  const repacking = new Promise<void>((resolve) => (repackingStarted = resolve));
  const pruning = measure(
    // Progress off a terminal is printed every interval: a short one tells when repacking begins.
    strongbox(repository, ['--json', 'prune', ...CONCURRENT_PRUNE.args], {
      STRONGBOX_PROGRESS_INTERVAL: '0.05',
    }),
    {
      onStderr: (text) => {
        pruneStderr += text;
        if (pruneStderr.includes('prune: repacking')) repackingStarted();
      },
    },
  ).finally(() => (pruneEnded = true));
  try {
    if (moment === 'planning') await firstLockIn(locks, pruning);
    else await beforeEnd(repacking, pruning, 'printing "repacking"');
    const during = await backup(duringInput);
    const pruneOutlastedBackup = !pruneEnded;
    const prune = await pruning;
    const alone = await backup(aloneInput);
    return { moment, during, alone, prune, pruneOutlastedBackup };
  } finally {
    await pruning.catch(() => undefined);
    for (const input of inputs) await rm(input, { force: true });
  }
}

/** `awaited`, or a failure if `running` ends first. */
function beforeEnd(awaited: Promise<void>, running: Promise<unknown>, what: string): Promise<void> {
  return Promise.race([
    awaited,
    running.then(() => {
      throw new Error(`prune ended without ${what}`);
    }),
  ]);
}

/**
 * Resolves once a file appears in `dir` (the prune's lock: the copy has none of its own), or
 * fails if `running` ends first. Any event counts: a quick prune's lock may be gone again by the
 * time it is handled.
 */
function firstLockIn(dir: string, running: Promise<unknown>): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const started = performance.now();
    const watcher = watch(dir);
    const finish = (error?: Error) => {
      watcher.close();
      if (error) reject(error);
      else resolve();
    };
    watcher.on('change', () => finish());
    watcher.on('error', finish);
    running.then(
      () => finish(new Error(`prune ended after ${elapsed(started)} without a lock appearing in ${dir}`)),
      (error: unknown) => finish(error instanceof Error ? error : new Error(String(error))),
    );
    // The lock may have been written before the watcher started.
    if (readdirSync(dir).length > 0) finish();
  });
}

const elapsed = (since: number) => `${((performance.now() - since) / 1000).toFixed(2)} s`;
