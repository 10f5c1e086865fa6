import { promises as fs } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRepository } from '../src/index.ts';
import { expectExit, runCli, startCli, tempRepo, type TempRepo } from './helpers/cli.ts';
import { socketUrl, startCluster, type TestCluster } from './helpers/postgres.ts';
import { PASSWORD } from './helpers/repo.ts';

/** An HTTP server on loopback that records the JSON bodies posted to it. */
async function webhookReceiver(): Promise<{ url: string; bodies: unknown[]; close(): Promise<void> }> {
  const bodies: unknown[] = [];
  const server: Server = createServer((request, response) => {
    let body = '';
    request.on('data', (chunk: Buffer) => (body += chunk.toString()));
    request.on('end', () => {
      bodies.push(JSON.parse(body));
      response.end('ok');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    bodies,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

async function until(condition: () => Promise<boolean>): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 20));
}

const hoursAgo = (hours: number) => new Date(Date.now() - hours * 3600_000).toISOString();

/** The first line of --nagios output: the state, the summary, and the perfdata as label → value. */
function nagios(stdout: Buffer): { state: string; summary: string; perf: Map<string, string> } {
  const [first] = stdout.toString().split('\n');
  const match = /^STRONGBOX (OK|WARNING|CRITICAL|UNKNOWN) - (.*?)(?: \| (.*))?$/.exec(first!);
  expect(match, first).not.toBeNull();
  const perf = new Map<string, string>();
  for (const item of match![3]?.match(/'[^']*'=\S+|\S+=\S+/g) ?? []) {
    const at = item.lastIndexOf('=');
    perf.set(item.slice(0, at).replace(/^'|'$/g, ''), item.slice(at + 1));
  }
  return { state: match![1]!, summary: match![2]!, perf };
}

describe('strongbox health', () => {
  let repo: TempRepo;
  let env: Record<string, string>;
  const cli = (args: string[], input?: string) =>
    runCli(args, { env, ...(input !== undefined ? { input } : {}) });
  const backup = async (name: string, bytes: number, time: string) =>
    expectExit(await cli(['backup', 'stdin', '--name', name, '--time', time], 'x'.repeat(bytes)), 0);

  beforeAll(async () => {
    repo = await tempRepo(PASSWORD);
    env = { ...repo.env, STRONGBOX_STATE_DIR: path.join(repo.dir, 'state') };
    expectExit(await cli(['init']), 0);
    // steady: daily backups of about the same size, the newest an hour old.
    for (const [hours, bytes] of [
      [73, 1000],
      [49, 1010],
      [25, 990],
      [1, 1005],
    ] as const)
      await backup('steady', bytes, hoursAgo(hours));
  });
  afterAll(async () => {
    await repo?.cleanup();
  });

  it('is OK when every group is fresh and the repository was checked, with perfdata for Nagios', async () => {
    expectExit(await cli(['check', '-q']), 0);
    const text = await cli(['health']);
    expectExit(text, 0);
    expect(text.stdout.toString()).toMatch(/^health of .*: OK\n/);
    expect(text.stdout.toString()).toMatch(
      /OK {8}steady \(stdin on [^)]+\): newest snapshot \w+ is 1 h 00 min old/,
    );

    const result = await cli(['health', '--nagios']);
    expectExit(result, 0);
    const { state, perf } = nagios(result.stdout);
    expect(state).toBe('OK');
    expect(perf.get('steady age')).toMatch(/^36\d\ds;;86400;0$/);
    expect(perf.get('steady size')).toBe('1005B;;;0');
    expect(perf.get('stale locks')).toBe('0;1;;0');
    expect(perf.get('check age')).toMatch(/^\d+s;604800;;0$/);

    const json = JSON.parse((await cli(['--json', 'health'])).stdout.toString());
    expect(json).toMatchObject({ status: 'ok', problems: [] });
    expect(json.findings).toContainEqual(
      expect.objectContaining({ check: 'backup-size', status: 'ok', compared: 3, averageBytes: 1000 }),
    );
  });

  it('warns of a size far off the average and of a stale lock; a group too old is critical', async () => {
    await backup('grown', 1000, hoursAgo(30));
    await backup('grown', 1000, hoursAgo(20));
    await backup('grown', 3000, hoursAgo(2));
    const warning = await cli(['health', '--nagios']);
    expectExit(warning, 1);
    expect(nagios(warning.stdout).summary).toMatch(
      /^grown \(stdin on [^)]+\): newest snapshot 2\.93 KiB, 200 % above the average of 1000 B over 2 snapshots \(limit 50 %\)$/,
    );
    // A wider limit, from the flag or the configuration file's alerts section, lets it pass.
    expectExit(await cli(['health', '--nagios', '--size-change', '250%']), 0);
    const config = path.join(repo.dir, 'alerts.yaml');
    await fs.writeFile(config, 'alerts:\n  size-change: 250%\n');
    expectExit(await cli(['--config', config, 'health', '--nagios']), 0);

    // A backup killed with its lock held leaves a lock whose process is gone: stale.
    const child = startCli(['backup', 'stdin', '--name', 'killed'], { env, stdin: 'pipe' });
    child.stdin!.write('some bytes, then nothing');
    const locks = path.join(repo.repo, 'locks');
    await until(async () => (await fs.readdir(locks)).some((name) => !name.startsWith('.')));
    process.kill(-child.pid!, 'SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    const stale = await cli(['health', '--size-change', '250%']);
    expectExit(stale, 8);
    expect(stale.stdout.toString()).toMatch(
      /WARNING {3}locks: 1 stale lock \(backup stdin on [^,]+, pid \d+\): strongbox unlock removes them/,
    );
    expect(stale.stderr).toMatch(/health: WARNING, 1 problem/);
    expectExit(await cli(['unlock']), 0);

    // Older than --max-age: critical, and critical wins over the size's warning.
    const critical = await cli(['health', '--nagios', '--max-age', '90m']);
    expectExit(critical, 2);
    const { state, summary } = nagios(critical.stdout);
    expect(state).toBe('CRITICAL');
    expect(summary).toMatch(
      /^2 problems, the first: grown .*: newest snapshot \w+ is 2 h 00 min old, over the limit of 1 h 30 min$/,
    );
    expect(critical.stdout.toString().split('\n')).toContainEqual(expect.stringMatching(/200 % above/));
  });

  it('reports a repository it cannot reach as critical, and a bad flag as unknown', async () => {
    const missing = { ...env, STRONGBOX_REPO: path.join(repo.dir, 'nothing-here') };
    const result = await runCli(['health', '--nagios'], { env: missing });
    expectExit(result, 2);
    expect(nagios(result.stdout).summary).toMatch(/^repository: not reachable: /);
    const plain = await runCli(['health'], { env: missing });
    expect(plain.code).not.toBe(0);
    expect(plain.code).not.toBe(8);
    expect(plain.stdout.toString()).toMatch(/CRITICAL {2}repository: not reachable/);
    const bad = await runCli(['health', '--nagios'], { env: { ...env, STRONGBOX_REPO: '' } });
    expectExit(bad, 3);
    expect(bad.stdout.toString()).toMatch(/^STRONGBOX UNKNOWN - no repository given/);
  });

  it('tells the notification targets that asked when the state changes, once per change', async () => {
    const receiver = await webhookReceiver();
    try {
      const config = path.join(repo.dir, 'notify.yaml');
      await fs.writeFile(
        config,
        `notifications:\n  - type: webhook\n    url: ${receiver.url}\n    events: [health-changed]\n`,
      );
      const health = (...flags: string[]) => cli(['--config', config, 'health', ...flags]);
      // The earlier tests left CRITICAL remembered: WARNING is a change, told once.
      expectExit(await health(), 8);
      expectExit(await health(), 8);
      expectExit(await health('--size-change', '250%'), 0);
      expect(receiver.bodies).toEqual([
        expect.objectContaining({
          event: 'health-changed',
          result: 'failure',
          details: expect.objectContaining({ previous: 'CRITICAL', current: 'WARNING' }),
        }),
        expect.objectContaining({
          event: 'health-changed',
          result: 'success',
          details: expect.objectContaining({ previous: 'WARNING', current: 'OK', problems: 'none' }),
        }),
      ]);
      expectExit(await health('--size-change', '250%'), 0);
      expectExit(await health('--max-age', '1m', '--size-change', '250%'), 8);
      expect(receiver.bodies).toHaveLength(3);
      expect(receiver.bodies[2]).toMatchObject({
        event: 'health-changed',
        result: 'failure',
        details: {
          previous: 'OK',
          current: 'CRITICAL',
          problems: expect.stringMatching(/over the limit of 1 min/),
        },
      });
    } finally {
      await receiver.close();
    }
  });
});

describe('strongbox health of PostgreSQL backups', () => {
  let cluster: TestCluster;
  let repo: TempRepo;
  let env: Record<string, string>;

  beforeAll(async () => {
    cluster = await startCluster();
    repo = await tempRepo(PASSWORD);
    env = { ...repo.env, STRONGBOX_STATE_DIR: path.join(repo.dir, 'state') };
    expectExit(await runCli(['init'], { env }), 0);
    await cluster.createDatabase('shop');
    await cluster.psql('create table t (v int); insert into t values (1), (2)', 'shop');
    expectExit(
      await runCli(['backup', 'postgres', '--env', 'production'], {
        env: { ...env, ...cluster.env(), PGDATABASE: 'shop' },
      }),
      0,
    );
    expectExit(await runCli(['check', '-q'], { env }), 0);
  });
  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
  });

  const drillProblem = async (...flags: string[]) => {
    const json = JSON.parse((await runCli(['--json', 'health', ...flags], { env })).stdout.toString());
    return json.findings.find((finding: { check: string }) => finding.check === 'drill');
  };

  it('asks for a drill of every database, reads the drills recorded, and reports restore leftovers', async () => {
    expect(await drillProblem()).toMatchObject({ status: 'warning', problem: 'never' });
    expectExit(await runCli(['drill', '--to', socketUrl(cluster, 'shop_drill')], { env }), 0);
    const passed = await drillProblem();
    expect(passed).toMatchObject({
      status: 'ok',
      group: { kind: 'postgres', name: 'shop', env: 'production' },
      newestSuccess: { result: 'success', exitCode: 0 },
    });
    expect(passed.newestSuccess.figures.rto_seconds).toBeGreaterThan(0);
    expect(await drillProblem('--rto', '1ms')).toMatchObject({ status: 'warning', problem: 'rto' });
    expect(await drillProblem('--max-drill-age', '1s')).toMatchObject({
      status: 'warning',
      problem: 'too-old',
    });

    // A failed drill, recorded by a full key as a drill that found a difference records it.
    const repository = await openRepository({ repo: repo.repo, passphrase: PASSWORD, stateDirectory: false });
    try {
      const now = new Date();
      await repository.recordResult('drill', {
        started: now,
        finished: now,
        host: 'drill-host',
        subject: { kind: 'postgres', name: 'shop', host: passed.group.host, env: 'production' },
        snapshot: '0'.repeat(64),
        snapshotTime: now.toISOString(),
        phases: {},
        rpoSeconds: 60,
        objectives: {},
        result: 'failure',
        exitCode: 7,
        message: 'public.t: 1 row differs',
        mismatches: ['public.t: 1 row differs'],
      });
    } finally {
      await repository.close();
    }
    const failed = await runCli(['health', '--nagios'], { env });
    expectExit(failed, 2);
    expect(nagios(failed.stdout).summary).toMatch(
      /^shop \(postgres on [^,]+, env production\): the newest drill failed \(exit 7\): public\.t: 1 row differs; last successful drill .* ago, RTO /,
    );

    // What a killed restore leaves on a server: reported with --server, not removed.
    await cluster.createDatabase('strongbox_restore_shop_1');
    const leftovers = await runCli(['--json', 'health', '--server', socketUrl(cluster, 'postgres')], { env });
    const found = JSON.parse(leftovers.stdout.toString()).findings.find(
      (finding: { check: string }) => finding.check === 'leftovers',
    );
    expect(found).toMatchObject({ status: 'warning', leftovers: [{ database: 'strongbox_restore_shop_1' }] });
    expect(
      await cluster.psql(`select count(*) from pg_database where datname = 'strongbox_restore_shop_1'`),
    ).toMatch(/1/);
  });
});
