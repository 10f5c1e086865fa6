import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SourceError } from '../src/errors.ts';
import { resolveConnection } from '../src/postgres/connection.ts';
import {
  alterConfigCommand,
  compareDatabaseProperties,
  parseAclItem,
  reusedAsIs,
  splitGucList,
  type DatabaseProperties,
} from '../src/postgres/database-properties.ts';
import { RestoreTarget } from '../src/postgres/restore/target.ts';
import { findTools } from '../src/postgres/tools.ts';
import { runCli, tempRepo, type TempRepo, expectExit } from './helpers/cli.ts';
import { startCluster, type TestCluster } from './helpers/postgres.ts';

const shop: DatabaseProperties = {
  name: 'shop',
  owner: 'app_owner',
  acl: ['=T/app_owner', 'app_owner=CTc/app_owner', 'reader=c/app_owner'],
  comment: 'the shop',
  encoding: 'UTF8',
  collate: 'C',
  ctype: 'C',
  localeProvider: 'libc',
  providerLocale: null,
  icuRules: null,
  connectionLimit: -1,
  tablespace: 'pg_default',
  settings: ['work_mem=8MB'],
  roleSettings: { reader: ['work_mem=4MB'] },
};

describe('database properties, without a server', () => {
  it('splits a list setting as pg_dump does, and quotes each element as a literal', () => {
    expect(splitGucList('"a, b", public')).toEqual(['a, b', 'public']);
    expect(splitGucList(' "x""y" ,Z ')).toEqual(['x"y', 'Z']);
    expect(splitGucList('""')).toEqual(['']);
    expect(splitGucList('"open')).toBeUndefined();
    expect(alterConfigCommand('alter database "d"', 'search_path="a, b", public')).toBe(
      `alter database "d" set "search_path" to 'a, b', 'public'`,
    );
    expect(alterConfigCommand('alter database "d"', `work_mem=8MB'; drop table x; --`)).toBe(
      `alter database "d" set "work_mem" to '8MB''; drop table x; --'`,
    );
    expect(alterConfigCommand('alter database "d"', 'Search_Path=a')).toBe(
      `alter database "d" set "Search_Path" to 'a'`,
    );
    expect(alterConfigCommand('alter database "d"', 'no equals sign')).toBeUndefined();
  });

  it('reads aclitems, quoted names and grant options included', () => {
    expect(parseAclItem('=Tc/app_owner')).toEqual({
      grantee: '',
      privileges: [
        { privilege: 'TEMPORARY', grantable: false },
        { privilege: 'CONNECT', grantable: false },
      ],
      grantor: 'app_owner',
    });
    expect(parseAclItem('"Re=a""der"=c*T/"a/b"')).toEqual({
      grantee: 'Re=a"der',
      privileges: [
        { privilege: 'CONNECT', grantable: true },
        { privilege: 'TEMPORARY', grantable: false },
      ],
      grantor: 'a/b',
    });
    expect(() => parseAclItem('reader=x/app_owner')).toThrow(SourceError);
  });

  it('names each property that differs', () => {
    const found: DatabaseProperties = {
      ...shop,
      owner: 'postgres',
      acl: ['=Tc/postgres', 'postgres=CTc/postgres', 'reader=c/postgres'],
      comment: null,
      settings: ['work_mem=16MB'],
      roleSettings: {},
      tablespace: 'fast',
    };
    const present = new Set(['app_owner', 'reader']);
    const withOwners = compareDatabaseProperties(shop, found, present, { owners: true });
    expect(withOwners.differences).toEqual([
      'database shop: owner app_owner backed up, postgres found',
      'database shop: CONNECT for PUBLIC: revoked at backup, granted now',
      'database shop: comment "the shop" backed up, none found',
      'database shop: setting work_mem=8MB missing',
      'database shop: setting work_mem=16MB not in the backup',
      'database shop: setting work_mem=4MB for role reader missing',
    ]);
    expect(withOwners.notes).toEqual(['database shop: tablespace pg_default backed up, fast found']);
    // Restored with --no-owner: grantors are not compared.
    const withoutOwners = compareDatabaseProperties(
      shop,
      { ...found, acl: ['=Tc/postgres', 'postgres=CTc/postgres', 'reader=c/bob'] },
      present,
      { owners: false },
    );
    expect(withoutOwners.differences.filter((difference) => / for /.test(difference))).toEqual([
      'database shop: CONNECT for PUBLIC: revoked at backup, granted now',
      'database shop: setting work_mem=4MB for role reader missing',
    ]);
    expect(
      compareDatabaseProperties(shop, { ...shop, acl: [...shop.acl, 'auditor=c/reader'] }, present, {
        owners: true,
      }).differences,
    ).toEqual(['database shop: CONNECT for auditor: revoked at backup, granted by reader now']);
    // A role this server lacks cannot hold grants or settings: a note, not a difference.
    const roleless = compareDatabaseProperties(
      shop,
      { ...shop, acl: shop.acl.slice(0, 2), roleSettings: {} },
      new Set(['app_owner']),
      {
        owners: true,
      },
    );
    expect(roleless.differences).toEqual([]);
    expect(roleless.notes).toEqual([
      'database shop: CONNECT for reader not compared: role reader does not exist here',
      'database shop: settings for role reader not compared: the role does not exist here',
    ]);
  });
});

describe('database properties: recorded at backup, restored, verified', () => {
  let source: TestCluster;
  let target: TestCluster;
  let repo: TempRepo;
  const server = (cluster: TestCluster) =>
    `postgres:///postgres?host=${encodeURIComponent(cluster.host)}&port=${cluster.port}&user=${cluster.user}`;
  const to = (cluster: TestCluster, database: string) =>
    `postgres:///${encodeURIComponent(database)}?host=${encodeURIComponent(cluster.host)}&port=${cluster.port}&user=${cluster.user}`;
  /** What the catalog says of a database's own properties, read without strongbox. */
  const properties = async (cluster: TestCluster, database: string) =>
    cluster.psql(
      `select pg_get_userbyid(d.datdba), array(select a::text from unnest(d.datacl) a order by 1),
         pg_encoding_to_char(d.encoding), d.datcollate, d.datctype, d.datlocprovider, d.daticulocale,
         d.datconnlimit, shobj_description(d.oid, 'pg_database'),
         array(select coalesce(r.rolname, '-') || ': ' || array_to_string(s.setconfig, '; ')
           from pg_db_role_setting s left join pg_roles r on r.oid = s.setrole
           where s.setdatabase = d.oid order by 1)
       from pg_database d where d.datname = '${database}'`,
    );
  const everyDatabase = async (cluster: TestCluster) => {
    const names = (await cluster.psql('select datname from pg_database where not datistemplate order by 1'))
      .trim()
      .split('\n');
    return Object.fromEntries(
      await Promise.all(names.map(async (name) => [name, await properties(cluster, name)] as const)),
    );
  };

  beforeAll(async () => {
    [source, target] = await Promise.all([startCluster(), startCluster()]);
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
    await source.psql(
      `create role app_owner login; create role reader login; create role delegate login; create role auditor login;
       create database shop owner app_owner;
       revoke connect on database shop from public;
       grant connect on database shop to reader;
       grant connect on database shop to delegate with grant option;
       set role delegate; grant connect on database shop to auditor; reset role;
       comment on database shop is 'the shop''s data';
       alter database shop set work_mem = '8MB';
       alter database shop set search_path = 'a, b', public;
       alter database shop connection limit 40;
       alter role reader in database shop set work_mem = '4MB';
       create database icu template template0 locale_provider icu icu_locale 'en-US' locale 'C.utf8'`,
    );
    await source.psql(
      `set role app_owner; create table orders (id serial primary key, total numeric);
       insert into orders (total) select g from generate_series(1, 100) g`,
      'shop',
    );
  });
  afterAll(async () => {
    await Promise.all([source?.stop(), target?.stop()]);
    await repo?.cleanup();
  });

  it('restore --all gives every database on a new server the properties it had', async () => {
    expectExit(await runCli(['backup', 'postgres', '--all', server(source)], { env: repo.env }), 0);
    const restored = await runCli(['restore', '--all', '--to', server(target)], { env: repo.env });
    expectExit(restored, 0);
    expect(restored.stderr).toMatch(
      /shop, compared with the backup:\n(.*\n)* {2}database +\d+ properties +all match/,
    );
    expect(restored.stderr).not.toMatch(/note:/);
    const before = await everyDatabase(source);
    expect(Object.keys(before)).toEqual(['icu', 'postgres', 'shop']);
    expect(await everyDatabase(target)).toEqual(before);
    expect(before.shop).toContain('auditor=c/delegate');
    expect(before.shop).toContain('reader: work_mem=4MB');
    // Array text: the setting as the server keeps it is search_path="a, b", public.
    expect(before.shop).toContain('search_path=\\"a, b\\", public');
    expect(before.icu).toMatch(/\|i\|en-US\|/);
  });

  it('restores one database under another name, with --replace and --no-owner, and verify names what changed', async () => {
    expectExit(
      await runCli(['backup', 'postgres'], { env: { ...repo.env, ...source.env(), PGDATABASE: 'shop' } }),
      0,
    );
    const copy = to(source, 'shop_copy');
    const restore = (...args: string[]) =>
      runCli(['restore', 'latest', '--name', 'shop', ...args], { env: repo.env });
    const verify = () => runCli(['verify', '--name', 'shop', '--to', copy], { env: repo.env });
    expectExit(await restore('--to', copy), 0);
    const asBackedUp = (await properties(source, 'shop')).replaceAll('shop_copy', 'shop');
    expect(await properties(source, 'shop_copy')).toBe(asBackedUp);

    const untouched = await verify();
    expectExit(untouched, 0);
    expect(untouched.stderr).toMatch(/ {2}database +\d+ properties +all match/);
    const changes: [change: string, undo: string, named: string][] = [
      [
        'alter database shop_copy owner to postgres',
        'alter database shop_copy owner to app_owner',
        'database shop: owner app_owner backed up, postgres found',
      ],
      [
        'grant connect on database shop_copy to public',
        'revoke connect on database shop_copy from public',
        'database shop: CONNECT for PUBLIC: revoked at backup, granted now',
      ],
      [
        `comment on database shop_copy is 'changed'`,
        `comment on database shop_copy is 'the shop''s data'`,
        `database shop: comment "the shop's data" backed up, "changed" found`,
      ],
      [
        'alter database shop_copy reset work_mem',
        `alter database shop_copy set work_mem = '8MB'`,
        'database shop: setting work_mem=8MB missing',
      ],
      [
        `alter role reader in database shop_copy set work_mem = '16MB'`,
        `alter role reader in database shop_copy set work_mem = '4MB'`,
        'database shop: setting work_mem=4MB for role reader missing',
      ],
    ];
    for (const [change, undo, named] of changes) {
      await source.psql(change);
      const changed = await verify();
      expectExit(changed, 7);
      expect(changed.stderr).toContain(named);
      await source.psql(undo);
    }
    expectExit(await verify(), 0);

    await source.psql(`comment on database shop_copy is 'to be replaced'`);
    expectExit(await restore('--to', copy, '--replace', '--yes', '--drop-old'), 0);
    expect(await properties(source, 'shop_copy')).toBe(asBackedUp);

    const noOwner = await restore('--to', to(source, 'shop_mine'), '--no-owner');
    expectExit(noOwner, 0);
    expect(await properties(source, 'shop_mine')).toMatch(
      /^postgres\|\{=T\/postgres,auditor=c\/postgres,delegate=c\*\/postgres,postgres=CTc\/postgres,reader=c\/postgres\}\|/,
    );
    // A backup, three restores and seven verifications: past a minute on two loaded cores.
  }, 180_000);

  it('says what it could not reproduce: a missing tablespace, a missing role', async () => {
    await source.psql(
      // The program reads what COPY writes: one that exits first can fail COPY with a broken pipe.
      `copy (select 1) to program 'mkdir -p ${source.host}/fast && cat > /dev/null';
       create tablespace fast location '${source.host}/fast';
       create role ghost; create database spaced tablespace fast;
       grant connect on database spaced to ghost;
       alter role ghost in database spaced set work_mem = '2MB'`,
    );
    expectExit(
      await runCli(['backup', 'postgres'], { env: { ...repo.env, ...source.env(), PGDATABASE: 'spaced' } }),
      0,
    );
    const restored = await runCli(['restore', 'latest', '--name', 'spaced', '--to', to(target, 'spaced')], {
      env: repo.env,
    });
    expectExit(restored, 0);
    expect(restored.stderr).toContain(
      'note: database spaced: tablespace fast does not exist here; the database was created in the default tablespace',
    );
    expect(restored.stderr).toContain(
      'note: database spaced: CONNECT for ghost left out: role ghost does not exist here',
    );
    expect(restored.stderr).toContain(
      'note: database spaced: settings for role ghost left out: the role does not exist here',
    );
    // The verification table says the same of what it could not compare.
    expect(restored.stderr).toContain(
      '    note: database spaced: tablespace fast backed up, pg_default found',
    );
  });

  it('keeps a reused database as the server made it, and says so where that differs from the backup', async () => {
    const connection = resolveConnection(to(target, 'postgres'));
    const restoreTarget = new RestoreTarget(connection, await findTools(connection));
    const reused = await reusedAsIs(restoreTarget, 'postgres', { ...shop, collate: 'C.utf8' });
    expect(reused.recorded).toEqual({ ...shop, collate: 'C' });
    expect(reused.notes).toEqual([
      'database postgres was kept as the server had it, with collate C (C.utf8 backed up): a database takes its encoding and locale when it is created',
    ]);
  });

  it('refuses a locale the target lacks, before anything is restored', async () => {
    const connection = resolveConnection(to(target, 'postgres'));
    const restoreTarget = new RestoreTarget(connection, await findTools(connection));
    const creation = {
      properties: { ...shop, collate: 'xx_YY.UTF-8', ctype: 'xx_YY.UTF-8' },
      tablespace: false,
      serverMajor: restoreTarget.tools.server.major,
    };
    const refused = await restoreTarget.createIfFree('unlikely', creation).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(SourceError);
    expect((refused as SourceError).message).toMatch(
      /database shop cannot be created here as it was backed up \(encoding UTF8, locale provider libc, collate xx_YY\.UTF-8, ctype xx_YY\.UTF-8\): .*invalid locale name/,
    );
    expect((refused as SourceError).hint).toMatch(/locale -a/);
    expect(await restoreTarget.exists('unlikely')).toBe(false);
  });
});
