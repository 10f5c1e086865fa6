import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { initCluster, withCluster, type Cluster } from './cluster.ts';
import {
  pgDumpOf,
  pipe,
  restic,
  strongbox,
  type BackupRun,
  type Contender,
  type StrongboxContender,
  type TwoBackups,
} from './contenders.ts';
import { DATABASE, type Dataset } from './dataset.ts';
import { warmTree } from './files.ts';
import { measure, run, type Measurement } from './process.ts';
import type { Outcome } from './rows.ts';
import { missingBaselines } from './tools.ts';
import { copyViewRows, type ViewName } from '../src/postgres/logical/schema-fingerprint.ts';
import { POPULATED_MATERIALIZED_VIEWS, SCHEMA_FINGERPRINT } from '../src/postgres/logical/schema-queries.ts';

/** `strongbox backup postgres` and `restore` against a live database, beside PostgreSQL's own tools. */
export interface PostgresResults {
  /** `pg_dump -Fc -Z0 > /dev/null` of the database in its before state. */
  pgDump: Measurement;
  /**
   * `pg_dump -Fc -Z0 | zstd -1 > /dev/null`: what compressing the dump at zstd's level (strongbox
   * stores at level 1) costs on its own, before any hashing, encryption or writing.
   */
  pgDumpZstd: Outcome<Measurement>;
  /** `strongbox backup postgres` before and after day.sql, into one repository. */
  strongbox: TwoBackups;
  /** `pg_dump -Fc -Z0 | restic backup --stdin` of the same two states. */
  restic: Outcome<TwoBackups>;
  restores: Restores;
  /**
   * What a backup adds to pg_dump's reading for its schema fingerprint (SCHEMA_FINGERPRINT and
   * every populated materialized view's rows, each a psql run here), median of three: compared
   * with the 1st backup's wall time, whose share of it must stay within 2 %.
   */
  schemaFingerprintSeconds: number;
}

/** Restores of the before state, each into a new database. */
export interface Restores {
  /** `strongbox restore latest --jobs 2`: two pg_restore runs at a time, every table verified. */
  strongbox: Measurement;
  /** `pg_restore -j 2` of the before dump, createdb included. */
  pgRestoreParallel: Measurement;
  /**
   * The same, then every table read back (`COPY … TO STDOUT` through psql, two at a time): the
   * least a restore whose result is compared with the backup row by row must do.
   */
  pgRestoreReadBack: Measurement;
  /** Serial `pg_restore` of the before dump, createdb included. */
  pgRestoreSerial: Measurement;
}

export interface PostgresBench {
  cli: string;
  dataset: Dataset;
  sqlDir: string;
  /** Removed by the caller afterwards. */
  workDir: string;
  log: (line: string) => void;
}

/**
 * Autovacuum would start on the freshly written tables at moments no run controls and take one of
 * the 2 cores from whatever is being timed; the harness vacuums each state itself instead.
 */
export const SCRATCH_SETTINGS = ['autovacuum=off'];

/**
 * The cached cluster already holds the state after day.sql, and must stay so. The before state is
 * built instead in a throwaway cluster from the before dump: no copy of the cached data directory
 * (mostly WAL left from loading), and the cache is never written to.
 */
export async function measurePostgres(bench: PostgresBench): Promise<PostgresResults> {
  const dataDir = path.join(bench.workDir, 'pgdata');
  await initCluster(dataDir);
  try {
    return await withCluster(dataDir, SCRATCH_SETTINGS, (cluster) => measureOn(cluster, bench));
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

async function measureOn(cluster: Cluster, bench: PostgresBench): Promise<PostgresResults> {
  const { dataset, log } = bench;
  log('postgres: restoring the before dump into a throwaway cluster');
  await loadBeforeState(cluster, dataset.before);
  log(`postgres: pg_dump (${TIMED_RUNS} runs)`);
  const pgDumps: Measurement[] = [];
  for (let run = 0; run < TIMED_RUNS; run++)
    pgDumps.push(await measure(pgDumpOf(cluster), { discardStdout: true }));
  const pgDump = typical(pgDumps, pgDumps[0]!);
  const zstdMissing = missingBaselines(['zstd']);
  let pgDumpZstd: Outcome<Measurement> = { missing: zstdMissing ?? '' };
  if (!zstdMissing) {
    log(`postgres: pg_dump | zstd -1 (${TIMED_RUNS} runs)`);
    const runs: Measurement[] = [];
    for (let run = 0; run < TIMED_RUNS; run++)
      runs.push(await measure(pipe(pgDumpOf(cluster), 'zstd -1 -q > /dev/null')));
    pgDumpZstd = { ok: typical(runs, runs[0]!) };
  }

  log(`postgres: schema fingerprint (${TIMED_RUNS} runs)`);
  const fingerprints: number[] = [];
  for (let run = 0; run < TIMED_RUNS; run++) fingerprints.push(await timeSchemaFingerprint(cluster));
  const schemaFingerprintSeconds = fingerprints.sort((a, b) => a - b)[Math.floor(TIMED_RUNS / 2)]!;

  const strongboxRepo = strongbox(bench.cli, bench.workDir);
  const missing = missingBaselines(['restic']);
  const resticRepo: Outcome<Contender> = missing ? { missing } : { ok: restic(bench.workDir) };
  const source = { cluster };
  await strongboxRepo.init();
  await ifPresent(resticRepo, (repo) => repo.init());

  log(`postgres: 1st backups (strongbox ${TIMED_RUNS} runs, pg_dump | restic)`);
  // The runs before the last go into repositories of their own, removed once timed; the last
  // into the one the 2nd backup continues.
  const trials: BackupRun[] = [];
  for (let trial = 1; trial < TIMED_RUNS; trial++) {
    const dir = path.join(bench.workDir, `strongbox-trial-${trial}`);
    await mkdir(dir, { recursive: true });
    const repo = strongbox(bench.cli, dir);
    await repo.init();
    trials.push(await repo.backup(source));
    await rm(dir, { recursive: true, force: true });
  }
  const lastStrongbox = await strongboxRepo.backup(source);
  const firstStrongbox = typical([...trials, lastStrongbox], lastStrongbox);
  const firstRestic = await ifPresent(resticRepo, (repo) => repo.backup(source));
  const restores = await measureRestores(cluster, strongboxRepo, dataset.before, log);
  log('postgres: applying day.sql');
  await cluster.psqlFile(DATABASE, path.join(bench.sqlDir, 'day.sql'), { scale: dataset.scale });
  await settle(cluster);
  log('postgres: 2nd backups');
  const secondStrongbox = await strongboxRepo.backup(source);
  const secondRestic = await ifPresent(resticRepo, (repo) => repo.backup(source));

  return {
    pgDump,
    pgDumpZstd,
    strongbox: { first: firstStrongbox, second: secondStrongbox },
    restic: pairOf(firstRestic, secondRestic),
    restores,
    schemaFingerprintSeconds,
  };
}

/** The catalog query of the schema fingerprint, then each populated materialized view's rows read. */
async function timeSchemaFingerprint(cluster: Cluster): Promise<number> {
  const started = performance.now();
  const psql = (sql: string) => cluster.client('psql', DATABASE, ['-X', '-At', '-c', sql]);
  await run(psql(SCHEMA_FINGERPRINT), { discardStdout: true });
  const views = JSON.parse(await run(psql(POPULATED_MATERIALIZED_VIEWS))) as ViewName[];
  for (const view of views) await run(psql(copyViewRows(view)), { discardStdout: true });
  return (performance.now() - started) / 1000;
}

/**
 * Runs of the wall times compared with a goal: this machine's other load moves a single run by
 * a tenth either way, so each side's median of three is taken.
 */
export const TIMED_RUNS = 3;

/** `kept` (a run whose output is used) with the median wall time of `runs` and their highest peak memory. */
export function typical<T extends Measurement>(runs: T[], kept: T): T {
  const seconds = runs.map((run) => run.seconds).sort((a, b) => a - b);
  return {
    ...kept,
    seconds: seconds[Math.floor(seconds.length / 2)]!,
    maxRssBytes: Math.max(...runs.map((run) => run.maxRssBytes)),
  };
}

export async function loadBeforeState(cluster: Cluster, dump: string): Promise<void> {
  await cluster.createDatabase(DATABASE);
  await run(cluster.client('pg_restore', DATABASE, ['-j', '2', dump]));
  await settle(cluster);
  await warmTree(path.join(cluster.dataDir, 'base'));
}

/** Runs `action` on a baseline that is installed, or passes on why it is not. */
async function ifPresent<T, R>(outcome: Outcome<T>, action: (ok: T) => Promise<R>): Promise<Outcome<R>> {
  return 'ok' in outcome ? { ok: await action(outcome.ok) } : outcome;
}

function pairOf(first: Outcome<BackupRun>, second: Outcome<BackupRun>): Outcome<TwoBackups> {
  if ('missing' in first) return first;
  if ('missing' in second) return second;
  return { ok: { first: first.ok, second: second.ok } };
}

/**
 * Vacuums and checkpoints, so that no timed command pays for the last writes: hint bits and the
 * visibility map on the first read, dirty buffers flushed in the middle of a restore. The vacuum
 * also fills the free space map, which pg_restore's COPY leaves empty: without it day.sql would
 * append its new rows to the ends of the tables instead of scattering them into free space across
 * them, as it did in the cluster built from dataset.sql, and the 2nd backup would store less.
 */
async function settle(cluster: Cluster): Promise<void> {
  await cluster.sql(DATABASE, 'VACUUM (ANALYZE)');
  await cluster.sql(DATABASE, 'CHECKPOINT');
}

async function measureRestores(
  cluster: Cluster,
  strongboxRepo: StrongboxContender,
  dump: string,
  log: (line: string) => void,
): Promise<Restores> {
  log('postgres: strongbox restore latest');
  const strongboxRun = await intoNewDatabase(cluster, 'shop_strongbox', (database) =>
    strongboxRepo.restore(cluster, database),
  );
  log('postgres: pg_restore -j 2');
  const parallel = await intoNewDatabase(cluster, 'shop_pg_restore_j2', (database) =>
    pgRestore(cluster, database, ['-j', '2', dump]),
  );
  log('postgres: pg_restore -j 2, then every table read back');
  const readBack = await intoNewDatabase(cluster, 'shop_read_back', async (database) => {
    const restored = await pgRestore(cluster, database, ['-j', '2', dump]);
    const started = performance.now();
    await readEveryTable(cluster, database);
    return { ...restored, seconds: restored.seconds + (performance.now() - started) / 1000 };
  });
  log('postgres: pg_restore (serial)');
  const serial = await intoNewDatabase(cluster, 'shop_pg_restore', (database) =>
    pgRestore(cluster, database, [dump]),
  );
  return {
    strongbox: strongboxRun,
    pgRestoreParallel: parallel,
    pgRestoreReadBack: readBack,
    pgRestoreSerial: serial,
  };
}

/**
 * Times one restore into `database` and drops the database afterwards. Each starts with nothing
 * left to write, in PostgreSQL's buffers or the kernel's, by whatever ran before it.
 */
export async function intoNewDatabase(
  cluster: Cluster,
  database: string,
  restore: (database: string) => Promise<Measurement>,
): Promise<Measurement> {
  await cluster.sql(DATABASE, 'CHECKPOINT');
  await run({ command: 'sync', args: [] });
  try {
    return await restore(database);
  } finally {
    await cluster.dropDatabaseIfExists(database);
  }
}

/** createdb, then pg_restore: both timed, as `strongbox restore` creates the database too. */
async function pgRestore(cluster: Cluster, database: string, args: string[]): Promise<Measurement> {
  const created = await measure(cluster.program('createdb', [database]));
  const restored = await measure(cluster.client('pg_restore', database, args));
  return { ...restored, seconds: created.seconds + restored.seconds };
}

/** Every ordinary table of `database` read through `COPY … TO STDOUT` and thrown away, two at a time, largest first. */
async function readEveryTable(cluster: Cluster, database: string): Promise<void> {
  const listed = await run(
    cluster.client('psql', database, [
      '-X',
      '-At',
      '-c',
      `select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where c.relkind = 'r' and n.nspname not in ('pg_catalog', 'information_schema')
       order by pg_relation_size(c.oid) desc`,
    ]),
  );
  const tables = listed.trim().split('\n').filter(Boolean);
  const lane = async () => {
    for (let table = tables.shift(); table; table = tables.shift())
      await run(cluster.client('psql', database, ['-X', '-c', `copy ${table} to stdout`]), {
        discardStdout: true,
      });
  };
  await Promise.all([lane(), lane()]);
}
