import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempRepo, type TempRepo, expectExit } from './helpers/cli.ts';
import { startCluster, type TestCluster } from './helpers/postgres.ts';

describe('backup postgres --all', () => {
  let source: TestCluster;
  let target: TestCluster;
  let repo: TempRepo;
  const server = (cluster: TestCluster) =>
    `postgres:///postgres?host=${encodeURIComponent(cluster.host)}&port=${cluster.port}&user=${cluster.user}`;

  beforeAll(async () => {
    [source, target] = await Promise.all([startCluster(), startCluster()]);
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
    await source.psql(
      `create role app_owner login; create database sales owner app_owner; create database "weird/name"; create database "__proto__"`,
    );
    await source.psql(
      `set role app_owner; create table orders (id serial primary key, total numeric); insert into orders (total) select g * 1.5 from generate_series(1, 500) g`,
      'sales',
    );
    await source.psql(`create table notes (body text); insert into notes values ('a'), ('b')`, 'weird/name');
  });
  afterAll(async () => {
    await Promise.all([source?.stop(), target?.stop()]);
    await repo?.cleanup();
  });

  it('rebuilds roles and every database on another server, each verified', async () => {
    const backedUp = await runCli(['backup', 'postgres', '--all', server(source), '--json'], {
      env: repo.env,
    });
    expectExit(backedUp, 0);
    expect(JSON.parse(backedUp.stdout.toString()).summary).toMatchObject({ databases: 4 });

    const planned = await runCli(['restore', '--all', '--to', server(target), '--dry-run'], {
      env: repo.env,
    });
    expectExit(planned, 0);
    expect(planned.stdout.toString()).toMatch(/restore into the empty database postgres/);

    const restored = await runCli(['restore', '--all', '--jobs', '2', '--to', server(target), '--json'], {
      env: repo.env,
    });
    expectExit(restored, 0);
    const result = JSON.parse(restored.stdout.toString()) as {
      databases: string[];
      verification: Record<string, { tables: number; rows: number; sequences: number }>;
    };
    // A name that is special to JavaScript objects is recorded and restored like any other.
    expect(result.databases.sort()).toEqual(['__proto__', 'postgres', 'sales', 'weird/name']);
    expect(result.verification.sales).toMatchObject({ tables: 1, rows: 500, sequences: 1 });
    expect(await target.psql(`select rolname from pg_roles where rolname = 'app_owner'`)).toBe('app_owner\n');
    expect(await target.psql(`select tableowner from pg_tables where tablename = 'orders'`, 'sales')).toBe(
      'app_owner\n',
    );
    expect(await target.psql('select sum(total) from orders', 'sales')).toBe('187875.0\n');
    expect(await target.psql('select count(*) from notes', 'weird/name')).toBe('2\n');
  });

  it('refuses to restore over databases that exist', async () => {
    const again = await runCli(['restore', '--all', '--to', server(target)], { env: repo.env });
    expectExit(again, 3);
    expect(again.stderr).toMatch(/database (__proto__|sales|weird\/name) already exists/);
  });
});
