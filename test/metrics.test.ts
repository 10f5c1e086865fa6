import { once } from 'node:events';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { groupingPath } from '../src/monitoring/publish.ts';
import { METRICS, parseExposition, type Sample } from '../src/monitoring/metrics.ts';
import { expectExit, runCli, tempRepo, type RunOptions, type TempRepo } from './helpers/cli.ts';
import { freePort } from './helpers/free-port.ts';
import { startCluster } from './helpers/postgres.ts';
import { promtool, startPushgateway, type Pushgateway } from './helpers/prometheus.ts';

let repo: TempRepo;
let gateway: Pushgateway;

function cli(args: string[], options: RunOptions = {}) {
  return runCli(args, { ...options, env: { ...repo.env, ...options.env } });
}

/** The one value of `name` whose labels include `labels`; fails when there is none or several. */
function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number {
  const found = samples.filter(
    (sample) =>
      sample.name === name &&
      Object.entries(labels).every(([label, wanted]) => sample.labels[label] === wanted),
  );
  expect(found, `${name} ${JSON.stringify(labels)} ${JSON.stringify(found)}`).toHaveLength(1);
  return found[0]!.value;
}

async function textfiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}

/** promtool's lint of the exposition format: the text parses, and follows Prometheus's naming rules. */
async function expectValidExposition(text: string): Promise<void> {
  const result = await promtool(['check', 'metrics'], text);
  expect({ code: result.code, output: result.stdout + result.stderr }).toEqual({ code: 0, output: '' });
}

beforeAll(async () => {
  repo = await tempRepo();
  expectExit(await cli(['init']), 0);
  gateway = await startPushgateway();
});

afterAll(async () => {
  await gateway?.stop();
  await repo?.cleanup();
});

describe('--metrics-textfile', () => {
  it("writes a backup's metrics that promtool accepts, with the backup's figures, and counts on across runs", async () => {
    const dir = path.join(repo.dir, 'textfile');
    await mkdir(dir);
    const before = Date.now() / 1000;
    const first = await cli(
      ['--json', '--metrics-textfile', dir, 'backup', 'stdin', '--name', 'app.dump', '--env', 'production'],
      { input: 'the first dump\n'.repeat(100) },
    );
    expectExit(first, 0);
    const after = Date.now() / 1000;
    const backup = JSON.parse(first.stdout.toString()) as { size: number; stored: number };
    const [file, ...others] = await textfiles(dir);
    expect(others).toEqual([]);
    expect(file).toMatch(/^strongbox-backup-[^/]*-stdin-app\.dump-production-[0-9a-f]{12}\.prom$/);
    const text = await readFile(path.join(dir, file!), 'utf8');
    await expectValidExposition(text);
    const group = {
      repository: repo.repo,
      host: os.hostname(),
      kind: 'stdin',
      name: 'app.dump',
      env: 'production',
    };
    let samples = parseExposition(text);
    expect(value(samples, 'strongbox_backups_total', { ...group, result: 'success' })).toBe(1);
    expect(value(samples, 'strongbox_backups_total', { ...group, result: 'failure' })).toBe(0);
    expect(value(samples, 'strongbox_backup_size_bytes', group)).toBe(backup.size);
    expect(backup.size).toBe(1500);
    expect(value(samples, 'strongbox_backup_stored_bytes', group)).toBe(backup.stored);
    const success = value(samples, 'strongbox_backup_last_success_timestamp_seconds', group);
    expect(success).toBeGreaterThanOrEqual(Math.floor(before));
    expect(success).toBeLessThanOrEqual(after);
    expect(value(samples, 'strongbox_backup_duration_seconds', group)).toBeGreaterThan(0);
    expect(samples.some((sample) => sample.name === 'strongbox_backup_last_failure_timestamp_seconds')).toBe(
      false,
    );

    expectExit(
      await cli(['--metrics-textfile', dir, 'backup', 'stdin', '--name', 'app.dump', '--env', 'production'], {
        input: 'the second dump\n',
      }),
      0,
    );
    // The same group fails: a command whose output a failed backup does not store.
    expectExit(
      await cli([
        '--metrics-textfile',
        dir,
        'backup',
        'stdin',
        '--name',
        'app.dump',
        '--env',
        'production',
        '--stdin-from-command',
        '--',
        'false',
      ]),
      4,
    );
    expect(await textfiles(dir)).toEqual([file]);
    const third = await readFile(path.join(dir, file!), 'utf8');
    await expectValidExposition(third);
    samples = parseExposition(third);
    expect(value(samples, 'strongbox_backups_total', { ...group, result: 'success' })).toBe(2);
    expect(value(samples, 'strongbox_backups_total', { ...group, result: 'failure' })).toBe(1);
    // The last success survives the failure, and the size is still the last successful backup's.
    const secondSuccess = value(samples, 'strongbox_backup_last_success_timestamp_seconds', group);
    expect(secondSuccess).toBeGreaterThan(success);
    expect(value(samples, 'strongbox_backup_size_bytes', group)).toBe('the second dump\n'.length);
    expect(value(samples, 'strongbox_backup_last_failure_timestamp_seconds', group)).toBeGreaterThan(
      secondSuccess,
    );
  });

  it('keeps operations and groups in files of their own, and escapes label values', async () => {
    const dir = path.join(repo.dir, 'textfile-groups');
    await mkdir(dir);
    // A host name with every character the format escapes.
    const host = 'odd "host"\\with\na newline';
    expectExit(
      await cli(['--metrics-textfile', dir, 'backup', 'stdin', '--name', 'one', '--host', host], {
        input: 'x',
      }),
      0,
    );
    expectExit(
      await cli(['backup', 'stdin', '--name', 'two'], {
        input: 'y',
        env: { STRONGBOX_METRICS_TEXTFILE: dir },
      }),
      0,
    );
    expectExit(await cli(['--metrics-textfile', dir, 'check']), 0);
    // Not an operation: publishes nothing.
    expectExit(await cli(['--metrics-textfile', dir, 'snapshots']), 0);
    const files = await textfiles(dir);
    expect(files).toHaveLength(3);
    const all: Sample[] = [];
    for (const file of files) {
      const text = await readFile(path.join(dir, file), 'utf8');
      await expectValidExposition(text);
      all.push(...parseExposition(text));
    }
    expect(value(all, 'strongbox_backups_total', { name: 'one', host, result: 'success' })).toBe(1);
    expect(
      value(all, 'strongbox_backups_total', { name: 'two', host: os.hostname(), result: 'success' }),
    ).toBe(1);
    expect(value(all, 'strongbox_checks_total', { repository: repo.repo, result: 'success' })).toBe(1);
    const check = all.find((sample) => sample.name === 'strongbox_check_last_success_timestamp_seconds');
    expect(check?.labels).toEqual({ repository: repo.repo });
  });

  it("also writes the seeds' metric names when the configuration file asks for them", async () => {
    const dir = path.join(repo.dir, 'textfile-compat');
    await mkdir(dir);
    const config = path.join(repo.dir, 'compat.yaml');
    await writeFile(config, 'metrics:\n  compat: seeds\n');
    expectExit(
      await cli(
        [
          '--config',
          config,
          '--metrics-textfile',
          dir,
          'backup',
          'stdin',
          '--name',
          'db',
          '--env',
          'staging',
        ],
        {
          input: 'z'.repeat(42),
        },
      ),
      0,
    );
    const [file] = await textfiles(dir);
    const text = await readFile(path.join(dir, file!), 'utf8');
    await expectValidExposition(text);
    const samples = parseExposition(text);
    expect(value(samples, 'backup_success_total', { environment: 'staging', status: 'success' })).toBe(1);
    expect(value(samples, 'backup_success_total', { environment: 'staging', status: 'failed' })).toBe(0);
    expect(value(samples, 'backup_bytes_total', { environment: 'staging' })).toBe(42);
    expect(value(samples, 'backup_size_bytes', { environment: 'staging' })).toBe(42);
    expect(value(samples, 'backup_last_success_timestamp_seconds', { environment: 'staging' })).toBe(
      value(samples, 'strongbox_backup_last_success_timestamp_seconds', { env: 'staging' }),
    );
    // Only databases have postgres_backup_* names.
    expect(samples.some((sample) => sample.name.startsWith('postgres_'))).toBe(false);
    // Ours are still there.
    expect(value(samples, 'strongbox_backups_total', { env: 'staging', result: 'success' })).toBe(1);
  });

  it("labels a database's backup kind postgres, under the seeds' postgres_backup_* names too", async () => {
    const cluster = await startCluster();
    try {
      await cluster.createDatabase('shop');
      await cluster.psql('CREATE TABLE orders AS SELECT g AS id FROM generate_series(1, 1000) g', 'shop');
      const dir = path.join(repo.dir, 'textfile-postgres');
      await mkdir(dir);
      const config = path.join(repo.dir, 'compat-postgres.yaml');
      await writeFile(config, 'metrics:\n  compat: seeds\n');
      const backedUp = await cli(
        [
          '--config',
          config,
          '--metrics-textfile',
          dir,
          '--json',
          'backup',
          'postgres',
          '--env',
          'production',
        ],
        { env: { ...cluster.env(), PGDATABASE: 'shop' } },
      );
      expectExit(backedUp, 0);
      const { size } = JSON.parse(backedUp.stdout.toString()) as { size: number };
      const [file, ...others] = await textfiles(dir);
      expect(others).toEqual([]);
      const text = await readFile(path.join(dir, file!), 'utf8');
      await expectValidExposition(text);
      const samples = parseExposition(text);
      const group = { kind: 'postgres', name: 'shop', env: 'production' };
      expect(value(samples, 'strongbox_backups_total', { ...group, result: 'success' })).toBe(1);
      expect(value(samples, 'strongbox_backup_size_bytes', group)).toBe(size);
      expect(
        value(samples, 'postgres_backup_size_bytes', { kind: 'postgres', environment: 'production' }),
      ).toBe(size);
      expect(value(samples, 'postgres_backup_last_success_timestamp', { name: 'shop' })).toBe(
        value(samples, 'strongbox_backup_last_success_timestamp_seconds', group),
      );

      const gauges = await cli(['--config', config, 'metrics']);
      expectExit(gauges, 0);
      await expectValidExposition(gauges.stdout.toString());
      expect(
        value(parseExposition(gauges.stdout.toString()), 'postgres_backup_count', { name: 'shop' }),
      ).toBe(1);
    } finally {
      await cluster.stop();
    }
  });

  it('refuses a metrics section with a misspelt key or an unknown compatibility', async () => {
    const config = path.join(repo.dir, 'bad-metrics.yaml');
    await writeFile(config, 'metrics:\n  textfile: /tmp\n  compat: prometheus\n');
    const result = await cli(['--config', config, 'snapshots']);
    expectExit(result, 3);
    expect(result.stderr).toContain('metrics.textfile: unknown key');
    expect(result.stderr).toContain('metrics.compat: expected none or seeds');
  });

  it('warns and keeps the exit code when the directory cannot be written', async () => {
    const missing = path.join(repo.dir, 'no-such-directory');
    const result = await cli(['--metrics-textfile', missing, 'backup', 'stdin', '--name', 'n'], {
      input: 'x',
    });
    expectExit(result, 0);
    expect(result.stderr).toMatch(
      new RegExp(
        `warning: could not write the metrics file ${missing}/strongbox-backup-\\S+\\.prom: no such directory \\(the backup stdin itself succeeded\\)`,
      ),
    );
  });
});

describe('--pushgateway', () => {
  it('pushes to a real Pushgateway, which serves the values back, counting on across pushes', async () => {
    const args = ['--pushgateway', gateway.url, 'backup', 'stdin', '--name', 'pushed', '--env', 'prod'];
    expectExit(await cli(args, { input: 'abc' }), 0);
    let samples = parseExposition(await gateway.metrics());
    const group = {
      job: 'strongbox',
      repository: repo.repo,
      host: os.hostname(),
      kind: 'stdin',
      name: 'pushed',
      env: 'prod',
    };
    expect(value(samples, 'strongbox_backups_total', { ...group, result: 'success' })).toBe(1);
    expect(value(samples, 'strongbox_backup_size_bytes', group)).toBe(3);

    // A check of the same repository goes to a group of its own, and leaves the backup's alone.
    expectExit(await cli(['check'], { env: { PUSHGATEWAY_URL: gateway.url } }), 0);
    expectExit(await cli(args, { input: 'abcdef' }), 0);
    const text = await gateway.metrics();
    samples = parseExposition(text);
    expect(value(samples, 'strongbox_backups_total', { ...group, result: 'success' })).toBe(2);
    expect(value(samples, 'strongbox_backups_total', { ...group, result: 'failure' })).toBe(0);
    expect(value(samples, 'strongbox_backup_size_bytes', group)).toBe(6);
    expect(
      value(samples, 'strongbox_checks_total', {
        job: 'strongbox',
        repository: repo.repo,
        result: 'success',
      }),
    ).toBe(1);
    // Every strongbox series the gateway serves is one metrics.ts defines.
    const defined = new Set(METRICS.map((metric) => metric.name));
    for (const sample of samples.filter((sample) => sample.name.startsWith('strongbox_'))) {
      expect(defined).toContain(sample.name);
    }
  });

  it('encodes grouping labels the Pushgateway reads back exactly: slashes, empty values, any character', async () => {
    expect(groupingPath('strongbox', { repository: '/srv/repo', host: 'db-1.example' })).toBe(
      'job/strongbox/repository@base64/L3Nydi9yZXBv/host/db-1.example',
    );
    expect(groupingPath('j', { env: '' })).toBe('job/j/env@base64/=');
    const host = 'a/b "c" ..';
    expectExit(
      await cli(
        ['--pushgateway', gateway.url, 'backup', 'stdin', '--name', 'n', '--env', '..', '--host', host],
        {
          input: 'q',
        },
      ),
      0,
    );
    const samples = parseExposition(await gateway.metrics());
    expect(
      value(samples, 'strongbox_backups_total', { job: 'strongbox', host, env: '..', result: 'success' }),
    ).toBe(1);
  });

  it('warns and keeps the exit code when nothing listens there', async () => {
    const closed = `http://127.0.0.1:${await freePort()}`;
    const result = await cli(['--pushgateway', closed, 'backup', 'stdin', '--name', 'n'], { input: 'x' });
    expectExit(result, 0);
    expect(result.stderr).toContain(
      `warning: could not push metrics to the Pushgateway at ${closed}: connection refused (ECONNREFUSED) (the backup stdin itself succeeded)`,
    );
    // A command that fails keeps its own exit code too.
    const failing = await cli([
      '--pushgateway',
      closed,
      'backup',
      'stdin',
      '--name',
      'n',
      '--stdin-from-command',
      '--',
      'false',
    ]);
    expectExit(failing, 4);
    expect(failing.stderr).toContain(
      `could not push metrics to the Pushgateway at ${closed}: connection refused`,
    );
  });

  it('gives up after the configured timeout on a gateway that never answers', async () => {
    const server = http.createServer(() => {
      // Never answers.
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as { port: number };
    try {
      const config = path.join(repo.dir, 'timeout.yaml');
      await writeFile(
        config,
        `metrics:\n  pushgateway:\n    url: http://127.0.0.1:${port}\n    timeout: 1s\n`,
      );
      const result = await cli(['--config', config, 'backup', 'stdin', '--name', 'n'], { input: 'x' });
      expectExit(result, 0);
      expect(result.stderr).toContain(`at http://127.0.0.1:${port}: no answer within 1 s`);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });

  it('refuses a password in --pushgateway, which every user could read', async () => {
    const result = await cli(['--pushgateway', 'http://user:secret@127.0.0.1:9091', 'check']);
    expectExit(result, 3);
    expect(result.stderr).toContain('--pushgateway may not hold a password');
    expect(result.stderr).not.toContain('secret');
  });
});

describe('notification failures', () => {
  it('are counted by channel in a file of the group and at the Pushgateway, counting on across runs', async () => {
    // A webhook that refuses every event (a 404, which is not retried: the runs stay quick) and a
    // Slack URL that takes them.
    const server = http.createServer((request, response) => {
      request.resume();
      request.on('end', () => {
        response.writeHead(request.url === '/slack' ? 200 : 404, { 'Content-Type': 'text/plain' });
        response.end(request.url === '/slack' ? 'ok' : 'no such hook');
      });
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const { port } = server.address() as { port: number };
    try {
      const dir = path.join(repo.dir, 'textfile-notifications');
      await mkdir(dir);
      const config = path.join(repo.dir, 'notifications.yaml');
      await writeFile(
        config,
        `notifications:
  - {type: webhook, name: hook, url: "http://127.0.0.1:${port}/hook", events: [backup-succeeded]}
  - {type: slack, url-env: SLACK_URL, events: [backup-succeeded]}
`,
      );
      const args = ['--config', config, '--metrics-textfile', dir, '--pushgateway', gateway.url];
      const backup = [...args, 'backup', 'stdin', '--name', 'notified'];
      const env = { SLACK_URL: `http://127.0.0.1:${port}/slack` };
      const group = { repository: repo.repo, host: os.hostname(), kind: 'stdin', name: 'notified' };
      const failures = 'strongbox_notification_failures_total';
      for (const run of [1, 2]) {
        const result = await cli(backup, { input: `run ${run}`, env });
        expectExit(result, 0);
        expect(result.stderr).toContain('warning: notification to hook failed: HTTP 404: no such hook');
        const [operationFile, notificationsFile, ...others] = await textfiles(dir);
        expect(others).toEqual([]);
        expect(operationFile).toMatch(/^strongbox-backup-/);
        expect(notificationsFile).toMatch(
          /^strongbox-notifications-[^/]*-stdin-notified-[0-9a-f]{12}\.prom$/,
        );
        const text = await readFile(path.join(dir, notificationsFile!), 'utf8');
        await expectValidExposition(text);
        const samples = parseExposition(text);
        expect(samples).toHaveLength(2);
        expect(value(samples, failures, { ...group, channel: 'webhook' })).toBe(run);
        expect(value(samples, failures, { ...group, channel: 'slack' })).toBe(0);
        const pushed = parseExposition(await gateway.metrics());
        expect(value(pushed, failures, { job: 'strongbox', ...group, channel: 'webhook' })).toBe(run);
        expect(value(pushed, failures, { job: 'strongbox', ...group, channel: 'slack' })).toBe(0);
      }
      // A command that sent no notification leaves the counters as they were.
      expectExit(await cli([...args, 'check'], { env }), 0);
      expect(await textfiles(dir)).toHaveLength(3);
      const pushed = parseExposition(await gateway.metrics());
      expect(pushed.filter((sample) => sample.name === failures)).toHaveLength(2);
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});

describe('strongbox metrics', () => {
  it('prints the repository-wide gauges in the exposition format, and as JSON', async () => {
    expectExit(await cli(['backup', 'stdin', '--name', 'gauged', '--env', 'qa'], { input: '1234567' }), 0);
    expectExit(await cli(['backup', 'stdin', '--name', 'gauged', '--env', 'qa'], { input: '12345678' }), 0);
    const result = await cli(['metrics']);
    expectExit(result, 0);
    const text = result.stdout.toString();
    await expectValidExposition(text);
    const samples = parseExposition(text);
    const json = await cli(['metrics', '--json']);
    expectExit(json, 0);
    const data = JSON.parse(json.stdout.toString()) as {
      sizeBytes: number;
      snapshots: number;
      groups: { name: string; env?: string; snapshots: number; newest: { time: string; size: number } }[];
    };
    const group = { repository: repo.repo, host: os.hostname(), kind: 'stdin', name: 'gauged', env: 'qa' };
    expect(value(samples, 'strongbox_snapshots', group)).toBe(2);
    expect(value(samples, 'strongbox_snapshot_newest_size_bytes', group)).toBe(8);
    const gauged = data.groups.find((entry) => entry.name === 'gauged');
    expect(gauged).toMatchObject({ env: 'qa', snapshots: 2, newest: { size: 8 } });
    expect(value(samples, 'strongbox_snapshot_newest_timestamp_seconds', group)).toBe(
      Date.parse(gauged!.newest.time) / 1000,
    );
    expect(value(samples, 'strongbox_repository_snapshots', { repository: repo.repo })).toBe(data.snapshots);
    expect(data.snapshots).toBe(data.groups.reduce((sum, entry) => sum + entry.snapshots, 0));
    // Every object the storage holds, as the file system counts them.
    expect(value(samples, 'strongbox_repository_size_bytes', { repository: repo.repo })).toBe(data.sizeBytes);
    expect(data.sizeBytes).toBe(await directorySize(repo.repo));
  });
});

async function directorySize(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && !entry.name.startsWith('.')) {
      total += (await stat(path.join(entry.parentPath, entry.name))).size;
    }
  }
  return total;
}
