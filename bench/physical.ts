import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { setTimeout as delay } from 'node:timers/promises';
import { Cluster, initCluster, serverOwnedDir, withCluster } from './cluster.ts';
import { DATABASE, type Dataset } from './dataset.ts';
import { loadBeforeState, SCRATCH_SETTINGS } from './postgres.ts';
import { run, type CommandSpec, type Measurement } from './process.ts';

/**
 * A tool that takes physical backups of a cluster and archives its WAL. Each step runs for every
 * contender in turn, on the same cluster in the same state; strongbox joins the list passed to
 * measurePhysical once it has physical backups, `wal push` and point-in-time restore.
 */
export interface PhysicalContender {
  /** Its results are filed under this name: STRONGBOX's fill the strongbox column, PGBACKREST's the baseline. */
  name: string;
  /** Creates its repository for `cluster`, whose WAL it then archives. */
  init(cluster: Cluster): Promise<void>;
  /**
   * Archives one WAL segment, as an archive_command: `%p` (the segment's path, relative to the data
   * directory) and `%f` (its name) are put in as PostgreSQL does, and it runs as the server's user.
   */
  archiveCommand: string;
  /** A full backup, or an incremental one on top of the last, as the server's user. */
  backup(type: BackupType): Promise<Measurement>;
  /** The bytes its repository holds. */
  repositorySize(): Promise<number>;
  /**
   * Restores the latest backup into the empty `dataDir` (owned by the server's user), set up to
   * replay the archived WAL to its end once the server starts.
   */
  restore(dataDir: string): Promise<Measurement>;
  /** Stops what the restore left running for the replay (a daemon serving restore_command). */
  afterRestore?(): Promise<void>;
  /** Its ways of archiving WAL segments, each timed on the same captured segments. */
  walPushModes: WalPushMode[];
}

export type BackupType = 'full' | 'incremental';

export const STRONGBOX = 'strongbox';
export const PGBACKREST = 'pgBackRest';

export interface WalPushMode {
  /** Pairs the modes of the two tools in the table: 'sync' or 'async'. */
  name: string;
  /**
   * Whether the command may return before the segment is stored, having queued it (and the
   * segments waiting after it) for a process of its own: then it is also timed with every segment
   * waiting at once, and over the longer run.
   */
  queues: boolean;
  /**
   * Makes a fresh archive for `cluster`'s WAL, its files under `dir` (owned by the server's user),
   * and returns the archive_command that stores into it the segments of the data directory
   * `pgData` (which holds the segments in `pg_wal/` and a copy of the cluster's `global/pg_control`).
   */
  prepare(cluster: Cluster, dir: string, pgData: string): Promise<string>;
  /** Waits, untimed, for what the mode may leave running once the last call has returned. */
  settle?(dir: string): Promise<void>;
}

/** When the segments' `.ready` files appear: one before each call, or all before the first. */
export type Arrival = 'one at a time' | 'all waiting';

/** One run of a mode's archive_command over consecutive captured segments, in order. */
export interface PushRun {
  mode: string;
  arrival: Arrival;
  segments: number;
  /** Each call's wall time, in seconds, in order. */
  latencies: number[];
  /** From the first call's start to the last call's end. */
  seconds: number;
}

export interface BackupRun extends Measurement {
  /** What the repository gained during the backup: its files and the WAL archived while it ran. */
  stored: number;
}

export interface RestoreRun {
  /** The restore command alone. */
  restore: Measurement;
  /** From the restore command's start until the restored server, done replaying, accepts writes. */
  secondsToWrites: number;
}

export interface ContenderResults {
  full: BackupRun;
  incremental: BackupRun;
  /** What the repository gained while a day of writes was archived: the WAL the restore replays. */
  dayWalStored: number;
  restore: RestoreRun;
  pushes: PushRun[];
}

export interface PhysicalResults {
  /** By contender name. */
  runs: Record<string, ContenderResults>;
  /** Why a contender expected in the table was not measured (not installed). */
  missing: Record<string, string>;
  /** WAL written by the day the restores replay: day.sql and its vacuum. */
  dayWalBytes: number;
  walSegmentBytes: number;
  /** The segments captured for the archive_command timings. */
  capturedSegments: number;
}

export interface PhysicalBench {
  dataset: Dataset;
  sqlDir: string;
  /** Removed by the caller afterwards. */
  workDir: string;
  log: (line: string) => void;
}

/** Segments timed one call after another for the latency figures, and for the sustained rate. */
export const LATENCY_SEGMENTS = 200;
export const SUSTAINED_SEGMENTS = 500;

const runningAsRoot = process.getuid?.() === 0;

/** The cluster's files and the repositories belong to the server's user, as on a database host. */
export function asServerUser(spec: CommandSpec): CommandSpec {
  return runningAsRoot
    ? { ...spec, command: 'runuser', args: ['-u', 'postgres', '--', spec.command, ...spec.args] }
    : spec;
}

/**
 * The cluster's archive_command, set with ALTER SYSTEM and a reload: nothing while the dataset
 * loads (no WAL from before the first backup is needed), every contender's own archive_command
 * while backups and the day's writes run (pgBackRest's backup checks that archive_command names it),
 * and a plain copy into the capture directory while WAL is generated for the archive_command timings.
 */
async function setArchiveCommand(cluster: Cluster, command: string): Promise<void> {
  // The postgres database: the first call comes before the shop database exists.
  await cluster.sql('postgres', `ALTER SYSTEM SET archive_command = '${command.replaceAll("'", "''")}'`);
  await cluster.sql('postgres', 'SELECT pg_reload_conf()');
}

const DISCARD = 'true';
const captureCommand = (dir: string) => `test ! -f ${dir}/%f && cp %p ${dir}/%f`;

/**
 * One cluster in the before state, with archive_mode on, for every contender: a full backup,
 * day.sql and an incremental backup, another day.sql whose WAL only the archive holds, a restore
 * of the incremental replaying it; then WAL captured from a pgbench run, and each contender's
 * archive_command timed on those segments outside PostgreSQL.
 */
export async function measurePhysical(
  bench: PhysicalBench,
  contenders: PhysicalContender[],
  missing: Record<string, string>,
): Promise<PhysicalResults> {
  await serverOwnedDir(bench.workDir);
  const captureDir = path.join(bench.workDir, 'captured-wal');
  await serverOwnedDir(captureDir);
  const dataDir = path.join(bench.workDir, 'pgdata');
  await initCluster(dataDir);
  // archive_command is not among these: given on the command line, it could not be changed later.
  const settings = [...SCRATCH_SETTINGS, 'wal_level=replica', 'archive_mode=on'];
  try {
    return await withCluster(dataDir, settings, async (cluster) => {
      await setArchiveCommand(cluster, DISCARD);
      return measureOn(cluster, { ...bench, contenders, missing, captureDir });
    });
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}

interface Session extends PhysicalBench {
  contenders: PhysicalContender[];
  missing: Record<string, string>;
  captureDir: string;
}

async function measureOn(cluster: Cluster, session: Session): Promise<PhysicalResults> {
  const { contenders, log } = session;
  log('physical: restoring the before dump into a throwaway cluster with archive_mode=on');
  await loadBeforeState(cluster, session.dataset.before);
  for (const contender of contenders) {
    log(`physical: ${contender.name}: creating its repository`);
    await contender.init(cluster);
  }
  await setArchiveCommand(
    cluster,
    contenders.map((contender) => contender.archiveCommand).join(' && ') || DISCARD,
  );
  await archiveAll(cluster);

  const full: Record<string, BackupRun> = {};
  for (const contender of contenders) {
    log(`physical: ${contender.name}: full backup`);
    full[contender.name] = await timedBackup(cluster, contender, 'full');
  }
  log('physical: applying day.sql');
  await applyDay(cluster, session);
  const incremental: Record<string, BackupRun> = {};
  for (const contender of contenders) {
    log(`physical: ${contender.name}: incremental backup`);
    incremental[contender.name] = await timedBackup(cluster, contender, 'incremental');
  }

  log('physical: applying day.sql again: the WAL a restore of the incremental replays');
  const sizesBefore = await Promise.all(contenders.map((contender) => contender.repositorySize()));
  const lsnBefore = await query(cluster, 'select pg_current_wal_lsn()');
  await applyDay(cluster, session);
  const dayWalBytes = Number(await query(cluster, `select pg_current_wal_lsn() - '${lsnBefore}'`));
  const sizesAfter = await Promise.all(contenders.map((contender) => contender.repositorySize()));
  const expected = await fingerprint(cluster);

  const restores: Record<string, RestoreRun> = {};
  for (const contender of contenders) {
    log(`physical: ${contender.name}: restore of the incremental, then replay to the end of the archive`);
    restores[contender.name] = await restoreAndReplay(contender, session.workDir, expected);
  }

  const walSegmentBytes = Number(
    await query(cluster, `select setting from pg_settings where name = 'wal_segment_size'`),
  );
  log(`physical: capturing ${SUSTAINED_SEGMENTS} WAL segments of a pgbench run`);
  await setArchiveCommand(cluster, captureCommand(session.captureDir));
  await generateWal(cluster, session.workDir, (SUSTAINED_SEGMENTS + 1) * walSegmentBytes);
  await archiveAll(cluster);
  const segments = (await readdir(session.captureDir)).filter((name) => SEGMENT_NAME.test(name)).sort();
  if (segments.length < SUSTAINED_SEGMENTS)
    throw new Error(`captured ${segments.length} WAL segments, fewer than ${SUSTAINED_SEGMENTS}`);

  const runs: Record<string, ContenderResults> = {};
  for (const [index, contender] of contenders.entries()) {
    const pushes: PushRun[] = [];
    for (const mode of contender.walPushModes)
      for (const plan of pushPlans(mode)) {
        log(
          `physical: ${contender.name}: ${mode.name} archive_command, ${plan.count} segments ${plan.arrival}`,
        );
        pushes.push(await timePushes(cluster, session, mode, plan.arrival, segments.slice(0, plan.count)));
      }
    runs[contender.name] = {
      full: full[contender.name]!,
      incremental: incremental[contender.name]!,
      dayWalStored: sizesAfter[index]! - sizesBefore[index]!,
      restore: restores[contender.name]!,
      pushes,
    };
  }
  return {
    runs,
    missing: session.missing,
    dayWalBytes,
    walSegmentBytes,
    capturedSegments: segments.length,
  };
}

const SEGMENT_NAME = /^[0-9A-F]{24}$/;

/**
 * Every mode is timed with the segments arriving one at a time, each `.ready` written just before
 * its call, as when PostgreSQL fills a segment while the last is archived. A mode that queues is
 * also timed with them all waiting (an archiver behind), and over the sustained run.
 */
function pushPlans(mode: WalPushMode): { arrival: Arrival; count: number }[] {
  const oneAtATime = { arrival: 'one at a time', count: LATENCY_SEGMENTS } as const;
  if (!mode.queues) return [oneAtATime];
  return [
    oneAtATime,
    { arrival: 'all waiting', count: LATENCY_SEGMENTS },
    { arrival: 'all waiting', count: SUSTAINED_SEGMENTS },
  ];
}

async function query(cluster: Cluster, sql: string, database = DATABASE): Promise<string> {
  return (await run(cluster.client('psql', database, ['-X', '-At', '-c', sql]))).trim();
}

/** How often a wait for the server polls it: each poll is a psql run. */
const POLL_MS = 50;

async function until(what: string, check: () => Promise<boolean>, timeoutSeconds = 600): Promise<void> {
  const deadline = performance.now() + timeoutSeconds * 1000;
  while (!(await check())) {
    if (performance.now() > deadline)
      throw new Error(`timed out after ${timeoutSeconds} s waiting for ${what}`);
    await delay(POLL_MS);
  }
}

/**
 * Closes the current WAL segment and waits until the archiver has stored it, so that every
 * segment written so far is in the archive (or the capture directory) and nothing more is being
 * archived while the next step is timed.
 */
async function archiveAll(cluster: Cluster): Promise<void> {
  const failures = async () => Number(await query(cluster, 'select failed_count from pg_stat_archiver'));
  const failedBefore = await failures();
  const segment = await query(cluster, 'select pg_walfile_name(pg_switch_wal())');
  await until(`the archiving of ${segment}`, async () => {
    if ((await failures()) > failedBefore) {
      const log = path.join(cluster.env(DATABASE).PGHOST!, 'server.log');
      const tail = (await readFile(log, 'utf8').catch(() => '')).slice(-2000);
      throw new Error(`archive_command failed while archiving up to ${segment}\n${tail}`);
    }
    const archived = await query(
      cluster,
      `select coalesce(last_archived_wal >= '${segment}', false) from pg_stat_archiver`,
    );
    return archived === 't';
  });
}

/** day.sql, then the nightly vacuum the other sections run, then everything archived. */
async function applyDay(cluster: Cluster, session: Session): Promise<void> {
  await cluster.psqlFile(DATABASE, path.join(session.sqlDir, 'day.sql'), { scale: session.dataset.scale });
  await cluster.sql(DATABASE, 'VACUUM (ANALYZE)');
  await archiveAll(cluster);
}

/** Each backup starts with nothing left to write, in PostgreSQL's buffers or the kernel's. */
async function timedBackup(
  cluster: Cluster,
  contender: PhysicalContender,
  type: BackupType,
): Promise<BackupRun> {
  await cluster.sql(DATABASE, 'CHECKPOINT');
  await run({ command: 'sync', args: [] });
  const sizeBefore = await contender.repositorySize();
  const measured = await contender.backup(type);
  return { ...measured, stored: (await contender.repositorySize()) - sizeBefore };
}

/** Rows the day changes: the restored server must show the same once it has replayed the archive. */
function fingerprint(cluster: Cluster): Promise<string> {
  return query(
    cluster,
    `select (select count(*) || ' ' || max(id) from shop.orders) || ' ' ||
            (select count(*) from audit.events) || ' ' || (select sum(price) from shop.products)`,
  );
}

/** The restored server runs without archiving: the copy must not write into the archive it came from. */
const RESTORED_SETTINGS = [...SCRATCH_SETTINGS, 'archive_mode=off'];

/**
 * The restore command, then the server started on the restored files: it replays the archived WAL
 * through the contender's restore_command and, at the end of the archive, leaves recovery (an
 * end-of-recovery checkpoint, a new timeline) and accepts writes.
 */
async function restoreAndReplay(
  contender: PhysicalContender,
  workDir: string,
  expected: string,
): Promise<RestoreRun> {
  const dataDir = path.join(workDir, `restored-${contender.name}`);
  await serverOwnedDir(dataDir);
  await run({ command: 'sync', args: [] });
  const started = performance.now();
  const restore = await contender.restore(dataDir);
  const restored = await Cluster.start(dataDir, RESTORED_SETTINGS);
  try {
    await until('the restored server to leave recovery', async () => {
      return (await query(restored, 'select pg_is_in_recovery()')) === 'f';
    });
    const secondsToWrites = (performance.now() - started) / 1000;
    const found = await fingerprint(restored);
    if (found !== expected)
      throw new Error(
        `${contender.name}'s restore holds ${found}, not ${expected}: the day's WAL was not replayed`,
      );
    return { restore, secondsToWrites };
  } finally {
    await restored.stop();
    await contender.afterRestore?.();
    await rm(dataDir, { recursive: true, force: true });
  }
}

/**
 * Writes spread over the largest table: each transaction rewrites 2,000 consecutive orders (new
 * amounts, new notes), so the WAL holds row images, index entries and, after each checkpoint,
 * full pages of the table, as a busy database's does.
 */
const PGBENCH_SCRIPT = `\\set first random(1, :orders - 2000)
update shop.orders set amount = amount + 1, note = md5(random()::text) || ' ' || md5(random()::text)
  where id between :first and :first + 1999;
`;

/** Runs pgbench in rounds until the cluster has written at least `bytes` of WAL. */
async function generateWal(cluster: Cluster, workDir: string, bytes: number): Promise<void> {
  const script = path.join(workDir, 'pgbench-writes.sql');
  await writeFile(script, PGBENCH_SCRIPT);
  const orders = await query(cluster, 'select max(id) from shop.orders');
  const start = await query(cluster, 'select pg_current_wal_lsn()');
  const written = async () => Number(await query(cluster, `select pg_current_wal_lsn() - '${start}'`));
  while ((await written()) < bytes) {
    const args = ['-n', '-c', '2', '-j', '2', '-t', '200', '-f', script, '-D', `orders=${orders}`, DATABASE];
    await run(cluster.program('pgbench', args), { discardStdout: true });
  }
}

/**
 * What PostgreSQL's archiver does, outside PostgreSQL: for each segment in order, when its
 * `pg_wal/archive_status/<segment>.ready` exists, run archive_command through `sh -c` in the data
 * directory with %p and %f put in, and once it exits 0 rename `.ready` to `.done`. The segments are
 * hard links to the captured ones, in a data directory of their own with the cluster's pg_control.
 * Each call is timed inside the loop (bash's EPOCHREALTIME), as the harness's own start of a
 * process as the server's user would add to every call.
 *
 * $1: the data directory, $2: the cluster's, $3: the capture directory, $4: the arrival ('all'
 * waiting or one at a time), $5: archive_command with %p as "$1" and %f as "$2"; then the segments.
 */
const PUSH_LOOP = String.raw`
set -euo pipefail
pgdata=$1 cluster=$2 captured=$3 arrival=$4 command=$5
shift 5
mkdir -p "$pgdata/global" "$pgdata/pg_wal/archive_status"
cp "$cluster/global/pg_control" "$pgdata/global/"
cd "$pgdata"
for segment in "$@"; do ln "$captured/$segment" "pg_wal/$segment"; done
if [ "$arrival" = all ]; then
  for segment in "$@"; do : > "pg_wal/archive_status/$segment.ready"; done
fi
for segment in "$@"; do
  [ "$arrival" = all ] || : > "pg_wal/archive_status/$segment.ready"
  started=$EPOCHREALTIME
  sh -c "$command" archive_command "pg_wal/$segment" "$segment"
  ended=$EPOCHREALTIME
  mv "pg_wal/archive_status/$segment.ready" "pg_wal/archive_status/$segment.done"
  echo "$started $ended"
done
`;

async function timePushes(
  cluster: Cluster,
  session: Session,
  mode: WalPushMode,
  arrival: Arrival,
  segments: string[],
): Promise<PushRun> {
  const dir = path.join(session.workDir, 'push');
  await serverOwnedDir(dir);
  try {
    const pgData = path.join(dir, 'pgdata');
    const archiveDir = path.join(dir, 'archive');
    const command = await mode.prepare(cluster, archiveDir, pgData);
    const shellCommand = command.replaceAll('%p', '"$1"').replaceAll('%f', '"$2"');
    const loop = asServerUser({
      command: 'bash',
      args: [
        '-c',
        PUSH_LOOP,
        'push-loop',
        pgData,
        cluster.dataDir,
        session.captureDir,
        arrival === 'all waiting' ? 'all' : 'one',
        shellCommand,
        ...segments,
      ],
    });
    const calls = (await run(loop))
      .trim()
      .split('\n')
      .map((line) => line.split(' ').map(Number) as [number, number]);
    await mode.settle?.(archiveDir);
    return {
      mode: mode.name,
      arrival,
      segments: segments.length,
      latencies: calls.map(([started, ended]) => ended - started),
      seconds: calls.at(-1)![1] - calls[0]![0],
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
