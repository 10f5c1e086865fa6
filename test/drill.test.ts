import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfigFile } from '../src/config-file/config-file.ts';
import { firstCsvField } from '../src/postgres/verify/drill-checks.ts';
import { formatElapsed, parseDuration } from '../src/util/duration.ts';
import { expectExit, runCli, tempRepo, type TempRepo } from './helpers/cli.ts';
import { socketUrl, startCluster, type TestCluster } from './helpers/postgres.ts';

describe('drill settings', () => {
  it('reads objectives as fixed lengths of time, m being minutes', () => {
    expect(parseDuration('30m', 'duration', { positive: true })).toBe(1800);
    expect(parseDuration('24h', 'duration', { positive: true })).toBe(86400);
    expect(parseDuration('7d', 'duration', { positive: true })).toBe(604800);
    expect(parseDuration('1h30m', 'duration', { positive: true })).toBe(5400);
    expect(parseDuration('1ms', 'duration', { positive: true })).toBe(0.001);
    for (const bad of ['', '30', 'm', '0s', '-5m', '1y', '1.5.2h'])
      expect(() => parseDuration(bad, 'duration', { positive: true }), bad).toThrow(/invalid duration/);
    expect(formatElapsed(0.4)).toBe('0.40 s');
    expect(formatElapsed(754)).toBe('12 min 34 s');
    expect(formatElapsed(7 * 86400)).toBe('7 d 0 h');
  });

  it('reads the first field of psql CSV output', () => {
    expect(firstCsvField('')).toBeUndefined();
    expect(firstCsvField('3\n')).toBe('3');
    expect(firstCsvField(',1\n')).toBe('');
    expect(firstCsvField('"a,""b""\nc",2\nx\n')).toBe('a,"b"\nc');
  });

  it('reads drill.checks from the configuration file, and refuses a psql command', () => {
    const config = parseConfigFile(
      'drill:\n  checks:\n    - { name: n, query: select 1, expected: 1, timeout: 5s }\n    - { name: b, query: select true, expected: true }\n',
      'strongbox.yaml',
    );
    expect(config.drill.checks).toEqual([
      { name: 'n', query: 'select 1', expected: '1', timeoutSeconds: 5 },
      { name: 'b', query: 'select true', expected: 't', timeoutSeconds: 60 },
    ]);
    expect(() =>
      parseConfigFile('drill:\n  checks:\n    - { name: x, query: "\\\\! ls", expected: 0 }\n', 'f.yaml'),
    ).toThrow('drill.checks.0.query: expected SQL, not a psql command');
    expect(() => parseConfigFile('drill:\n  check: []\n', 'f.yaml')).toThrow('drill.check: unknown key');
  });
});

describe('drill', () => {
  let cluster: TestCluster;
  let repo: TempRepo;
  const to = (database: string) => socketUrl(cluster, database);
  /** Every database but the cluster's own: what a drill must leave as it found. */
  const databases = async () =>
    (
      await cluster.psql(
        `select datname from pg_database where not datistemplate and datname <> 'postgres' order by 1`,
      )
    )
      .trim()
      .split('\n')
      .filter(Boolean);
  const drill = (args: string[], env: Record<string, string> = {}) =>
    runCli(['drill', ...args], { env: { ...repo.env, ...env } });

  beforeAll(async () => {
    cluster = await startCluster();
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
    await cluster.createDatabase('app');
    // A valid foreign key, and one added NOT VALID over a row that breaks it, as a database
    // whose key was added without checking old rows has it: pg_dump keeps it NOT VALID.
    await cluster.psql(
      `create table customers (id int primary key, name text);
       insert into customers select g, 'customer ' || g from generate_series(1, 3) g;
       create table orders (id int primary key, customer int not null references customers, referrer int);
       insert into orders select g, 1 + g % 3, null from generate_series(1, 100) g;
       update orders set referrer = 99 where id = 7;
       alter table orders add constraint orders_referrer_fkey foreign key (referrer) references customers not valid;
       create function touch() returns trigger language plpgsql as 'begin return new; end';
       create trigger orders_touch before update on orders for each row execute function touch();
       create view big_orders as select * from orders where id > 50;`,
      'app',
    );
    expectExit(
      await runCli(['backup', 'postgres', '--env', 'production'], {
        env: { ...repo.env, ...cluster.env(), PGDATABASE: 'app' },
      }),
      0,
    );
  });
  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
  });

  it('restores, verifies and checks the snapshot in a scratch database, times it and drops it', async () => {
    const before = await databases();
    const result = await drill(['latest', '--to', to('drill_app'), '--rto', '30m', '--rpo', '24h', '--json']);
    expectExit(result, 0);
    const record = JSON.parse(result.stdout.toString());
    expect(record).toMatchObject({
      database: 'app',
      kind: 'postgres',
      env: 'production',
      result: 'passed',
      exceeded: [],
      failures: [],
      objectives: { rtoSeconds: 1800, rpoSeconds: 86400 },
      target: expect.stringMatching(/\/drill_app$/),
    });
    expect(record.snapshot).toMatch(/^[0-9a-f]{64}$/);
    expect(record.newestSnapshot).toBe(record.snapshot);
    for (const phase of ['fetch', 'restore', 'verify', 'checks'])
      expect(record.phases[phase]).toBeGreaterThan(0);
    expect(record.rtoSeconds).toBeCloseTo(
      record.phases.fetch + record.phases.restore + record.phases.verify,
      6,
    );
    expect(record.rpoSeconds).toBeGreaterThanOrEqual(0);
    expect(record.rpoSeconds).toBeLessThan(86400);
    expect(record.verification).toMatchObject({ tables: 2, rows: 103, mismatched: [] });
    // The NOT VALID key is reported, without failing the drill.
    expect(record.checks).toContainEqual(
      expect.objectContaining({
        name: 'foreign keys',
        status: 'warning',
        summary: '2 foreign keys, 1 NOT VALID',
        notes: ['public.orders.orders_referrer_fkey is NOT VALID'],
      }),
    );
    expect(record.objects).toContainEqual({ kind: 'triggers', backedUp: 1, found: 1 });
    expect(record.objects).toContainEqual({ kind: 'views', backedUp: 1, found: 1 });
    // Progress per phase, on standard error.
    for (const phase of ['fetch', 'restore', 'verify', 'checks'])
      expect(result.stderr).toMatch(new RegExp(`drill: ${phase} took \\d`));
    expect(await databases()).toEqual(before);
  });

  it('keeps the restored database with --keep, and prints a summary', async () => {
    const result = await drill(['--to', to('drill_kept'), '--keep']);
    expectExit(result, 0);
    const summary = result.stdout.toString();
    expect(summary).toMatch(/^drill of app, snapshot [0-9a-f]{8} \(.*\): passed\n/);
    expect(summary).toMatch(/\n {2}RTO +\d+\.\d+ s\n/);
    expect(summary).toContain(', kept as drill_kept');
    expect(summary).toMatch(/\n {2}foreign keys +warning +2 foreign keys, 1 NOT VALID\n/);
    expect(await cluster.psql('select count(*) from orders', 'drill_kept')).toBe('100\n');
    await cluster.psql('drop database drill_kept');
  });

  it('refuses a database that exists, and leaves it as it was (exit 3)', async () => {
    await cluster.createDatabase('taken');
    await cluster.psql('create table precious (v text); insert into precious values (1)', 'taken');
    const before = await databases();
    const result = await drill(['--to', to('taken')]);
    expectExit(result, 3);
    expect(result.stderr).toMatch(/database taken already exists/);
    expect(result.stderr).toContain('A drill restores into a database of its own');
    expect(await cluster.psql('select v from precious', 'taken')).toBe('1\n');
    expect(await databases()).toEqual(before);
  });

  it('fails on a configured check whose answer differs (exit 7), writes the report, and counts orphans', async () => {
    const config = path.join(repo.dir, 'strongbox.yaml');
    await writeFile(
      config,
      [
        'drill:',
        '  checks:',
        '    - name: three customers',
        '      query: select count(*) from customers',
        '      expected: 3',
        '    - name: no order without a customer',
        '      query: select count(*) from orders where referrer is not null',
        '      expected: 0',
        '    - name: null is null',
        '      query: select null::text, 1',
        '      expected: null',
        '    - name: read only',
        '      query: delete from orders',
        '      expected: 0',
      ].join('\n'),
    );
    const report = path.join(repo.dir, 'drill.md');
    const before = await databases();
    const result = await drill(['--to', to('drill_checked'), '--report', report, '--check-orphans'], {
      STRONGBOX_CONFIG: config,
    });
    expectExit(result, 7);
    expect(result.stderr).toMatch(/the drill of app \(snapshot [0-9a-f]{8}\) failed: 2 problems/);
    const markdown = await readFile(report, 'utf8');
    expect(markdown).toMatch(/^# Restore drill of app: FAILED\n/);
    expect(markdown).toContain('| three customers | passed | "3" |');
    expect(markdown).toContain('| no order without a customer | **failed** | expected "0", found "1" |');
    expect(markdown).toContain('| null is null | passed | NULL |');
    expect(markdown).toMatch(
      /\| read only \| \*\*failed\*\* \| the query failed: cannot execute DELETE in a read-only transaction/,
    );
    expect(markdown).toContain(
      '- foreign keys: public.orders.orders\\_referrer\\_fkey is NOT VALID: 1 row of public.orders references no row of public.customers',
    );
    expect(markdown).toMatch(/\| RTO \(fetch \+ restore \+ verify\) \| \d+\.\d+ s \| — \|/);
    expect(await databases()).toEqual(before);
    expect(await cluster.psql('select count(*) from orders', 'app')).toBe('100\n');
  });

  it('fails when the restored database differs from its backup (exit 7), and drops it all the same', async () => {
    // A materialized view of random() has other rows after every restore (docs/CLI.md).
    await cluster.createDatabase('volatile');
    await cluster.psql('create materialized view dice as select random() as roll', 'volatile');
    expectExit(
      await runCli(['backup', 'postgres'], {
        env: { ...repo.env, ...cluster.env(), PGDATABASE: 'volatile' },
      }),
      0,
    );
    const before = await databases();
    const result = await drill(['--name', 'volatile', '--to', to('drill_volatile'), '--json']);
    expectExit(result, 7);
    const record = JSON.parse(result.stdout.toString());
    expect(record).toMatchObject({ database: 'volatile', result: 'failed' });
    expect(record.failures).toEqual([
      expect.stringMatching(
        /^schema: materialized view public\.dice: 1 row backed up, 1 found, contents differ$/,
      ),
    ]);
    // Checked where it was restored, under its scratch name, then dropped.
    expect(record.checks.map((check: { name: string }) => check.name)).toEqual([
      'foreign keys',
      'object counts',
    ]);
    expect(record.phases.verify).toBeGreaterThan(0);
    expect(await databases()).toEqual(before);
  });

  it('exits 8 when the recovery time is over its objective, with the report written', async () => {
    const report = path.join(repo.dir, 'slow.md');
    const result = await drill([
      '--name',
      'app',
      '--to',
      to('drill_slow'),
      '--rto',
      '1ms',
      '--report',
      report,
    ]);
    expectExit(result, 8);
    expect(result.stderr).toMatch(/passed, but the recovery time .* is over its objective of 0\.00 s/);
    const markdown = await readFile(report, 'utf8');
    expect(markdown).toMatch(/^# Restore drill of app: passed, OVER OBJECTIVE\n/);
    expect(markdown).toMatch(/\| RTO \(fetch \+ restore \+ verify\) \| .* \| 0\.00 s \| \*\*exceeded\*\* \|/);
  });

  it('exits 8 when the newest snapshot is older than the recovery point objective', async () => {
    await cluster.createDatabase('archive');
    await cluster.psql('create table t (v int); insert into t values (1)', 'archive');
    expectExit(
      await runCli(['backup', 'postgres', '--time', '2020-01-01T00:00:00Z'], {
        env: { ...repo.env, ...cluster.env(), PGDATABASE: 'archive' },
      }),
      0,
    );
    const result = await drill(['--name', 'archive', '--to', to('drill_archive'), '--rpo', '7d', '--json']);
    expectExit(result, 8);
    const record = JSON.parse(result.stdout.toString());
    expect(record).toMatchObject({ database: 'archive', result: 'over-objective', exceeded: ['rpo'] });
    expect(record.rpoSeconds).toBeGreaterThan(5 * 365 * 86400);
    expect(result.stderr).toMatch(
      /the age of the newest snapshot \d+ d \d+ h is over its objective of 7 d 0 h/,
    );
  });

  it("labels a drill that fails after finding its snapshot with the snapshot's group, as a success is", async () => {
    const dir = path.join(repo.dir, 'drill-metrics');
    await mkdir(dir);
    const result = await drill(
      ['--name', 'app', '--to', to('drill_no_tools'), '--pg-bin', path.join(repo.dir, 'no-such-dir')],
      {
        STRONGBOX_METRICS_TEXTFILE: dir,
      },
    );
    expect(result.code).not.toBe(0);
    const [file] = await readdir(dir);
    const text = await readFile(path.join(dir, file!), 'utf8');
    expect(text).toMatch(
      /^strongbox_drill_last_failure_timestamp_seconds\{repository="[^"]+",host="[^"]+",kind="postgres",name="app",env="production"\} \d/m,
    );
  });

  it('records every drill in the repository, where metrics find the last success, failure and RTO', async () => {
    const result = await runCli(['metrics'], { env: repo.env });
    expectExit(result, 0);
    const exposition = result.stdout.toString();
    const series = (name: string, database: string) =>
      new RegExp(`^${name}\\{[^}]*kind="postgres",name="${database}"[^}]*\\} (\\S+)$`, 'm').exec(
        exposition,
      )?.[1];
    // app: drills passed, then failed (a check, a difference) and went over the RTO objective.
    const success = Number(series('strongbox_drill_last_success_timestamp_seconds', 'app'));
    const failure = Number(series('strongbox_drill_last_failure_timestamp_seconds', 'app'));
    expect(success).toBeGreaterThan(Date.now() / 1000 - 3600);
    expect(failure).toBeGreaterThanOrEqual(success);
    expect(series('strongbox_drill_rto_objective_seconds', 'app')).toBe('0.001');
    expect(Number(series('strongbox_drill_rto_seconds', 'app'))).toBeGreaterThan(0);
    // archive: only a drill over its RPO objective, which is no success.
    expect(series('strongbox_drill_last_success_timestamp_seconds', 'archive')).toBeUndefined();
    expect(Number(series('strongbox_drill_rpo_seconds', 'archive'))).toBeGreaterThan(5 * 365 * 86400);
    expect(exposition).toMatch(/^strongbox_drill_last_failure_timestamp_seconds\{[^}]*name="archive"\} /m);

    const json = JSON.parse((await runCli(['--json', 'metrics'], { env: repo.env })).stdout.toString());
    const archive = json.recorded.find(
      (entry: { operation: string; group: { name?: string } }) =>
        entry.operation === 'drill' && entry.group.name === 'archive',
    );
    expect(archive).toMatchObject({ newest: { result: 'failure', exitCode: 8 } });
    expect(archive.newestSuccess).toBeUndefined();
  });
});
