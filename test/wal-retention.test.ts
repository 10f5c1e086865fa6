import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRepository } from '../src/index.ts';
import { forget } from '../src/ops/forget.ts';
import { listBaseBackups, type BaseBackup } from '../src/ops/wal-expiry.ts';
import { segmentName, segmentNumber } from '../src/postgres/wal/segments.ts';
import type { Repository } from '../src/repository/repository.ts';
import { expectExit, runCli, tempRepo, type TempRepo } from './helpers/cli.ts';
import { startCluster, type TestCluster } from './helpers/postgres.ts';

/**
 * forget expires the WAL no kept physical backup can replay: two real base backups of a tiny
 * cluster (which archives nowhere: the WAL is pushed by hand, named to bracket where each backup
 * starts), then dry runs, --keep-wal-within and a real forget.
 */

const MB16 = 16 * 1024 * 1024;
const PASSWORD = 'correct horse battery staple';

let cluster: TestCluster;
let repo: TempRepo;
let env: Record<string, string>;
let older: BaseBackup;
let newer: BaseBackup;
let wal: string[];
const cli = (args: string[]) => runCli(args, { env });

async function openRepo(): Promise<Repository> {
  return openRepository({
    repo: repo.repo,
    passphrase: PASSWORD,
    stateDirectory: path.join(repo.dir, 'lib-state'),
  });
}

async function stored(): Promise<string[]> {
  const repository = await openRepo();
  try {
    return (await repository.wal.list()).map((file) => file.name);
  } finally {
    await repository.close();
  }
}

async function backup(): Promise<void> {
  expectExit(
    await runCli(['backup', 'postgres', '--physical', '--json'], { env: { ...env, ...cluster.env() } }),
    0,
  );
}

beforeAll(async () => {
  cluster = await startCluster({ settings: { archive_mode: 'on', archive_command: `'/bin/true'` } });
  repo = await tempRepo(PASSWORD);
  env = { ...repo.env, STRONGBOX_STATE_DIR: path.join(repo.dir, 'state') };
  expectExit(await cli(['init']), 0);
  await backup();
  // Some WAL between the two, so that the second starts segments later.
  for (let round = 0; round < 3; round++)
    await cluster.psql(
      `create table t${round} as select g from generate_series(1, 1000) g; select pg_switch_wal()`,
    );
  await backup();
  const repository = await openRepo();
  try {
    const backups = (await listBaseBackups(repository)).sort((a, b) => a.time.localeCompare(b.time));
    expect(backups).toHaveLength(2);
    [older, newer] = backups as [BaseBackup, BaseBackup];
  } finally {
    await repository.close();
  }
  const first = segmentNumber(older!.startSegment!, MB16);
  const last = segmentNumber(newer!.startSegment!, MB16);
  expect(last - first).toBeGreaterThanOrEqual(2);
  const segments = [first - 1, first, first + 1, last - 1, last, last + 1]
    .filter((number) => number >= 0)
    .map((number) => segmentName(1, number, MB16));
  wal = [
    ...new Set([
      ...segments,
      `${older!.startSegment}.00000028.backup`,
      `${newer!.startSegment}.00000060.backup`,
      `${segmentName(1, first - 1 >= 0 ? first - 1 : first, MB16)}.partial`,
      '00000002.history',
      segmentName(2, 0, MB16),
    ]),
  ].sort();
  const dir = path.join(repo.dir, 'pg_wal');
  await mkdir(dir);
  for (const name of wal) {
    await writeFile(path.join(dir, name), Buffer.from(`WAL file ${name}`));
    expectExit(await cli(['wal', 'push', path.join(dir, name)]), 0);
  }
}, 300_000);

afterAll(async () => {
  await cluster?.stop();
  await repo?.cleanup();
});

const before = (start: string) =>
  wal.filter((name) => !name.endsWith('.history') && name.slice(0, 24) < start);

describe('forget expires WAL', () => {
  it('a dry run shows the WAL before the newer backup as expiring, and deletes nothing', async () => {
    const result = await cli(['--json', 'forget', '--keep-last', '1', '--dry-run']);
    expectExit(result, 0);
    const json = JSON.parse(result.stdout.toString());
    expect(json.removed).toEqual([older.id]);
    const expiring = before(newer.startSegment!);
    expect(json.wal.expired).toMatchObject({
      count: expiring.length,
      first: expiring[0],
      last: expiring.at(-1),
    });
    expect(json.wal.kept.count).toBe(wal.length - expiring.length);
    expect(json.wal.from).toEqual({ snapshot: newer.id, startSegment: newer.startSegment });
    const text = await cli(['forget', '--keep-last', '1', '--dry-run', '--keep-wal-within', '1h']);
    expectExit(text, 0);
    expect(text.stdout.toString()).toMatch(new RegExp(`would expire\\s+${expiring.length}\\s`));
    expect(await stored()).toEqual(wal);
  });

  it('--keep-wal-within keeps the newest backup that ended that long ago, and the WAL from its start', async () => {
    const repository = await openRepo();
    try {
      // A clock one hour after the older backup ended (and before the newer one did, an hour on).
      const now = new Date(
        Date.parse(older.time) + 3_600_000 + (Date.parse(newer.time) - Date.parse(older.time)) / 2,
      );
      const result = await forget(repository, {
        policy: { last: 1 },
        keepWalWithin: { years: 0, months: 0, days: 0, hours: 1 },
        now,
        dryRun: true,
      });
      expect(result.removed).toEqual([]);
      expect(result.groups[0]!.keep.find((snapshot) => snapshot.id === older.id)!.reasons).toEqual([
        'wal within 1h',
      ]);
      const expiring = before(older.startSegment!);
      expect(result.wal.expired).toMatchObject({
        count: expiring.length,
        first: expiring[0],
        last: expiring.at(-1),
      });
      expect(result.wal.from).toEqual({ snapshot: older.id, startSegment: older.startSegment });
    } finally {
      await repository.close();
    }
    expect(await stored()).toEqual(wal);
  });

  it('forget keeping the newer backup expires exactly the WAL before its start, through a signed record', async () => {
    const result = await cli(['--json', 'forget', '--keep-last', '1']);
    expectExit(result, 0);
    const expiring = before(newer.startSegment!);
    expect(JSON.parse(result.stdout.toString()).wal.expired.count).toBe(expiring.length);
    expect(await stored()).toEqual(wal.filter((name) => !expiring.includes(name)));
    const repository = await openRepo();
    try {
      const { trusted } = await repository.records.removals();
      expect(trusted.flatMap((record) => record.value.wal ?? []).sort()).toEqual(expiring);
    } finally {
      await repository.close();
    }
    // Nothing more to expire, and prune finds no WAL its records name left to delete.
    const again = await cli(['--json', 'forget', '--keep-last', '1', '--prune']);
    expectExit(again, 0);
    expect(JSON.parse(again.stdout.toString()).wal.expired.count).toBe(0);
    expect(await stored()).toEqual(wal.filter((name) => !expiring.includes(name)));
  });
});
