import { execFile, spawn } from 'node:child_process';
import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recoveryConf, recoveryTarget } from '../src/postgres/pitr/recovery-target.ts';
import { archivingSetup, type ArchivingSetup } from './helpers/archiving.ts';
import { expectExit, runCli, type RunResult } from './helpers/cli.ts';
import { freePort } from './helpers/free-port.ts';
import { startCluster, type TestCluster } from './helpers/postgres.ts';

const run = promisify(execFile);
const BIN = '/usr/lib/postgresql/15/bin';

describe('recovery targets', () => {
  it('are written as PostgreSQL reads them, one target at most, times with their zone', () => {
    const conf = recoveryConf({
      target: recoveryTarget({ time: '2026-11-20 14:30:00.123456+00' }),
      timeline: 'latest',
      action: 'promote',
      restoreCommand: "strongbox wal fetch %f %p # it's",
    });
    expect(conf).toContain("restore_command = 'strongbox wal fetch %f %p # it''s'");
    expect(conf).toContain("recovery_target_time = '2026-11-20 14:30:00.123456+00'");
    expect(conf).toContain("recovery_target_timeline = 'latest'");
    expect(conf).toContain("recovery_target_action = 'promote'");
    expect(() => recoveryTarget({ time: '2026-11-20 14:30:00' })).toThrow(/no time zone/);
    expect(() => recoveryTarget({ time: 'yesterday' })).toThrow(/not a time/);
    expect(() => recoveryTarget({ lsn: '0/1', xid: '5' })).toThrow(/one target, not lsn and xid/);
    expect(() => recoveryTarget({ lsn: 'zz' })).toThrow(/not an LSN/);
    expect(recoveryConf({ ...base(), target: recoveryTarget({ immediate: true }) })).toContain(
      "recovery_target = 'immediate'",
    );
    expect(recoveryConf({ ...base(), target: recoveryTarget({}) })).not.toContain('recovery_target_action');
  });
});

function base() {
  return { timeline: 'latest' as const, action: 'promote' as const, restoreCommand: 'x' };
}

/**
 * Point-in-time recovery of a real cluster archiving through `strongbox wal push`, from a physical
 * backup: marker rows committed at known moments (while pgbench writes beside them), and recovery
 * to a time, an LSN, a transaction, a restore point, the backup's end and the end of the archive,
 * each checked by which markers the recovered server holds.
 */
describe('restore --pgdata', () => {
  let cluster: TestCluster;
  let setup: ArchivingSetup;
  /** What each marker's commit left: the moment and position just after it, and its transaction. */
  const markers: { n: number; after: string; lsn: string; xid: string }[] = [];
  const restored: string[] = [];

  const asRoot = (args: string[]) => runCli(args, { env: setup.repo.env });
  const restoreDir = (name: string) => {
    const dir = path.join(setup.repo.dir, name);
    restored.push(dir);
    return dir;
  };
  /** Runs SQL on a recovered server through the socket strongbox started it with. */
  const onRestored = async (result: RunResult, sql: string, database = 'postgres') => {
    const report = JSON.parse(result.stdout.toString()) as {
      recovery: { socketDirectory: string; port: number; user: string };
    };
    const { stdout } = await run(path.join(BIN, 'psql'), [
      '-X',
      '-A',
      '-t',
      '-h',
      report.recovery.socketDirectory,
      '-p',
      String(report.recovery.port),
      '-U',
      report.recovery.user,
      '-d',
      database,
      '-c',
      sql,
    ]);
    return stdout.trim();
  };
  const stopRestored = async (dir: string) => {
    const args = ['stop', '-D', dir, '-m', 'immediate'];
    await run('runuser', ['-u', 'postgres', '--', path.join(BIN, 'pg_ctl'), ...args]).catch(() => undefined);
  };
  const pitr = async (name: string, args: string[]) => {
    const dir = restoreDir(name);
    const port = await freePort();
    // Copies that must not archive into the repository: their timelines would mix with the source's.
    const archive = args.includes('--archive-mode') ? [] : ['--archive-mode', 'off'];
    const result = await asRoot([
      '--json',
      'restore',
      '--pgdata',
      dir,
      '--start',
      '--port',
      String(port),
      ...archive,
      ...args,
    ]);
    return { dir, result };
  };
  const markersIn = async (result: RunResult) =>
    (await onRestored(result, "select string_agg(n::text, ',' order by n) from markers", 'shop'))
      .split(',')
      .filter(Boolean)
      .map(Number);

  beforeAll(async () => {
    cluster = await startCluster();
    setup = await archivingSetup(cluster);
    await cluster.createDatabase('shop');
    await cluster.psql(
      'create table markers (n int primary key, at timestamptz default clock_timestamp())',
      'shop',
    );
    await cluster.psql(
      'create table load (id serial primary key, payload text); create index on load (payload)',
      'shop',
    );
    expectExit(await asRoot(['backup', 'postgres', '--physical', cluster.url('postgres')]), 0);
    // Writes beside the markers, as a live database has.
    const load = spawn(path.join(BIN, 'pgbench'), ['-n', '-c', '2', '-T', '8', '-f', '-', 'shop'], {
      env: { ...process.env, ...cluster.env() },
      stdio: ['pipe', 'ignore', 'ignore'],
    });
    load.stdin.end('insert into load (payload) select md5(random()::text) from generate_series(1, 50);\n');
    for (let n = 1; n <= 4; n++) {
      if (n === 4) await cluster.psql(`select pg_create_restore_point('before marker 4')`);
      const xid = (
        await cluster.psql(
          `begin; insert into markers (n) values (${n}); select txid_current(); commit;`,
          'shop',
        )
      ).trim();
      const [after, lsn] = (await cluster.psql(`select clock_timestamp(), pg_current_wal_insert_lsn()`))
        .trim()
        .split('|');
      markers.push({ n, after: after!, lsn: lsn!, xid });
    }
    await new Promise((resolve) => load.once('exit', resolve));
    const [last] = await setup.switchSegments(1);
    await setup.waitArchived(last!);
  }, 300_000);

  afterAll(async () => {
    for (const dir of restored) {
      await stopRestored(dir);
      await rm(dir, { recursive: true, force: true });
    }
    await setup?.cleanup();
    await cluster?.stop();
  });

  it('recovers to a time between two markers: exactly the earlier ones', async () => {
    const { dir, result } = await pitr('to-time', ['--time', markers[1]!.after]);
    expectExit(result, 0);
    expect(await markersIn(result)).toEqual([1, 2]);
    const report = JSON.parse(result.stdout.toString());
    expect(report.recovery.state).toBe('promoted');
    expect(report.amcheck.problems).toEqual([]);
    expect(report.amcheck.databases).toContain('shop');
    await stopRestored(dir);
  }, 300_000);

  it('recovers to an LSN, a transaction, a restore point and the end of the base backup', async () => {
    const byLsn = await pitr('to-lsn', ['--lsn', markers[0]!.lsn]);
    expectExit(byLsn.result, 0);
    expect(await markersIn(byLsn.result)).toEqual([1]);
    await stopRestored(byLsn.dir);

    const byXid = await pitr('to-xid', ['--xid', markers[2]!.xid]);
    expectExit(byXid.result, 0);
    expect(await markersIn(byXid.result)).toEqual([1, 2, 3]);
    await stopRestored(byXid.dir);

    const byName = await pitr('to-name', ['--target-name', 'before marker 4']);
    expectExit(byName.result, 0);
    expect(await markersIn(byName.result)).toEqual([1, 2, 3]);
    await stopRestored(byName.dir);

    const immediate = await pitr('immediate', ['--immediate']);
    expectExit(immediate.result, 0);
    expect(await markersIn(immediate.result)).toEqual([]);
    await stopRestored(immediate.dir);
  }, 600_000);

  it('replays to the end of the archive: every database as pg_dump sees it equals the source', async () => {
    const { dir, result } = await pitr('to-end', []);
    expectExit(result, 0);
    const report = JSON.parse(result.stdout.toString());
    const dump = async (database: string, host: string, port: number) =>
      (
        await run(
          path.join(BIN, 'pg_dump'),
          ['-d', database, '-h', host, '-p', String(port), '-U', 'postgres'],
          {
            maxBuffer: 256 * 1024 * 1024,
          },
        )
      ).stdout;
    for (const database of ['postgres', 'shop']) {
      const fromSource = await dump(database, cluster.host, cluster.port);
      const fromRestored = await dump(database, report.recovery.socketDirectory, report.recovery.port);
      // pg_dump 15.14 and later protect their output with a random \restrict key; and a sequence
      // comes back from WAL up to 32 values ahead (PostgreSQL logs them in advance), as after a crash.
      const lines = (text: string) =>
        text.split('\n').filter((line) => !/^\\(un)?restrict |^SELECT pg_catalog\.setval\(/.test(line));
      const [a, b] = [lines(fromSource), lines(fromRestored)];
      const first = a.findIndex((line, index) => line !== b[index]);
      expect(first, `pg_dump of ${database} differs at line ${first}: ${a[first]} / ${b[first]}`).toBe(-1);
      expect(b.length).toBe(a.length);
    }
    await stopRestored(dir);
  }, 300_000);

  it('recovers rows deleted after a moment into the live database, beside the table or in its place', async () => {
    await cluster.psql('delete from markers where n <= 2', 'shop');
    const moment = markers[3]!.after;
    const beside = await asRoot([
      '--json',
      'restore',
      '--time',
      moment,
      '--table',
      'public.markers',
      '--to',
      cluster.url('shop'),
    ]);
    expectExit(beside, 0);
    const report = JSON.parse(beside.stdout.toString());
    expect(report.tables).toEqual([expect.objectContaining({ table: 'public.markers', rows: 4 })]);
    const restoredAs = report.tables[0].restoredAs as string;
    expect(restoredAs).toMatch(/^recovered_\d{8}_\d{6}\.markers$/);
    expect(
      (await cluster.psql(`select string_agg(n::text, ',' order by n) from ${restoredAs}`, 'shop')).trim(),
    ).toBe('1,2,3,4');
    expect((await cluster.psql('select count(*) from markers', 'shop')).trim()).toBe('2');
    // Copying the deleted rows back is now one statement.
    await cluster.psql(`insert into markers select * from ${restoredAs} where n <= 2`, 'shop');
    await cluster.psql(`drop schema ${restoredAs.split('.')[0]} cascade`, 'shop');

    await cluster.psql('delete from markers where n = 4', 'shop');
    const swapped = await asRoot([
      '--json',
      'restore',
      '--time',
      moment,
      '--table',
      'markers',
      '--to',
      cluster.url('shop'),
      '--replace',
    ]);
    expectExit(swapped, 0);
    const swap = JSON.parse(swapped.stdout.toString()).tables[0];
    expect(swap.restoredAs).toBe('public.markers');
    expect(
      (await cluster.psql("select string_agg(n::text, ',' order by n) from markers", 'shop')).trim(),
    ).toBe('1,2,3,4');
    expect((await cluster.psql(`select count(*) from ${swap.previousAs}`, 'shop')).trim()).toBe('3');
    // No scratch cluster is left running.
    expect(
      (await run('pgrep', ['-f', 'strongbox-scratch-']).catch(() => ({ stdout: '' }))).stdout.trim(),
    ).toBe('');
  }, 600_000);

  it('drill --physical recovers into a scratch cluster, times restore, replay and verify, and judges RTO and RPO', async () => {
    const passed = await asRoot(['--json', 'drill', '--physical', '--rto', '1h']);
    expectExit(passed, 0);
    const record = JSON.parse(passed.stdout.toString());
    expect(record).toMatchObject({ kind: 'postgres-physical', result: 'passed', exceeded: [] });
    for (const phase of ['restore', 'replay', 'verify']) expect(record.phases[phase]).toBeGreaterThan(0);
    expect(record.rtoSeconds).toBeGreaterThanOrEqual(record.phases.replay);
    expect(record.restore.amcheck.databases).toContain('shop');
    // The newest archived segment is older than a millisecond: over the objective, exit 8.
    const over = await asRoot(['--json', 'drill', '--physical', '--rpo', '1ms']);
    expectExit(over, 8);
    expect(JSON.parse(over.stdout.toString()).exceeded).toEqual(['rpo']);
    // Neither left a scratch cluster running.
    expect((await run('pgrep', ['-f', 'strongbox-drill-']).catch(() => ({ stdout: '' }))).stdout.trim()).toBe(
      '',
    );
  }, 600_000);

  it('refuses a target before the base backup ended, and a timeline that does not exist (exit 7)', async () => {
    const early = await pitr('too-early', ['--time', '2000-01-01 00:00:00+00']);
    expectExit(early.result, 7);
    expect(early.result.stderr).toMatch(/before the end of every base backup/);
    const wrongTimeline = await pitr('wrong-timeline', ['--timeline', '5']);
    expectExit(wrongTimeline.result, 7);
    expect(wrongTimeline.result.stderr).toMatch(/recovery failed/);
  }, 300_000);

  it('after a promotion archives timeline 2, recovers along it; a gap stops a restore before anything is written', async () => {
    const first = await pitr('timeline-1', ['--time', markers[1]!.after, '--archive-mode', 'preserve']);
    expectExit(first.result, 0);
    // The promoted copy archives into the same repository, on timeline 2.
    await onRestored(first.result, 'insert into markers (n) values (20)', 'shop');
    const segment = await onRestored(first.result, 'select pg_walfile_name(pg_switch_wal())');
    expect(segment.startsWith('00000002')).toBe(true);
    await waitUntil(
      async () =>
        (await onRestored(first.result, 'select last_archived_wal from pg_stat_archiver')) >= segment,
    );
    await stopRestored(first.dir);

    const second = await pitr('timeline-2', ['--timeline', 'latest']);
    expectExit(second.result, 0);
    expect(await markersIn(second.result)).toEqual([1, 2, 20]);
    expect(JSON.parse(second.result.stdout.toString()).recovery.timeline).toBeGreaterThanOrEqual(3);
    await stopRestored(second.dir);

    // A segment of timeline 1 written after the base backup goes missing.
    const segments = (await readdir(path.join(setup.repo.repo, 'wal', '00000001')))
      .filter((name) => /^[0-9A-F]{24}$/.test(name))
      .sort();
    await rm(path.join(setup.repo.repo, 'wal', '00000001', segments.at(-2)!));
    const gap = await pitr('gap', ['--timeline', 'current']);
    expectExit(gap.result, 7);
    expect(gap.result.stderr).toMatch(/lacks WAL/);
  }, 600_000);
});

async function waitUntil(condition: () => Promise<boolean>, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
