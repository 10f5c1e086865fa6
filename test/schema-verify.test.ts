import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempRepo, type TempRepo, expectExit } from './helpers/cli.ts';
import { startCluster, type TestCluster, socketUrl } from './helpers/postgres.ts';

const VARIED_SCHEMA = new URL('./fixtures/varied-schema.sql', import.meta.url);

/**
 * Restores of a database with something of every kind (test/fixtures/varied-schema.sql), proven
 * equal to the source by comparisons that do not use strongbox, and `verify` catching every kind
 * of schema change that keeps object counts equal.
 */
describe('verification of the schema', () => {
  let cluster: TestCluster;
  let repo: TempRepo;
  const to = (database: string) => socketUrl(cluster, database);
  const verify = (database: string) =>
    runCli(['verify', '--name', 'varied', '--to', to(database)], { env: repo.env });

  let restoredOnce: Promise<void> | undefined;
  /**
   * A new database `name` as a restore leaves it: a copy of one restore (the cases below each ran
   * a restore with its verification before, most of this file's time). A copy is the same
   * database: the source has no comment, grant or setting of its own that a copy would lose.
   */
  async function restoredCopy(name: string): Promise<void> {
    restoredOnce ??= runCli(['restore', 'latest', '--to', to('varied_restored')], { env: repo.env }).then(
      (restored) => expectExit(restored, 0),
    );
    await restoredOnce;
    await cluster.psql(`create database ${name} template varied_restored`);
  }

  beforeAll(async () => {
    cluster = await startCluster();
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
    await cluster.psql('create role reporting; create role auditor');
    await cluster.createDatabase('varied');
    await cluster.psql(await readFile(VARIED_SCHEMA, 'utf8'), 'varied');
    expectExit(
      await runCli(['backup', 'postgres'], { env: { ...repo.env, ...cluster.env(), PGDATABASE: 'varied' } }),
      0,
    );
  });
  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
  });

  it.each([
    ['serially', 'varied_serial', []],
    ['with --jobs 2', 'varied_parallel', ['--jobs', '2']],
  ])(
    'restores %s into a database equal to the source by an independent comparison',
    async (_, copy, args) => {
      const restored = await runCli(['restore', 'latest', '--to', to(copy), ...args], { env: repo.env });
      expectExit(restored, 0);
      expect(restored.stderr).toMatch(/ {2}schema +\d+ objects, 1 materialized view +all match\n/);
      // The one difference pg_dump cannot avoid is a note, not a failure.
      expect(restored.stderr).toMatch(
        /note: table shop\.cats: columns in another order \(whiskers, name, legs backed up, name, legs, whiskers found\)/,
      );
      expect(await schemaText(cluster, copy)).toBe(await schemaText(cluster, 'varied'));
      expect(await everyRow(cluster, copy)).toEqual(await everyRow(cluster, 'varied'));
      expectExit(await verify(copy), 0);
    },
  );

  it.each<[what: string, change: string, undo: string, message: RegExp]>([
    [
      'a function body',
      `create or replace function shop.touch() returns trigger language plpgsql as $$ begin return new; end $$`,
      `create or replace function shop.touch() returns trigger language plpgsql as $$
begin
  new.note := coalesce(new.note, '') || '.';
  return new;
end $$`,
      /function shop\.touch\(\): definition differs/,
    ],
    [
      'a disabled trigger',
      'alter table shop.orders disable trigger orders_touch',
      'alter table shop.orders enable trigger orders_touch',
      /trigger shop\.orders\.orders_touch: enabled at backup, disabled now/,
    ],
    [
      'a revoked GRANT',
      'revoke select on shop.orders from reporting',
      'grant select on shop.orders to reporting',
      /table shop\.orders: GRANT SELECT TO reporting missing/,
    ],
    [
      'an owner',
      'alter sequence shop.invoice_no owner to auditor',
      'alter sequence shop.invoice_no owner to postgres',
      /sequence shop\.invoice_no: owner postgres backed up, auditor found/,
    ],
    [
      'an added column default',
      `alter table shop.orders alter column note set default 'x'`,
      'alter table shop.orders alter column note drop default',
      /column shop\.orders\.note: default added \('x'::text\)/,
    ],
    [
      'row-level security disabled',
      'alter table shop.orders disable row level security',
      'alter table shop.orders enable row level security',
      /table shop\.orders: row-level security enabled at backup, row-level security disabled now/,
    ],
    [
      'a dropped policy',
      'drop policy all_insert on shop.orders',
      'create policy all_insert on shop.orders as restrictive for insert with check (total is not null)',
      /policy shop\.orders\.all_insert: missing/,
    ],
    [
      'int made bigint',
      `alter table "Odd Schema"."we""ird ✓ table" alter column "Mixed Case" type bigint`,
      `alter table "Odd Schema"."we""ird ✓ table" alter column "Mixed Case" type integer`,
      /column "Odd Schema"\."we""ird ✓ table"\."Mixed Case": type integer backed up, bigint found/,
    ],
    [
      'an unlogged table made logged',
      'alter table shop.cache set logged',
      'alter table shop.cache set unlogged',
      /table shop\.cache: unlogged at backup, logged now/,
    ],
    [
      'a materialized view emptied',
      'refresh materialized view shop.order_totals with no data',
      'refresh materialized view shop.order_totals',
      /materialized view shop\.order_totals: populated at backup, not populated now/,
    ],
    [
      'a materialized view populated that was not',
      'refresh materialized view shop.never_filled',
      'refresh materialized view shop.never_filled with no data',
      /materialized view shop\.never_filled: not populated at backup, populated now/,
    ],
    [
      'materialized view rows',
      `insert into shop.orders (id, customer, total, invoice) values (99999, 1, 5, 1);
       refresh materialized view shop.order_totals; delete from shop.orders where id = 99999`,
      'refresh materialized view shop.order_totals',
      /materialized view shop\.order_totals: 200 rows backed up, 200 found, contents differ/,
    ],
    [
      'a json value rewritten with other whitespace',
      `update shop.customers set raw = '{"n":1}' where id = 1`,
      `update shop.customers set raw = json_build_object('n', 1) where id = 1`,
      /1 table: shop\.customers \(200 rows backed up, 200 found, contents differ\)/,
    ],
    [
      'a comment removed',
      'comment on column shop.customers.email is null',
      `comment on column shop.customers.email is 'where receipts go'`,
      /column shop\.customers\.email: comment removed \(was where receipts go\)/,
    ],
    [
      'a dropped index',
      'drop index shop.orders_total',
      'create index orders_total on shop.orders using btree (total desc nulls last); cluster shop.orders using orders_total',
      /index shop\.orders_total: missing/,
    ],
    [
      'an enum label added',
      `alter type shop.status add value 'lost'`,
      '',
      /enum shop\.status: labels 'new', 'paid', 'shipped', 'it''s back' backed up, 'new', 'paid', 'shipped', 'it''s back', 'lost' found/,
    ],
  ])('fails verification (exit 7) naming %s', async (_, change, undo, message) => {
    const copy = `varied_changed_${Math.random().toString(36).slice(2, 8)}`;
    await restoredCopy(copy);
    expectExit(await verify(copy), 0);
    await cluster.psql(change, copy);
    const changed = await verify(copy);
    expectExit(changed, 7);
    expect(changed.stderr).toMatch(message);
    if (undo) {
      await cluster.psql(undo, copy);
      expectExit(await verify(copy), 0);
    }
    await cluster.psql(`drop database ${copy}`);
  });

  it('takes a jsonb value rewritten with other whitespace for the same value (exit 0)', async () => {
    await restoredCopy('varied_jsonb');
    await cluster.psql(
      `update shop.customers set profile = '{ "vip" :false,   "n":1 }' where id = 1`,
      'varied_jsonb',
    );
    expectExit(await verify('varied_jsonb'), 0);
  });
});

const execFileAsync = promisify(execFile);

/**
 * `pg_dump --schema-only`'s text, without what differs between two dumps by design: the random
 * \restrict keys, and the order of a table's column lines (an inheritance child's order is its
 * parent's after a restore, which the verification reports as a note).
 */
async function schemaText(cluster: TestCluster, database: string): Promise<string> {
  const { stdout } = await execFileAsync(path.join(cluster.binDir, 'pg_dump'), ['--schema-only', database], {
    env: { ...process.env, ...cluster.env() },
    maxBuffer: 64 << 20,
  });
  const lines = stdout.split('\n').filter((line) => !/^\\(un)?restrict /.test(line));
  const normalized: string[] = [];
  for (let i = 0; i < lines.length; i++) {
    normalized.push(lines[i]!);
    if (!/^CREATE TABLE .*\($/.test(lines[i]!)) continue;
    const columns: string[] = [];
    while (i + 1 < lines.length && lines[i + 1]!.startsWith('    '))
      columns.push(lines[++i]!.replace(/,$/, ''));
    normalized.push(...columns.sort());
  }
  return normalized.join('\n');
}

/** Every table's rows (COPY text, sorted), every sequence's state, every large object's bytes. */
async function everyRow(cluster: TestCluster, database: string): Promise<Record<string, string>> {
  const tables = (
    await cluster.psql(
      `select format('%I.%I', schemaname, tablename) from pg_tables
       where schemaname not in ('pg_catalog', 'information_schema') order by 1`,
      database,
    )
  )
    .split('\n')
    .filter(Boolean);
  const rows: Record<string, string> = {};
  for (const table of tables) {
    const columns = (
      await cluster.psql(
        `select string_agg(quote_ident(attname), ', ' order by attname) from pg_attribute
         where attrelid = '${table.replaceAll("'", "''")}'::regclass and attnum > 0 and not attisdropped`,
        database,
      )
    ).trim();
    const copied = await cluster.psql(`copy (select ${columns} from only ${table}) to stdout`, database);
    rows[table] = copied.split('\n').sort().join('\n');
  }
  rows.sequences = await cluster.psql(
    'select schemaname, sequencename, last_value from pg_sequences order by 1, 2',
    database,
  );
  rows.largeObjects = await cluster.psql(
    'select oid, md5(lo_get(oid)), lomowner::regrole from pg_largeobject_metadata order by oid',
    database,
  );
  return rows;
}
