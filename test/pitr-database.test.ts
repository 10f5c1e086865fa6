import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { archivingSetup, type ArchivingSetup } from './helpers/archiving.ts';
import { expectExit, runCli } from './helpers/cli.ts';
import { freePort } from './helpers/free-port.ts';
import { startCluster, type TestCluster } from './helpers/postgres.ts';

const run = promisify(execFile);
const BIN = '/usr/lib/postgresql/15/bin';
const asRoot = process.getuid?.() === 0;

/** A directory the postgres OS user may use (tests run as root; the server does not). */
async function serverDirectory(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  await chmod(dir, 0o755);
  if (asRoot) await run('chown', ['postgres:postgres', dir]);
  return dir;
}

/** pg_dump of a database, without what differs between two dumps of the same data. */
async function dump(database: string, host: string, port: number): Promise<string[]> {
  const { stdout } = await run(
    path.join(BIN, 'pg_dump'),
    ['-d', database, '-h', host, '-p', String(port), '-U', 'postgres'],
    { maxBuffer: 256 * 1024 * 1024 },
  );
  // pg_dump 15.14 and later protect their output with a random \restrict key; and a sequence
  // comes back from WAL up to 32 values ahead (PostgreSQL logs them in advance), as after a crash.
  return stdout.split('\n').filter((line) => !/^\\(un)?restrict |^SELECT pg_catalog\.setval\(/.test(line));
}

const noScratchCluster = async () =>
  expect((await run('pgrep', ['-f', 'strongbox-scratch-']).catch(() => ({ stdout: '' }))).stdout.trim()).toBe(
    '',
  );

/**
 * A cluster with an extra tablespace, archiving through `strongbox wal push`, backed up with
 * `backup postgres --physical`; marker rows committed at known moments after the backup. Through
 * the command line: the whole cluster restored with its tablespace moved, and one database
 * recovered as of a moment into a live server, beside the original or in its place.
 */
describe('point-in-time restore of a cluster with a tablespace, and of one database', () => {
  let cluster: TestCluster;
  let setup: ArchivingSetup;
  let tablespaceDir: string;
  let oid: string;
  const markers: { n: number; after: string }[] = [];
  const cleanups: (() => Promise<unknown>)[] = [];

  const cli = (args: string[]) => runCli(args, { env: setup.repo.env });
  const directory = async (name: string) => {
    const dir = path.join(setup.repo.dir, name);
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    return dir;
  };
  const markersIn = async (database: string) =>
    (await cluster.psql("select string_agg(n::text, ',' order by n) from markers", database)).trim();

  beforeAll(async () => {
    cluster = await startCluster();
    setup = await archivingSetup(cluster);
    tablespaceDir = await serverDirectory('strongbox-tablespace-');
    await cluster.psql(`create tablespace extra location '${tablespaceDir}'`);
    oid = (await cluster.psql(`select oid from pg_tablespace where spcname = 'extra'`)).trim();
    await cluster.createDatabase('shop');
    await cluster.psql(
      `create table markers (n int primary key, at timestamptz default clock_timestamp());
       create table far (id int primary key, note text) tablespace extra;
       insert into far select g, md5(g::text) from generate_series(1, 5000) g;
       create index far_note on far (note) tablespace extra;
       create sequence orders_seq; select nextval('orders_seq');
       create view recent as select n from markers where n > 1;`,
      'shop',
    );
    expectExit(await cli(['backup', 'postgres', '--physical', cluster.url('postgres')]), 0);
    for (let n = 1; n <= 4; n++) {
      await cluster.psql(
        `insert into markers (n) values (${n}); insert into far values (${10000 + n}, 'm')`,
        'shop',
      );
      markers.push({ n, after: (await cluster.psql('select clock_timestamp()')).trim() });
    }
    const [last] = await setup.switchSegments(1);
    await setup.waitArchived(last!);
  }, 300_000);

  afterAll(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    await setup?.cleanup();
    await cluster?.stop();
    if (tablespaceDir) await rm(tablespaceDir, { recursive: true, force: true });
  });

  it('refuses, before writing anything, a tablespace left where the live one is, and a non-empty directory named for it', async () => {
    const pgdata = await directory('refused');
    const unmapped = await cli(['restore', '--pgdata', pgdata, '--archive-mode', 'off', '--force']);
    expectExit(unmapped, 3);
    expect(unmapped.stderr.toString()).toMatch(/tablespace extra .* not empty: it may be the live cluster's/);
    expect(unmapped.stderr.toString()).toContain(`--tablespace ${oid}=DIR`);
    expect(await readdir(tablespaceDir)).toEqual([expect.stringMatching(/^PG_15_/)]);

    const occupied = await serverDirectory('strongbox-occupied-');
    cleanups.push(() => rm(occupied, { recursive: true, force: true }));
    await writeFile(path.join(occupied, 'keep-me'), 'x');
    const mapped = await cli(['restore', '--pgdata', pgdata, '--tablespace', `${oid}=${occupied}`]);
    expectExit(mapped, 3);
    expect(mapped.stderr.toString()).toMatch(/where tablespace extra would go, is not empty/);
    expect(await readdir(occupied)).toEqual(['keep-me']);
    // Neither wrote into the data directory.
    expect(await readdir(pgdata).catch(() => [])).toEqual([]);
  }, 120_000);

  it('restores the cluster with its tablespace moved, replays to the end: every database dumps as the source', async () => {
    const pgdata = await directory('moved');
    const moved = await directory('moved-tablespace');
    const port = await freePort();
    cleanups.push(() =>
      run('runuser', [
        '-u',
        'postgres',
        '--',
        path.join(BIN, 'pg_ctl'),
        'stop',
        '-D',
        pgdata,
        '-m',
        'immediate',
      ]),
    );
    const result = await cli([
      '--json',
      'restore',
      '--pgdata',
      pgdata,
      '--tablespace',
      `${oid}=${moved}`,
      '--start',
      '--port',
      String(port),
      '--archive-mode',
      'off',
    ]);
    expectExit(result, 0);
    const report = JSON.parse(result.stdout.toString()) as {
      tablespaces: { oid: string; location: string }[];
      recovery: { socketDirectory: string; port: number; state: string };
      amcheck: { problems: string[]; databases: string[] };
    };
    expect(report.tablespaces).toEqual([expect.objectContaining({ oid, location: moved })]);
    expect(report.recovery.state).toBe('promoted');
    expect(report.amcheck.problems).toEqual([]);
    expect((await readdir(moved))[0]).toMatch(/^PG_15_/);
    for (const database of ['postgres', 'shop']) {
      const fromSource = await dump(database, cluster.host, cluster.port);
      const fromRestored = await dump(database, report.recovery.socketDirectory, report.recovery.port);
      const first = fromSource.findIndex((line, index) => line !== fromRestored[index]);
      expect(first, `pg_dump of ${database} differs at line ${first}`).toBe(-1);
      expect(fromRestored.length).toBe(fromSource.length);
    }
    expect(fromJoined(await dump('shop', cluster.host, cluster.port))).toContain(
      'SET default_tablespace = extra',
    );
  }, 300_000);

  it('recovers one database as of a moment into a new database, its fingerprints checked after the load', async () => {
    // Refused before any recovery: an existing target without --replace, a replace nobody confirmed.
    const exists = await cli([
      'restore',
      '--time',
      markers[1]!.after,
      '--database',
      'shop',
      '--to',
      cluster.url('shop'),
    ]);
    expectExit(exists, 3);
    expect(exists.stderr.toString()).toContain('--replace');
    const unconfirmed = await cli([
      'restore',
      '--time',
      markers[1]!.after,
      '--database',
      'shop',
      '--to',
      cluster.url('shop'),
      '--replace',
    ]);
    expectExit(unconfirmed, 3);
    expect(unconfirmed.stderr.toString()).toMatch(/no terminal is attached/);
    // A database the recovered cluster lacks: refused, the scratch cluster removed.
    const missing = await cli([
      'restore',
      '--time',
      markers[1]!.after,
      '--database',
      'nosuch',
      '--to',
      cluster.url('nosuch_copy'),
    ]);
    expectExit(missing, 3);
    expect(missing.stderr.toString()).toMatch(/holds no database nosuch/);
    await noScratchCluster();

    const recovered = await cli([
      '--json',
      'restore',
      '--time',
      markers[1]!.after,
      '--database',
      'shop',
      '--to',
      cluster.url('shop_at_marker_2'),
    ]);
    expectExit(recovered, 0);
    const report = JSON.parse(recovered.stdout.toString()) as RecoveryReport;
    expect(report).toMatchObject({ sourceDatabase: 'shop', database: 'shop_at_marker_2', replace: false });
    expect(report.verification.mismatched).toEqual([]);
    expect(report.verification.tables).toBeGreaterThanOrEqual(2);
    expect(report.verification.checks.map((check) => check.name)).toEqual(
      expect.arrayContaining(['schema', 'database']),
    );
    expect(await markersIn('shop_at_marker_2')).toBe('1,2');
    expect((await cluster.psql('select count(*) from far', 'shop_at_marker_2')).trim()).toBe('5002');
    expect(await markersIn('shop')).toBe('1,2,3,4');
    await noScratchCluster();
  }, 300_000);

  it('a difference after the load is exit 7: nothing renamed, the copy left for inspection, no scratch cluster left', async () => {
    // PostgreSQL's programs, but a pg_restore that changes a row once it has loaded the database.
    const bin = await serverDirectory('strongbox-bin-');
    cleanups.push(() => rm(bin, { recursive: true, force: true }));
    for (const program of await readdir(BIN))
      if (program !== 'pg_restore') await symlink(path.join(BIN, program), path.join(bin, program));
    await writeFile(
      path.join(bin, 'pg_restore'),
      `#!/bin/sh\n${path.join(BIN, 'pg_restore')} "$@" || exit $?\n` +
        `exec ${path.join(BIN, 'psql')} -X -q -c "update markers set at = at + interval '1 second' where n = 1"\n`,
      { mode: 0o755 },
    );
    const tampered = await cli([
      'restore',
      '--time',
      markers[0]!.after,
      '--database',
      'shop',
      '--to',
      cluster.url('shop_tampered'),
      '--pg-bin',
      bin,
    ]);
    expectExit(tampered, 7);
    expect(tampered.stderr.toString()).toMatch(
      /strongbox_restore_shop_tampered_\w+ differs from snapshot \w{8}: 1 table: public\.markers \(1 rows backed up, 1 found, contents differ\)/,
    );
    const left = (
      await cluster.psql(
        "select string_agg(datname, ',') from pg_database where datname like '%shop_tampered%'",
      )
    ).trim();
    expect(left).toMatch(/^strongbox_restore_shop_tampered_\d{8}_\d{6}$/);
    await noScratchCluster();
  }, 300_000);

  it('with --replace swaps the recovered database in and keeps the old one', async () => {
    await cluster.psql('delete from markers where n >= 2', 'shop');
    const replaced = await cli([
      '--json',
      'restore',
      '--time',
      markers[2]!.after,
      '--database',
      'shop',
      '--to',
      cluster.url('shop'),
      '--replace',
      '--yes',
    ]);
    expectExit(replaced, 0);
    const report = JSON.parse(replaced.stdout.toString()) as RecoveryReport;
    expect(report.replace).toBe(true);
    expect(report.keptAs).toMatch(/^shop_before_\d{8}_\d{6}$/);
    expect(await markersIn('shop')).toBe('1,2,3');
    expect(await markersIn(report.keptAs!)).toBe('1');
    await noScratchCluster();
  }, 300_000);
});

interface RecoveryReport {
  sourceDatabase: string;
  database: string;
  replace: boolean;
  keptAs?: string;
  verification: { tables: number; mismatched: unknown[]; checks: { name: string }[] };
}

const fromJoined = (lines: string[]) => lines.join('\n');
