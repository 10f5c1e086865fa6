import { existsSync } from 'node:fs';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { initCluster, LOADING_SETTINGS, withCluster, type Cluster } from './cluster.ts';
import { PASSWORD, STREAM_NAME, strongboxCommand } from './contenders.ts';
import { DATABASE, type Dataset } from './dataset.ts';
import { fileSize, treeSize } from './files.ts';
import { run } from './process.ts';
import { REPOSITORY_VERSION } from '../src/repository/config.ts';

/** Raised whenever what the generator builds changes, so that an older cached history is not used. */
const GENERATOR_VERSION = 1;

export const HISTORY_DAYS = 30;

/** Thirty repositories' worth of days, all in one month so that day N is the Nth. */
const dayTime = (day: number) => `2026-10-${String(day).padStart(2, '0')}T02:00:00Z`;

/** The same 30 daily backups of the shop database in a strongbox and a restic repository. */
export interface History {
  strongbox: string;
  /** Absent when restic is not installed. */
  restic?: { repository: string; cache: string };
  manifest: HistoryManifest;
}

/** Written beside the repositories when they are complete. */
export interface HistoryManifest {
  days: number;
  /** The sum of the 30 dumps' sizes. */
  dumpBytes: number;
  strongboxBytes: number;
  resticBytes?: number;
  buildSeconds: number;
}

export interface HistoryBench {
  cli: string;
  cacheDir: string;
  dataset: Dataset;
  sqlDir: string;
  withRestic: boolean;
  log: (line: string) => void;
}

/**
 * restic takes `--time` in the local time zone and counts its calendar buckets in it; strongbox
 * counts in UTC. TZ=UTC makes the two agree on which day each backup belongs to.
 */
export function resticEnv(repository: string, cache: string): Record<string, string> {
  return { RESTIC_REPOSITORY: repository, RESTIC_PASSWORD: PASSWORD, RESTIC_CACHE_DIR: cache, TZ: 'UTC' };
}

/** restic's cache is kept with its repository: the machine that made the backups has it warm. */
function historyPaths(dir: string): Required<Omit<History, 'manifest'>> {
  return {
    strongbox: path.join(dir, 'strongbox'),
    restic: { repository: path.join(dir, 'restic'), cache: path.join(dir, 'restic-cache') },
  };
}

/**
 * The cached history of the dataset's scale, built first if missing (or if it lacks the restic
 * repository and restic is now installed). Keyed by the repository format too: a format change
 * makes the old strongbox repository unreadable.
 */
export async function ensureHistory(bench: HistoryBench): Promise<History> {
  const key = `history-scale${bench.dataset.scale}-v${GENERATOR_VERSION}-format${REPOSITORY_VERSION}`;
  const dir = path.join(bench.cacheDir, key);
  const manifestFile = path.join(dir, 'history.json');
  const complete = existsSync(manifestFile) && (!bench.withRestic || existsSync(path.join(dir, 'restic')));
  if (!complete) {
    bench.log(`building ${HISTORY_DAYS} days of backups in ${dir} (~11 min at scale 10)`);
    await build(dir, bench);
  }
  const { strongbox, restic } = historyPaths(dir);
  const manifest = JSON.parse(await readFile(manifestFile, 'utf8')) as HistoryManifest;
  return { strongbox, ...(manifest.resticBytes === undefined ? {} : { restic }), manifest };
}

/** Built under a temporary name and renamed once complete, so an interrupted build starts over. */
async function build(dir: string, bench: HistoryBench): Promise<void> {
  const started = performance.now();
  const partial = `${dir}.partial`;
  await rm(dir, { recursive: true, force: true });
  await rm(partial, { recursive: true, force: true });
  await mkdir(partial, { recursive: true });
  const history = historyPaths(partial);
  const restic = bench.withRestic ? history.restic : undefined;
  // Its own state directory, so that the user's knows nothing of a repository copied and pruned later.
  const strongboxEnv = { STRONGBOX_STATE_DIR: path.join(partial, 'strongbox-state') };
  const strongbox = (args: string[]) => strongboxCommand(bench.cli, history.strongbox, args, strongboxEnv);
  await run(strongbox(['init']));
  if (restic)
    await run({ command: 'restic', args: ['init'], env: resticEnv(restic.repository, restic.cache) });

  const dataDir = path.join(partial, 'pgdata');
  const dump = path.join(partial, 'day.dump');
  let dumpBytes = 0;
  await initCluster(dataDir);
  await withCluster(dataDir, [...LOADING_SETTINGS, 'autovacuum=off'], async (cluster) => {
    bench.log('history: restoring the before dump into a throwaway cluster');
    await cluster.createDatabase(DATABASE);
    await run(cluster.client('pg_restore', DATABASE, ['-j', '2', bench.dataset.before]));
    await vacuum(cluster);
    for (let day = 1; day <= HISTORY_DAYS; day++) {
      bench.log(`history day ${day}/${HISTORY_DAYS}`);
      await cluster.psqlFile(DATABASE, path.join(bench.sqlDir, 'day.sql'), { scale: bench.dataset.scale });
      await vacuum(cluster);
      await run(cluster.client('pg_dump', DATABASE, ['-Fc', '-Z0', '-f', dump]));
      dumpBytes += await fileSize(dump);
      const time = dayTime(day);
      await run(strongbox(['backup', 'stdin', '--name', STREAM_NAME, '--time', time]), { stdinFile: dump });
      if (restic) {
        const args = [
          'backup',
          '--stdin',
          '--stdin-filename',
          STREAM_NAME,
          '--time',
          time.replace('T', ' ').slice(0, 19),
        ];
        await run(
          { command: 'restic', args, env: resticEnv(restic.repository, restic.cache) },
          { stdinFile: dump },
        );
      }
      await rm(dump);
    }
  });
  await rm(dataDir, { recursive: true, force: true });
  await rm(strongboxEnv.STRONGBOX_STATE_DIR, { recursive: true, force: true });

  const manifest: HistoryManifest = {
    days: HISTORY_DAYS,
    dumpBytes,
    strongboxBytes: await treeSize(history.strongbox),
    ...(restic ? { resticBytes: await treeSize(restic.repository) } : {}),
    buildSeconds: (performance.now() - started) / 1000,
  };
  await writeFile(path.join(partial, 'history.json'), JSON.stringify(manifest, null, 2) + '\n');
  await rename(partial, dir);
}

/**
 * A nightly VACUUM, as autovacuum would do on a live server at moments no run controls: it fills
 * the free space map, so the next day's rows land in the space the deletes freed.
 */
async function vacuum(cluster: Cluster): Promise<void> {
  await cluster.sql(DATABASE, 'VACUUM (ANALYZE)');
}
