import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, DatabaseChoiceError, findDatabaseSnapshot, type Repository } from '../src/index.ts';
import { runCli, tempRepo, type RunResult, type TempRepo, expectExit } from './helpers/cli.ts';
import { startCluster, type TestCluster } from './helpers/postgres.ts';
import { createTestRepo, type TestRepo } from './helpers/repo.ts';

/** One database of a cluster snapshot (backup postgres --all), dumped, restored and verified alone. */
describe('a cluster snapshot, per database', () => {
  let cluster: TestCluster;
  let repo: TempRepo;
  let clusterSnapshot: string;
  const to = (database: string) =>
    `postgres:///${encodeURIComponent(database)}?host=${encodeURIComponent(cluster.host)}&port=${cluster.port}&user=${cluster.user}`;
  const cli = (args: string[]) => runCli(args, { env: repo.env });
  const snapshotOf = (result: RunResult) => {
    expectExit(result, 0);
    return (JSON.parse(result.stdout.toString()) as { snapshot: string }).snapshot;
  };

  beforeAll(async () => {
    cluster = await startCluster();
    repo = await tempRepo();
    expectExit(await cli(['init']), 0);
    await cluster.createDatabase('shop');
    await cluster.psql(
      `create table orders (id serial primary key, total numeric);
       insert into orders (total) select g * 1.5 from generate_series(1, 2000) g;
       create table items (id int primary key, name text);
       insert into items select g, 'item ' || g from generate_series(1, 500) g`,
      'shop',
    );
    await cluster.createDatabase('app');
    await cluster.psql(`create table notes (body text); insert into notes values ('a'), ('b')`, 'app');
    clusterSnapshot = snapshotOf(await cli(['backup', 'postgres', '--all', to('postgres'), '--json']));
  });
  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
  });

  it('dumps one database of it as an archive pg_restore reads', async () => {
    const dumped = await cli(['dump', clusterSnapshot.slice(0, 8), '--name', 'shop']);
    expectExit(dumped, 0);
    const file = path.join(repo.dir, 'shop.dump');
    await fs.writeFile(file, dumped.stdout);
    const { stdout } = await promisify(execFile)(path.join(cluster.binDir, 'pg_restore'), ['-l', file]);
    expect(stdout).toMatch(/TABLE DATA public orders /);
    expect(stdout).toMatch(/TABLE DATA public items /);
    expect(stdout).not.toMatch(/notes/);

    const latest = await cli(['dump', 'latest', '--name', 'app']);
    expectExit(latest, 0);
    expect(latest.stdout.subarray(0, 5).toString()).toBe('PGDMP');
  });

  it('says which databases it holds when none, or another, is named (exit 3)', async () => {
    const id = clusterSnapshot.slice(0, 8);
    const unnamed = await cli(['dump', id]);
    expectExit(unnamed, 3);
    expect(unnamed.stderr).toContain('which holds several databases (app, postgres, shop)');
    expect(unnamed.stderr).toContain('Choose one with --name DATABASE.');
    for (const args of [
      ['dump', id, '--name', 'nosuch'],
      ['verify', id, '--name', 'nosuch', '--to', to('shop')],
      ['restore', id, '--name', 'nosuch', '--to', to('nosuch')],
    ]) {
      const unknown = await cli(args);
      expectExit(unknown, 3);
      expect(unknown.stderr).toMatch(
        new RegExp(
          `^strongbox: snapshot ${id} of cluster \\S+ holds no database nosuch; it holds app, postgres, shop\n  Choose one of them with --name DATABASE\\.\n$`,
        ),
      );
    }
    const latest = await cli(['verify', 'latest', '--name', 'nosuch', '--to', to('shop')]);
    expectExit(latest, 3);
    expect(latest.stderr).toContain('there is no snapshot of database nosuch');
  });

  it('restores one database of it, then verifies it against it, catching a changed row (exit 7)', async () => {
    const restored = await cli([
      'restore',
      clusterSnapshot,
      '--name',
      'shop',
      '--to',
      to('shop_copy'),
      '--json',
    ]);
    expectExit(restored, 0);
    expect(JSON.parse(restored.stdout.toString())).toMatchObject({
      snapshot: clusterSnapshot,
      sourceDatabase: 'shop',
      database: 'shop_copy',
      verification: { tables: 2, rows: 2500, sequences: 1 },
    });
    expect(await cluster.psql('select count(*) from notes', 'shop_copy').catch(() => 'none')).toBe('none');

    const verified = await cli([
      'verify',
      clusterSnapshot,
      '--name',
      'shop',
      '--to',
      to('shop_copy'),
      '--json',
    ]);
    expectExit(verified, 0);
    expect(JSON.parse(verified.stdout.toString())).toMatchObject({
      snapshot: clusterSnapshot,
      database: 'shop',
    });

    await cluster.psql(`update items set name = 'tampered' where id = 7`, 'shop_copy');
    const tampered = await cli(['verify', clusterSnapshot, '--name', 'shop', '--to', to('shop_copy')]);
    expectExit(tampered, 7);
    expect(tampered.stderr).toMatch(/shop_copy differs from snapshot \w{8}: 1 table: public\.items/);
  });

  it('restores it in parallel, and over an existing database', async () => {
    const parallel = await cli([
      'restore',
      clusterSnapshot,
      '--name',
      'shop',
      '--jobs',
      '2',
      '--to',
      to('shop_jobs'),
    ]);
    expectExit(parallel, 0);
    expect(parallel.stderr).toMatch(/with pg_restore, 2 at a time/);
    const replaced = await cli([
      'restore',
      clusterSnapshot,
      '--name',
      'shop',
      '--to',
      to('shop_copy'),
      '--replace',
      '--yes',
      '--drop-old',
      '--jobs',
      '2',
    ]);
    expectExit(replaced, 0);
    expect(await cluster.psql('select name from items where id = 7', 'shop_copy')).toBe('item 7\n');
    expectExit(await cli(['verify', clusterSnapshot, '--name', 'shop', '--to', to('shop_copy')]), 0);
  });

  it('re-verifies the databases `restore --all` brought back, each against its cluster snapshot', async () => {
    await cluster.psql('drop database shop; drop database app');
    expectExit(await cli(['restore', '--all', clusterSnapshot, '--to', to('postgres')]), 0);
    // Without --name, the target's namesake.
    const shop = await cli(['verify', clusterSnapshot.slice(0, 8), '--to', to('shop'), '--json']);
    expectExit(shop, 0);
    expect(JSON.parse(shop.stdout.toString())).toMatchObject({ database: 'shop' });
    expectExit(await cli(['verify', 'latest', '--to', to('app')]), 0);
    await cluster.psql(`delete from notes where body = 'b'`, 'app');
    const changed = await cli(['verify', 'latest', '--name', 'app', '--to', to('app')]);
    expectExit(changed, 7);
    expect(changed.stderr).toMatch(/public\.notes \(2 rows backed up, 1 found/);
  });

  it('takes for `latest --name` the newer of a snapshot of the database and a cluster snapshot', async () => {
    const plan = async () => {
      const planned = await cli([
        'restore',
        'latest',
        '--name',
        'shop',
        '--to',
        to('shop_plan'),
        '--dry-run',
        '--json',
      ]);
      expectExit(planned, 0);
      return JSON.parse(planned.stdout.toString()) as { snapshot: string; sourceDatabase: string };
    };
    expect(await plan()).toMatchObject({ snapshot: clusterSnapshot, sourceDatabase: 'shop' });
    const single = snapshotOf(await cli(['backup', 'postgres', to('shop'), '--json']));
    expect(await plan()).toMatchObject({ snapshot: single, sourceDatabase: 'shop' });
    const newer = snapshotOf(await cli(['backup', 'postgres', '--all', to('postgres'), '--json']));
    expect(await plan()).toMatchObject({ snapshot: newer, sourceDatabase: 'shop' });
    // A database only cluster snapshots hold is found in the newest of them.
    const app = await cli(['verify', 'latest', '--name', 'shop_jobs', '--to', to('shop_jobs'), '--json']);
    expectExit(app, 0);
    expect(JSON.parse(app.stdout.toString())).toMatchObject({ snapshot: newer, database: 'shop_jobs' });
  });
});

/** The choice among snapshots, on snapshot records alone (no archives behind them). */
describe('findDatabaseSnapshot', () => {
  let test: TestRepo;
  const save = async (
    repository: Repository,
    kind: string,
    name: string,
    time: string,
    source: Record<string, unknown>,
  ) =>
    (
      await repository.saveSnapshot(
        { time, host: 'h', username: 'u', kind, name, tags: [], size: 1, stored: 0, program: 'test' },
        { tree: '0'.repeat(64), paths: [], summary: {}, source },
      )
    ).id;
  /** What a backup records of a database, without the optional parts: the schema requires it whole. */
  const recorded = (database: string) => ({
    database,
    connection: 'postgres@db1:5432',
    serverVersion: 150000,
    pgDumpMajor: 15,
    format: 'custom',
    archiveVersion: '1.14.0',
    tables: [],
  });
  const cluster = (...databases: string[]) => ({
    cluster: 'postgres@db1:5432',
    serverVersion: 150000,
    pgDumpMajor: 15,
    globals: 'globals.sql',
    databases: Object.fromEntries(
      databases.map((database) => [database, { file: `${database}.dump`, ...recorded(database) }]),
    ),
  });

  beforeAll(async () => {
    test = await createTestRepo();
  });
  afterAll(async () => {
    await test?.cleanup();
  });

  it('takes the snapshot of the database alone over a cluster snapshot of the same time', async () => {
    const { repository } = test;
    const time = '2026-12-01T02:00:00.000Z';
    const clusterId = await save(
      repository,
      'postgres-cluster',
      'postgres@db1:5432',
      time,
      cluster('shop', 'app'),
    );
    const single = await save(repository, 'postgres', 'shop', time, recorded('shop'));
    const found = await findDatabaseSnapshot(repository, 'latest', { name: 'shop' });
    expect(found).toMatchObject({ snapshot: { id: single }, database: 'shop', path: undefined });
    // app only the cluster snapshot holds; --kind narrows to one kind.
    expect(await findDatabaseSnapshot(repository, 'latest', { name: 'app' })).toMatchObject({
      snapshot: { id: clusterId },
      path: 'app.dump',
      details: { tables: [] },
    });
    expect(
      await findDatabaseSnapshot(repository, 'latest', { name: 'shop', kind: 'postgres-cluster' }),
    ).toMatchObject({ snapshot: { id: clusterId }, path: 'shop.dump' });
    // Without --name: the target's namesake, held by the cluster snapshot only.
    expect(await findDatabaseSnapshot(repository, 'latest', {}, 'app')).toMatchObject({
      snapshot: { id: clusterId },
      database: 'app',
    });
  });

  it('finds no database the records do not hold, whatever its name', async () => {
    const { repository } = test;
    const id = await save(
      repository,
      'postgres-cluster',
      'postgres@db2:5432',
      '2026-12-02T02:00:00.000Z',
      cluster('shop'),
    );
    for (const name of ['constructor', '__proto__', 'toString']) {
      const byId = findDatabaseSnapshot(repository, id, { name });
      await expect(byId).rejects.toBeInstanceOf(DatabaseChoiceError);
      await expect(byId).rejects.toMatchObject({ databases: ['shop'], named: name });
      await expect(byId).rejects.toThrow(
        `snapshot ${id.slice(0, 8)} of cluster postgres@db2:5432 holds no database ${name}; it holds shop`,
      );
      const latest = findDatabaseSnapshot(repository, 'latest', { name });
      await expect(latest).rejects.toBeInstanceOf(ConfigError);
      await expect(latest).rejects.toThrow(`there is no snapshot of database ${name}`);
    }
  });
});
