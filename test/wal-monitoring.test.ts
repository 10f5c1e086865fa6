import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRepository } from '../src/index.ts';
import { alertThresholds } from '../src/monitoring/alert-rules.ts';
import type { BaseBackupReader } from '../src/monitoring/base-backups.ts';
import { checkHealth } from '../src/monitoring/health.ts';
import { parseExposition, type Sample } from '../src/monitoring/metrics.ts';
import { archivedWal, walSamples } from '../src/monitoring/wal-metrics.ts';
import { segmentName } from '../src/postgres/wal/segments.ts';
import { archivingSetup } from './helpers/archiving.ts';
import { expectExit, runCli, tempRepo, type TempRepo } from './helpers/cli.ts';
import { startCluster } from './helpers/postgres.ts';
import { promtool, startPushgateway, type Pushgateway } from './helpers/prometheus.ts';
import { PASSWORD } from './helpers/repo.ts';

/**
 * The WAL archive as `strongbox metrics`, `wal status --metrics-textfile/--pushgateway` and
 * `strongbox health` report it, from segments pushed with `wal push` through the binary, as
 * archive_command does: no cluster is needed but for PostgreSQL's own failure count.
 */

const MB16 = 16 * 1024 * 1024;
const SEGMENTS = [1, 2, 3, 4].map((number) => segmentName(1, number, MB16));

let repo: TempRepo;
let env: Record<string, string>;
let gateway: Pushgateway;
const cli = (args: string[]) => runCli(args, { env });

/** The values of `name` whose labels include `labels`, by their timeline (or '' without one). */
function values(samples: Sample[], name: string, labels: Record<string, string> = {}): Map<string, number> {
  const found = new Map<string, number>();
  for (const sample of samples)
    if (
      sample.name === name &&
      Object.entries(labels).every(([label, wanted]) => sample.labels[label] === wanted)
    )
      found.set(sample.labels.timeline ?? '', sample.value);
  return found;
}

const walOf = (samples: Sample[]) => samples.filter((sample) => sample.name.startsWith('strongbox_wal_'));

async function expectValidExposition(text: string): Promise<void> {
  const result = await promtool(['check', 'metrics'], text);
  expect({ code: result.code, output: result.stdout + result.stderr }).toEqual({ code: 0, output: '' });
}

async function walStatusJson(): Promise<{ newest: { name: string; archived: string; ageSeconds: number } }> {
  const result = await cli(['--json', 'wal', 'status']);
  expectExit(result, 0);
  return JSON.parse(result.stdout.toString());
}

/** The first line of `health --nagios`: state, summary and perfdata. */
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

beforeAll(async () => {
  repo = await tempRepo(PASSWORD);
  env = { ...repo.env, STRONGBOX_STATE_DIR: path.join(repo.dir, 'state') };
  expectExit(await cli(['init']), 0);
  // A checked repository, so that health has only the WAL to report on.
  expectExit(await cli(['check', '-q']), 0);
  const segments = path.join(repo.dir, 'segments');
  await mkdir(segments);
  for (const [index, name] of SEGMENTS.entries()) {
    const file = path.join(segments, name);
    await writeFile(file, Buffer.alloc(MB16, index + 1));
    expectExit(await cli(['wal', 'push', file]), 0);
  }
  gateway = await startPushgateway();
}, 120_000);

afterAll(async () => {
  await gateway?.stop();
  await repo?.cleanup();
});

describe('the WAL archive in metrics and health', () => {
  it('strongbox metrics reports each timeline: its newest segment, segments, no gap, no recovery window', async () => {
    const result = await cli(['metrics']);
    expectExit(result, 0);
    const text = result.stdout.toString();
    await expectValidExposition(text);
    const samples = parseExposition(text);
    const labels = { repository: repo.repo, kind: 'wal' };
    const { newest } = await walStatusJson();
    expect(newest.name).toBe(SEGMENTS.at(-1));
    expect(values(samples, 'strongbox_wal_last_archived_timestamp_seconds', labels)).toEqual(
      new Map([['1', Date.parse(newest.archived) / 1000]]),
    );
    expect(values(samples, 'strongbox_wal_segments', labels)).toEqual(new Map([['1', 4]]));
    expect(values(samples, 'strongbox_wal_gaps', labels)).toEqual(new Map([['1', 0]]));
    expect(values(samples, 'strongbox_wal_recovery_window_seconds', labels)).toEqual(new Map([['1', 0]]));
    // Only wal status --url asks PostgreSQL.
    expect(values(samples, 'strongbox_wal_archive_failures_total')).toEqual(new Map());

    const json = JSON.parse((await cli(['--json', 'metrics'])).stdout.toString());
    expect(json.wal).toEqual([
      {
        timeline: 1,
        segments: 4,
        lastArchived: newest.archived,
        gaps: [],
        recoveryWindowSeconds: 0,
      },
    ]);
  });

  it('health is OK with WAL archived within --max-wal-age, critical beyond, with the age as perfdata', async () => {
    const ok = await cli(['health', '--nagios']);
    expectExit(ok, 0);
    const { perf } = nagios(ok.stdout);
    expect(perf.get('wal age')).toMatch(/^\d+s;450;900;0$/);
    expect(perf.get('wal gaps')).toBe('0;;1;0');
    const text = await cli(['health']);
    expectExit(text, 0);
    expect(text.stdout.toString()).toMatch(
      new RegExp(`OK {8}WAL: newest segment ${SEGMENTS.at(-1)} archived [\\d.]+ s ago\\n`),
    );

    const stale = await cli(['health', '--nagios', '--max-wal-age', '1ms']);
    expectExit(stale, 2);
    expect(nagios(stale.stdout).summary).toMatch(
      new RegExp(
        `^WAL: newest segment ${SEGMENTS.at(-1)} archived [\\d.]+ s ago, over the limit of 0\\.00 s: see strongbox wal status --url, the WAL daemon and pg_stat_archiver$`,
      ),
    );
    const config = path.join(repo.dir, 'wal-age.yaml');
    await writeFile(config, 'alerts:\n  max-wal-age: 1ms\n');
    expectExit(await cli(['--config', config, 'health', '--nagios']), 2);
  });

  it('health warns once the newest segment is older than half the limit', async () => {
    const { newest } = await walStatusJson();
    const thresholds = alertThresholds({}, { maxWalAgeSeconds: 3600 });
    const findingsAt = async (minutes: number) => {
      const repository = await openRepository({
        repo: repo.repo,
        passphrase: PASSWORD,
        stateDirectory: false,
      });
      try {
        const now = new Date(Date.parse(newest.archived) + minutes * 60_000);
        const findings = await checkHealth(repository, { thresholds, readers: [], now });
        return findings.find((finding) => finding.check === 'wal-age');
      } finally {
        await repository.close();
      }
    };
    expect(await findingsAt(29)).toMatchObject({ status: 'ok', segment: newest.name, ageSeconds: 29 * 60 });
    expect(await findingsAt(31)).toMatchObject({
      status: 'warning',
      warningSeconds: 1800,
      limitSeconds: 3600,
    });
    expect(await findingsAt(61)).toMatchObject({ status: 'critical' });
  });

  it('wal status publishes the same figures to a textfile and a Pushgateway, and they follow a gap', async () => {
    const dir = path.join(repo.dir, 'textfile');
    await mkdir(dir);
    const publish = async () => {
      const result = await cli(['wal', 'status', '--metrics-textfile', dir, '--pushgateway', gateway.url]);
      expectExit(result, 0);
      expect(result.stderr).toBe('');
      const [file, ...others] = await readdir(dir);
      expect(others).toEqual([]);
      expect(file).toMatch(/^strongbox-archive-wal-[0-9a-f]{12}\.prom$/);
      const text = await readFile(path.join(dir, file!), 'utf8');
      await expectValidExposition(text);
      return parseExposition(text);
    };
    const gauges = async () => walOf(parseExposition((await cli(['metrics'])).stdout.toString()));
    const pushed = async () =>
      walOf(parseExposition(await gateway.metrics())).map(
        ({ labels: { job, instance, ...labels }, ...sample }) => {
          expect({ job, instance: instance ?? '' }).toEqual({ job: 'strongbox', instance: '' });
          return { ...sample, labels };
        },
      );

    expect(await publish()).toEqual(await gauges());
    expect(await pushed()).toEqual(expect.arrayContaining(await gauges()));

    // A segment lost from the archive: a gap, in every place the figures go.
    await rm(path.join(repo.repo, 'wal', '00000001', SEGMENTS[1]!));
    const afterGap = await publish();
    expect(afterGap).toEqual(await gauges());
    expect(values(afterGap, 'strongbox_wal_gaps')).toEqual(new Map([['1', 1]]));
    expect(values(afterGap, 'strongbox_wal_segments')).toEqual(new Map([['1', 3]]));
    expect(values(await pushed(), 'strongbox_wal_gaps')).toEqual(new Map([['1', 1]]));
  });

  it('health reports the gap as critical, until a base backup begins after it', async () => {
    const result = await cli(['health', '--nagios']);
    expectExit(result, 2);
    const { summary, perf } = nagios(result.stdout);
    expect(summary).toBe(
      `WAL: 1 gap a recovery would stop at (timeline 1: ${SEGMENTS[1]} to ${SEGMENTS[1]}, 1 segment): take a new base backup`,
    );
    expect(perf.get('wal gaps')).toBe('1;;1;0');
  });

  it('a base backup begun after the gap clears it and opens the recovery window; one begun before does not', async () => {
    // Snapshots standing in for base backups, read by a reader as the physical backup's will be.
    const ended = new Date(Date.now() - 3600_000).toISOString();
    const earlier = new Date(Date.now() - 7200_000).toISOString();
    for (const [name, time] of [
      ['before-gap', earlier],
      ['after-gap', ended],
    ] as const)
      expectExit(await runCli(['backup', 'stdin', '--name', name, '--time', time], { env, input: name }), 0);
    const startOf: Record<string, string> = { 'before-gap': SEGMENTS[0]!, 'after-gap': SEGMENTS[2]! };
    const readerOf = (names: string[]): BaseBackupReader => ({
      kind: 'stdin',
      start: async (_repository, snapshot) =>
        names.includes(snapshot.header.name)
          ? {
              snapshot: snapshot.id,
              timeline: 1,
              startSegment: startOf[snapshot.header.name]!,
              time: snapshot.header.time,
            }
          : undefined,
    });
    const repository = await openRepository({ repo: repo.repo, passphrase: PASSWORD, stateDirectory: false });
    try {
      const before = await archivedWal(repository, { readers: [readerOf(['before-gap'])] });
      expect(before.timelines[0]).toMatchObject({
        gaps: [{ from: SEGMENTS[1], to: SEGMENTS[1] }],
        recoveryWindowSeconds: 0,
      });

      const after = await archivedWal(repository, { readers: [readerOf(['before-gap', 'after-gap'])] });
      const newest = after.status.newest!;
      expect(after.timelines[0]!.gaps).toEqual([]);
      expect(after.timelines[0]!.recoveryWindowSeconds).toBe(
        (Date.parse(newest.archived) - Date.parse(ended)) / 1000,
      );
      // wal status still lists the gap: it narrows the window, which begins after it.
      expect(after.status.timelines[0]!.gaps).toHaveLength(1);
      const samples = walSamples('/srv/backups', after.timelines);
      expect(values(samples, 'strongbox_wal_gaps')).toEqual(new Map([['1', 0]]));
      expect(values(samples, 'strongbox_wal_recovery_window_seconds')).toEqual(
        new Map([['1', after.timelines[0]!.recoveryWindowSeconds]]),
      );
    } finally {
      await repository.close();
    }
  });
});

describe("PostgreSQL's archive failures", () => {
  it('wal status --url publishes pg_stat_archiver.failed_count as a counter', async () => {
    const cluster = await startCluster();
    const setup = await archivingSetup(cluster);
    try {
      await setup.setArchiveCommand('false');
      await setup.switchSegments(1);
      const failed = async () =>
        Number((await cluster.psql('select failed_count from pg_stat_archiver')).trim());
      while ((await failed()) === 0) await new Promise((resolve) => setTimeout(resolve, 100));
      const dir = path.join(setup.repo.dir, 'textfile');
      await mkdir(dir);
      const before = await failed();
      const result = await runCli(
        ['wal', 'status', '--url', cluster.url('postgres'), '--metrics-textfile', dir],
        { env: setup.repo.env },
      );
      expectExit(result, 0);
      const after = await failed();
      const [file] = await readdir(dir);
      const text = await readFile(path.join(dir, file!), 'utf8');
      await expectValidExposition(text);
      expect(text).toContain('# TYPE strongbox_wal_archive_failures_total counter\n');
      const published = values(parseExposition(text), 'strongbox_wal_archive_failures_total', {
        repository: setup.repo.repo,
        kind: 'wal',
      }).get('');
      expect(published).toBeGreaterThanOrEqual(before);
      expect(published).toBeLessThanOrEqual(after);

      // Without --url the counter published before stays; the gauges are replaced.
      expectExit(await runCli(['wal', 'status', '--metrics-textfile', dir], { env: setup.repo.env }), 0);
      const again = parseExposition(await readFile(path.join(dir, file!), 'utf8'));
      expect(values(again, 'strongbox_wal_archive_failures_total').get('')).toBe(published);
    } finally {
      await setup.cleanup();
      await cluster.stop();
    }
  }, 180_000);
});
