import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempRepo, type TempRepo, expectExit } from './helpers/cli.ts';
import { startCluster, type TestCluster, socketUrl } from './helpers/postgres.ts';

describe('restore postgres', () => {
  let cluster: TestCluster;
  let repo: TempRepo;
  let sourceEnv: Record<string, string>;
  const to = (database: string) => socketUrl(cluster, database);
  const count = async (database: string, table: string) =>
    Number((await cluster.psql(`select count(*) from ${table}`, database)).trim());
  const databases = async () =>
    (
      await cluster.psql(
        `select datname from pg_database where datname like 'app%' or datname like 'strongbox%' order by 1`,
      )
    )
      .trim()
      .split('\n')
      .filter(Boolean);

  beforeAll(async () => {
    cluster = await startCluster();
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
    await cluster.createDatabase('app');
    await cluster.psql(
      `create table items (id int primary key, name text); insert into items select g, 'item ' || g from generate_series(1, 1000) g;
       create index items_name on items (name); create sequence app_seq; select setval('app_seq', 42)`,
      'app',
    );
    sourceEnv = { ...repo.env, ...cluster.env(), PGDATABASE: 'app' };
    expectExit(await runCli(['backup', 'postgres'], { env: sourceEnv }), 0);
  });
  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
  });

  it('restores into a new database', async () => {
    const restored = await runCli(['restore', 'latest', '--to', to('app_copy'), '--json'], { env: repo.env });
    expectExit(restored, 0);
    expect(JSON.parse(restored.stdout.toString())).toMatchObject({
      database: 'app_copy',
      replace: false,
      dryRun: false,
    });
    expect(await count('app_copy', 'items')).toBe(1000);
    expect(await cluster.psql('select name from items where id = 7', 'app_copy')).toBe('item 7\n');
  });

  it('catches a changed value in a restored database by its fingerprints (exit 7)', async () => {
    const target = to('app_copy');
    const untouched = await runCli(['verify', '--name', 'app', '--to', target], { env: repo.env });
    expectExit(untouched, 0);
    expect(untouched.stderr).toMatch(
      /compared with snapshot \w{8}:\n {2}tables +1 \(1000 rows\) +all match\n {2}sequences +1 +all match\n {2}objects +1 schema +all match\n/,
    );
    await cluster.psql(`update items set name = 'tampered' where id = 500`, 'app_copy');
    const tampered = await runCli(['verify', '--name', 'app', '--to', target], { env: repo.env });
    expectExit(tampered, 7);
    expect(tampered.stderr).toMatch(
      /app_copy differs from snapshot \w{8}: 1 table: public\.items \(1000 rows backed up, 1000 found, contents differ\)/,
    );
    // The table comes first: what differs, and what still matches.
    expect(tampered.stderr).toMatch(
      /compared with the backup:\n {2}tables +1 \(1000 rows\) +1 differs\n {4}public\.items: 1000 rows backed up, 1000 found, contents differ\n {2}sequences +1 +all match\n/,
    );
    await cluster.psql('delete from items where id = 1', 'app_copy');
    expect((await runCli(['verify', '--name', 'app', '--to', target], { env: repo.env })).stderr).toMatch(
      /1000 rows backed up, 999 found/,
    );
  });

  it('names a differing table as an identifier, quoted where its name needs it', async () => {
    await cluster.createDatabase('app_odd');
    await cluster.psql(
      `create schema "Sch ema"; create table "Sch ema"."we""ird ✓ table" (id int primary key, v text);
       insert into "Sch ema"."we""ird ✓ table" select g, 'v' || g from generate_series(1, 50) g`,
      'app_odd',
    );
    expectExit(await runCli(['backup', 'postgres'], { env: { ...sourceEnv, PGDATABASE: 'app_odd' } }), 0);
    expectExit(
      await runCli(['restore', 'latest', '--name', 'app_odd', '--to', to('app_odd_copy')], { env: repo.env }),
      0,
    );
    await cluster.psql(`update "Sch ema"."we""ird ✓ table" set v = 'x' where id = 3`, 'app_odd_copy');
    const tampered = await runCli(['verify', '--name', 'app_odd', '--to', to('app_odd_copy')], {
      env: repo.env,
    });
    expectExit(tampered, 7);
    expect(tampered.stderr).toContain(
      '1 table: "Sch ema"."we""ird ✓ table" (50 rows backed up, 50 found, contents differ)',
    );
    expect(tampered.stderr).toContain(
      '    "Sch ema"."we""ird ✓ table": 50 rows backed up, 50 found, contents differ',
    );
  });

  it('catches a moved sequence and a missing index (exit 7)', async () => {
    expectExit(
      await runCli(['restore', 'latest', '--name', 'app', '--to', to('app_catalog')], { env: repo.env }),
      0,
    );
    await cluster.psql(`select setval('app_seq', 43); drop index items_name`, 'app_catalog');
    const changed = await runCli(['verify', '--name', 'app', '--to', to('app_catalog')], { env: repo.env });
    expectExit(changed, 7);
    expect(changed.stderr).toMatch(/sequence public\.app_seq: 42 backed up, 43 found/);
    expect(changed.stderr).toMatch(/schema public: indexes: 2 backed up, 1 found/);
    expect(changed.stderr).toMatch(
      / {2}tables +1 \(1000 rows\) +all match\n {2}sequences +1 +1 differs\n {4}sequence public\.app_seq: 42 backed up, 43 found\n {2}objects +1 schema +1 differs\n/,
    );
  });

  it('refuses an existing database without --replace, and a replace nobody confirmed', async () => {
    const exists = await runCli(['restore', 'latest', '--to', to('app')], { env: repo.env });
    expectExit(exists, 3);
    expect(exists.stderr).toMatch(/database app already exists/);
    expect(exists.stderr).toContain(
      '  Restore into a new database, or pass --replace to swap it for the restored one.',
    );
    const unconfirmed = await runCli(['restore', 'latest', '--to', to('app'), '--replace'], {
      env: repo.env,
    });
    expectExit(unconfirmed, 3);
    expect(unconfirmed.stderr).toMatch(/needs confirmation/);
    expect(await count('app', 'items')).toBe(1000);
  });

  it('prints the plan and changes nothing with --dry-run', async () => {
    const before = await databases();
    const planned = await runCli(['restore', 'latest', '--to', to('app'), '--replace', '--dry-run'], {
      env: repo.env,
    });
    expectExit(planned, 0);
    expect(planned.stdout.toString()).toMatch(/plan: restore snapshot \w{8} of app/);
    expect(planned.stdout.toString()).toMatch(/rename it to app_before_/);
    expect(await databases()).toEqual(before);
  });

  it('replaces a database by restoring beside it and swapping names, keeping the old one', async () => {
    await cluster.psql('delete from items where id > 10', 'app');
    const replaced = await runCli(['restore', 'latest', '--to', to('app'), '--replace', '--yes', '--json'], {
      env: repo.env,
    });
    expectExit(replaced, 0);
    const keptAs = JSON.parse(replaced.stdout.toString()).keptAs as string;
    expect(keptAs).toMatch(/^app_before_\d{8}_\d{6}$/);
    expect(await count('app', 'items')).toBe(1000);
    expect(await count(keptAs, 'items')).toBe(10);
    expect((await databases()).filter((name) => name.includes('restore_'))).toEqual([]);
    await cluster.psql(`drop database "${keptAs}"`);
  });

  it('leaves the original untouched when the restore fails', async () => {
    // A backup that pg_restore cannot replay: its table belongs to a role that is gone.
    await cluster.psql(`create role app_owner; create database app_roles; `);
    await cluster.psql(`create table owned (id int); alter table owned owner to app_owner`, 'app_roles');
    expectExit(
      await runCli(['backup', 'postgres'], {
        env: { ...repo.env, ...cluster.env(), PGDATABASE: 'app_roles' },
      }),
      0,
    );
    await cluster.psql(`drop database app_roles; drop role app_owner; create database app_roles`);
    await cluster.psql(
      `create table survivor (note text); insert into survivor values ('original')`,
      'app_roles',
    );

    const failed = await runCli(
      ['restore', 'latest', '--name', 'app_roles', '--to', to('app_roles'), '--replace', '--yes'],
      { env: repo.env },
    );
    expectExit(failed, 4);
    expect(failed.stderr).toMatch(
      /pg_restore into strongbox_restore_app_roles_\S+ failed: .*role "app_owner" does not exist/,
    );
    expect(await cluster.psql('select note from survivor', 'app_roles')).toBe('original\n');
    expect((await databases()).filter((name) => name.startsWith('app_roles'))).toEqual(['app_roles']);

    // The same with several pg_restore runs: the failure stops them all and leaves nothing behind.
    const failedInParallel = await runCli(
      [
        'restore',
        'latest',
        '--name',
        'app_roles',
        '--to',
        to('app_roles'),
        '--replace',
        '--yes',
        '--jobs',
        '2',
      ],
      { env: repo.env },
    );
    expectExit(failedInParallel, 4);
    expect(failedInParallel.stderr).toMatch(
      /pg_restore into strongbox_restore_app_roles_\S+ failed: .*role "app_owner" does not exist/,
    );
    expect(await cluster.psql('select note from survivor', 'app_roles')).toBe('original\n');
    expect((await databases()).filter((name) => name.startsWith('app_roles'))).toEqual(['app_roles']);

    // Without owners it restores.
    expectExit(
      await runCli(
        ['restore', 'latest', '--name', 'app_roles', '--to', to('app_roles_noowner'), '--no-owner'],
        { env: repo.env },
      ),
      0,
    );
  });

  it('picks the newest snapshot at or before --at, and of the environment --env names', async () => {
    const listed = JSON.parse(
      (await runCli(['snapshots', '--json', '--name', 'app'], { env: repo.env })).stdout.toString(),
    ) as { time: string }[];
    await new Promise((resolve) => setTimeout(resolve, 1100));
    await cluster.psql('insert into items values (5000, $$later$$)', 'app');
    expectExit(await runCli(['backup', 'postgres', '--env', 'staging'], { env: sourceEnv }), 0);
    const restored = await runCli(
      ['restore', '--at', listed.at(-1)!.time, '--name', 'app', '--to', to('app_then')],
      { env: repo.env },
    );
    expectExit(restored, 0);
    expect(await count('app_then', 'items')).toBe(1000);

    // A newer snapshot of no environment: --env staging reaches past it.
    await cluster.psql('insert into items values (5001, $$untagged$$)', 'app');
    expectExit(await runCli(['backup', 'postgres'], { env: sourceEnv }), 0);
    expectExit(
      await runCli(['restore', 'latest', '--name', 'app', '--env', 'staging', '--to', to('app_staging')], {
        env: repo.env,
      }),
      0,
    );
    expect(await count('app_staging', 'items')).toBe(1001);
  });
});
