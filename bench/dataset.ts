import { existsSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { initCluster, LOADING_SETTINGS, type Cluster, withCluster } from './cluster.ts';
import { run } from './process.ts';

export const DATABASE = 'shop';

/** The two dumps of one scale and the cluster they came from, which stays after the day's writes. */
export interface Dataset {
  scale: string;
  before: string;
  after: string;
  dataDir: string;
}

function datasetPaths(cacheDir: string, scale: string): Dataset {
  const base = path.join(cacheDir, `shop-scale${scale}`);
  return { scale, before: `${base}-before.dump`, after: `${base}-after.dump`, dataDir: `${base}-pgdata` };
}

const partial = (file: string) => `${file}.partial`;

async function dumpTo(cluster: Cluster, file: string): Promise<void> {
  await run(cluster.client('pg_dump', DATABASE, ['-Fc', '-Z0', '-f', file]));
}

/**
 * Builds the dataset under temporary names and renames them only once all three exist, so a
 * build that is interrupted is started again rather than half used.
 */
async function build(dataset: Dataset, sqlDir: string, log: (line: string) => void): Promise<void> {
  const targets = [dataset.before, dataset.after, dataset.dataDir];
  await Promise.all(
    targets
      .flatMap((target) => [target, partial(target)])
      .map((file) => rm(file, { recursive: true, force: true })),
  );
  await initCluster(partial(dataset.dataDir));
  await withCluster(partial(dataset.dataDir), LOADING_SETTINGS, async (cluster) => {
    await cluster.createDatabase(DATABASE);
    log(`loading dataset.sql at scale ${dataset.scale}`);
    await cluster.psqlFile(DATABASE, path.join(sqlDir, 'dataset.sql'), { scale: dataset.scale });
    await dumpTo(cluster, partial(dataset.before));
    log('applying day.sql');
    await cluster.psqlFile(DATABASE, path.join(sqlDir, 'day.sql'), { scale: dataset.scale });
    await dumpTo(cluster, partial(dataset.after));
  });
  for (const target of targets) await rename(partial(target), target);
}

/** The cached dataset, built first if any part of it is missing. */
export async function ensureDataset(
  cacheDir: string,
  scale: string,
  sqlDir: string,
  log: (line: string) => void,
): Promise<Dataset> {
  const dataset = datasetPaths(cacheDir, scale);
  if (![dataset.before, dataset.after, dataset.dataDir].every((target) => existsSync(target))) {
    log(`building the scale ${scale} dataset in ${cacheDir} (a few minutes at scale 10)`);
    await build(dataset, sqlDir, log);
  }
  return dataset;
}
