import { mkdir, open, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempRepo, type TempRepo, expectExit } from './helpers/cli.ts';
import { seededBytes } from './helpers/data.ts';
import { startCluster, type TestCluster, socketUrl } from './helpers/postgres.ts';

/**
 * One damaged object must not stop everything: real bytes of real snapshot and pack files are
 * damaged, and the built binary must report the damage (exit 7, naming it) where it matters and
 * go on working everywhere else.
 */

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((entry) => entry.isFile() && !entry.name.startsWith('.'))
    .map((entry) => path.join(entry.parentPath, entry.name))
    .sort();
}

async function flipByte(file: string, offset: number): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, offset);
    await handle.write(Buffer.of(byte[0]! ^ 0x10), 0, 1, offset);
  } finally {
    await handle.close();
  }
}

/** `data` with one byte changed every 100 kB, from `start`: every chunk changes, each resembles its original. */
function changed(data: Buffer, start: number): Buffer {
  const copy = Buffer.from(data);
  for (let at = start; at < copy.length; at += 100_000) copy[at]! ^= 1;
  return copy;
}

const ORIGINAL = seededBytes('damage', 2_000_000);
const CHANGED = changed(ORIGINAL, 0);
const CHANGED_AGAIN = changed(ORIGINAL, 50);

/**
 * A repository with 1 MiB packs holding a backup of ORIGINAL, then one of CHANGED stored as
 * deltas against it; returns the packs the first backup wrote, largest first.
 */
async function twoBackups(repo: TempRepo): Promise<{ first: string; second: string; basePacks: string[] }> {
  expectExit(await runCli(['init', '--pack-size', '1'], { env: repo.env }), 0);
  const backupOf = async (data: Buffer) => {
    const result = await runCli(['backup', 'stdin', '--name', 'data.bin', '--json'], {
      env: repo.env,
      input: data,
    });
    expectExit(result, 0);
    return JSON.parse(result.stdout.toString()) as { snapshot: string; newBlobs: number; deltaBlobs: number };
  };
  const first = await backupOf(ORIGINAL);
  const packs = await filesUnder(path.join(repo.repo, 'data'));
  const second = await backupOf(CHANGED);
  // The repository's keyed chunker cuts 2 MB into 6 to 11 chunks: what matters is that nearly
  // every chunk of the second backup is a delta against the first's packs.
  expect(second.deltaBlobs).toBeGreaterThanOrEqual(Math.max(4, second.newBlobs - 2));
  const sizes = new Map(
    await Promise.all(packs.map(async (pack) => [pack, (await stat(pack)).size] as const)),
  );
  return {
    first: first.snapshot,
    second: second.snapshot,
    basePacks: packs.sort((a, b) => sizes.get(b)! - sizes.get(a)!),
  };
}

const cat = (repo: TempRepo, snapshot: string) => runCli(['cat', snapshot], { env: repo.env });
const BLOB_DAMAGED = /blob [0-9a-f]{16} in pack [0-9a-f]{16} is damaged/;

describe('a damaged or stray snapshot file', () => {
  let repo: TempRepo;
  let snapshots: { first: string; second: string };
  const garbage = 'ab'.repeat(32);

  beforeAll(async () => {
    repo = await tempRepo();
    snapshots = await twoBackups(repo);
    await writeFile(path.join(repo.repo, 'snapshots', garbage), Buffer.from('7 bytes'));
    await writeFile(path.join(repo.repo, 'snapshots', 'notes.txt'), 'what this repository is for\n');
  });
  afterAll(() => repo.cleanup());

  it('is listed as damaged, beside the intact snapshots', async () => {
    const listed = await runCli(['snapshots'], { env: repo.env });
    expectExit(listed, 0);
    const text = listed.stdout.toString();
    expect(text).toContain(snapshots.first.slice(0, 8));
    expect(text).toContain(snapshots.second.slice(0, 8));
    expect(text).toMatch(/abababab {2}damaged: not a snapshot file/);
    expect(text).toMatch(/notes\.txt {2}damaged: not a snapshot/);
    expect(listed.stderr).toMatch(/2 snapshots, and 2 damaged/);

    const json = await runCli(['snapshots', '--json'], { env: repo.env });
    expectExit(json, 0);
    const entries = JSON.parse(json.stdout.toString()) as { id: string; damaged?: boolean; name?: string }[];
    expect(entries.filter((entry) => !entry.damaged).map((entry) => entry.id)).toEqual([
      snapshots.first,
      snapshots.second,
    ]);
    expect(entries.filter((entry) => entry.damaged).map((entry) => entry.id)).toEqual([garbage, 'notes.txt']);
  });

  it('is skipped by latest with a warning, and other snapshots read as ever', async () => {
    const latest = await cat(repo, 'latest');
    expectExit(latest, 0);
    expect(latest.stdout.equals(CHANGED)).toBe(true);
    expect(latest.stderr).toMatch(/warning: skipped damaged snapshot abababab: not a snapshot file/);
    const first = await cat(repo, snapshots.first.slice(0, 8));
    expectExit(first, 0);
    expect(first.stdout.equals(ORIGINAL)).toBe(true);
  });

  it('is reported, exit 7, by a command that needs it', async () => {
    const damaged = await cat(repo, 'abab');
    expectExit(damaged, 7);
    expect(damaged.stderr).toMatch(/snapshot abababab is damaged: not a snapshot file/);
  });

  it('does not stop a backup, which still finds its parent', async () => {
    const next = await runCli(['backup', 'stdin', '--name', 'data.bin', '--json'], {
      env: repo.env,
      input: CHANGED_AGAIN,
    });
    expectExit(next, 0);
    expect(JSON.parse(next.stdout.toString()).parent).toBe(snapshots.second);
  });

  it('is named by check (exit 7)', async () => {
    const checked = await runCli(['check'], { env: repo.env });
    expectExit(checked, 7);
    expect(checked.stderr).toContain(`snapshots/${garbage}`);
    expect(checked.stderr).toMatch(/snapshots\/notes\.txt: not a snapshot/);
  });
});

describe('stray files in keys/ and index/', () => {
  it('are skipped with a warning, and named by check', async () => {
    const repo = await tempRepo();
    try {
      expectExit(await runCli(['init'], { env: repo.env }), 0);
      expectExit(await runCli(['backup', 'stdin', '--name', 'a.txt'], { env: repo.env, input: 'kept\n' }), 0);
      // Named to be listed before the real key and index file.
      await writeFile(path.join(repo.repo, 'keys', '0000'), 'not a key\n');
      await writeFile(path.join(repo.repo, 'index', '0000'), 'not an index\n');
      const keys = await runCli(['key', 'list'], { env: repo.env });
      expectExit(keys, 0);
      expect(keys.stderr).toMatch(/warning: skipped key slot keys\/0000: it is not JSON/);
      const read = await cat(repo, 'latest');
      expectExit(read, 0);
      expect(read.stdout.toString()).toBe('kept\n');
      expect(read.stderr).toMatch(/warning: skipped index file index\/0000: it is damaged/);
      const checked = await runCli(['check'], { env: repo.env });
      expectExit(checked, 7);
      expect(checked.stderr).toMatch(/index\/0000: index file content does not match its name/);
    } finally {
      await repo.cleanup();
    }
  });
});

describe('a damaged pack', () => {
  let repo: TempRepo;
  beforeAll(async () => {
    repo = await tempRepo();
  });
  afterAll(() => repo.cleanup());

  it('truncated: check --read-data reports it and the snapshots affected, later backups avoid it', async () => {
    const { first, second, basePacks } = await twoBackups(repo);
    const victim = basePacks[0]!;
    await truncate(victim, Math.floor((await stat(victim)).size / 2));
    const packName = path.basename(victim);

    // Deltas in intact packs have their bases in the truncated one: reading them must not abort.
    const checked = await runCli(['check', '--read-data'], { env: repo.env });
    expectExit(checked, 7);
    expect(checked.stderr).toContain(`data/${packName.slice(0, 2)}/${packName}: pack is`);
    expect(checked.stderr).toMatch(
      new RegExp(
        `affects snapshots (${first.slice(0, 8)}, ${second.slice(0, 8)}|${second.slice(0, 8)}, ${first.slice(0, 8)})`,
      ),
    );

    const unreadable = await cat(repo, second);
    expectExit(unreadable, 7);
    expect(unreadable.stderr).toMatch(BLOB_DAMAGED);
    expect(unreadable.stderr).toMatch(/its pack is truncated/);

    // A changed version takes no delta base from the damaged pack, and says so.
    const changedAgain = await runCli(['backup', 'stdin', '--name', 'data.bin'], {
      env: repo.env,
      input: CHANGED_AGAIN,
    });
    expectExit(changedAgain, 0);
    expect(changedAgain.stderr).toMatch(
      new RegExp(`warning: damaged pack ${packName.slice(0, 16)}: this snapshot does not use them`),
    );
    const latest = await cat(repo, 'latest');
    expectExit(latest, 0);
    expect(latest.stdout.equals(CHANGED_AGAIN)).toBe(true);

    // The original again: chunks whose only copy is in the damaged pack are stored again.
    const again = await runCli(['backup', 'stdin', '--name', 'data.bin', '--json'], {
      env: repo.env,
      input: ORIGINAL,
    });
    expectExit(again, 0);
    const result = JSON.parse(again.stdout.toString()) as { storedAgain: number; damagedPacks: string[] };
    expect(result.storedAgain).toBeGreaterThan(0);
    expect(result.damagedPacks).toEqual([packName]);
    const restored = await cat(repo, 'latest');
    expectExit(restored, 0);
    expect(restored.stdout.equals(ORIGINAL)).toBe(true);
    // Those new copies are found by readers of the old snapshot too, whatever order index files load in.
    const old = await cat(repo, first);
    expectExit(old, 0);
    expect(old.stdout.equals(ORIGINAL)).toBe(true);
  });

  it('with flipped bytes: a backup stores whole what it cannot take as a delta base', async () => {
    const flipped = await tempRepo();
    try {
      const { second, basePacks } = await twoBackups(flipped);
      const victim = basePacks[0]!;
      await flipByte(victim, Math.floor((await stat(victim)).size / 2));
      const next = await runCli(['backup', 'stdin', '--name', 'data.bin', '--json'], {
        env: flipped.env,
        input: CHANGED_AGAIN,
      });
      expectExit(next, 0);
      const result = JSON.parse(next.stdout.toString()) as {
        wholeForDamagedBase: number;
        damagedPacks: string[];
      };
      expect(result.wholeForDamagedBase).toBeGreaterThan(0);
      expect(result.damagedPacks).toEqual([path.basename(victim)]);
      const latest = await cat(flipped, 'latest');
      expectExit(latest, 0);
      expect(latest.stdout.equals(CHANGED_AGAIN)).toBe(true);

      const checked = await runCli(['check', '--read-data'], { env: flipped.env });
      expectExit(checked, 7);
      expect(checked.stderr).toMatch(
        new RegExp(
          `${path.basename(victim)}: 1 blob fails authentication: [0-9a-f]{16} \\(affects snapshots `,
        ),
      );
      expect(checked.stderr).toContain(second.slice(0, 8));
      const unreadable = await cat(flipped, second);
      expectExit(unreadable, 7);
      expect(unreadable.stderr).toMatch(/is damaged: it fails authentication/);
    } finally {
      await flipped.cleanup();
    }
  });

  it('missing: restore files restores every other file, then fails with exit 7 naming the blob', async () => {
    const missing = await tempRepo();
    try {
      const source = path.join(missing.dir, 'source');
      await mkdir(path.join(source, 'tree'), { recursive: true });
      await writeFile(path.join(source, 'small.txt'), 'kept\n');
      expectExit(await runCli(['init', '--pack-size', '1'], { env: missing.env }), 0);
      // The small file's only copy is in a pack of its own, which stays.
      expectExit(await runCli(['backup', 'files', source], { env: missing.env }), 0);
      const kept = await filesUnder(path.join(missing.repo, 'data'));
      await writeFile(path.join(source, 'a.bin'), ORIGINAL);
      await writeFile(path.join(source, 'tree', 'b.bin'), CHANGED);
      expectExit(await runCli(['backup', 'files', source], { env: missing.env }), 0);
      const added = (await filesUnder(path.join(missing.repo, 'data'))).filter(
        (pack) => !kept.includes(pack),
      );
      const sizes = await Promise.all(added.map(async (pack) => (await stat(pack)).size));
      await rm(added[sizes.indexOf(Math.max(...sizes))]!);

      const target = path.join(missing.dir, 'restored');
      const restored = await runCli(['restore', 'files', 'latest', '--target', target], { env: missing.env });
      expectExit(restored, 7);
      expect(restored.stderr).toMatch(BLOB_DAMAGED);
      expect(restored.stderr).toMatch(/its pack is missing/);
      expect(restored.stderr).toMatch(/file\(s\) not restored, their data is damaged: /);
      const restoredRoot = path.join(target, source);
      expect(await readFile(path.join(restoredRoot, 'small.txt'), 'utf8')).toBe('kept\n');
      // A damaged file leaves nothing behind; an intact one comes back whole.
      for (const [name, data] of [
        ['a.bin', ORIGINAL],
        ['tree/b.bin', CHANGED],
      ] as const) {
        const named = restored.stderr.includes(`${source.slice(1)}/${name} not restored`);
        const content = await readFile(path.join(restoredRoot, name)).catch(() => undefined);
        expect(named ? content : content?.equals(data), name).toBe(named ? undefined : true);
      }
    } finally {
      await missing.cleanup();
    }
  });
});

describe('packs whose index file is lost', () => {
  it('are reported by check as packs in no index file, with their count and size', async () => {
    const repo = await tempRepo();
    try {
      expectExit(await runCli(['init', '--pack-size', '1'], { env: repo.env }), 0);
      expectExit(
        await runCli(['backup', 'stdin', '--name', 'data.bin'], { env: repo.env, input: ORIGINAL }),
        0,
      );
      const [indexFile] = await filesUnder(path.join(repo.repo, 'index'));
      await rm(indexFile!);
      const checked = await runCli(['check', '--json'], { env: repo.env });
      expectExit(checked, 7);
      const result = JSON.parse(checked.stdout.toString()) as {
        unreferencedPacks: number;
        unreferencedBytes: number;
      };
      const packs = await filesUnder(path.join(repo.repo, 'data'));
      expect(result.unreferencedPacks).toBe(packs.length);
      let bytes = 0;
      for (const pack of packs) bytes += (await readFile(pack)).length;
      expect(result.unreferencedBytes).toBe(bytes);
      const text = await runCli(['check'], { env: repo.env });
      expect(text.stderr).toMatch(
        new RegExp(`${packs.length} packs? \\([0-9.]+ MiB\\) in no index file: .*\`strongbox repair index\``),
      );
    } finally {
      await repo.cleanup();
    }
  });
});

describe('restore postgres of a snapshot with a damaged pack', () => {
  let cluster: TestCluster;
  let repo: TempRepo;
  const to = (database: string) => socketUrl(cluster, database);

  beforeAll(async () => {
    cluster = await startCluster();
    repo = await tempRepo();
    expectExit(await runCli(['init', '--pack-size', '1'], { env: repo.env }), 0);
    await cluster.createDatabase('app');
    // About 4 MB of rows that do not compress away: several packs.
    await cluster.psql(
      `create table items (id int primary key, body text);
       insert into items select g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) from generate_series(1, 40000) g`,
      'app',
    );
    expectExit(
      await runCli(['backup', 'postgres'], { env: { ...repo.env, ...cluster.env(), PGDATABASE: 'app' } }),
      0,
    );
    const packs = await filesUnder(path.join(repo.repo, 'data'));
    const sizes = await Promise.all(packs.map(async (pack) => (await stat(pack)).size));
    const victim = packs[sizes.indexOf(Math.max(...sizes))]!;
    await flipByte(victim, Math.floor(Math.max(...sizes) / 2));
  });
  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
  });

  for (const jobs of [1, 2]) {
    it(`fails with exit 7 naming the damaged blob, not pg_restore's error (--jobs ${jobs})`, async () => {
      const database = `app_jobs${jobs}`;
      const restored = await runCli(['restore', 'latest', '--to', to(database), '--jobs', String(jobs)], {
        env: repo.env,
      });
      expectExit(restored, 7);
      expect(restored.stderr).toMatch(BLOB_DAMAGED);
      expect(restored.stderr).not.toMatch(/strongbox: pg_restore/);
      // The database it created for the restore is gone again.
      expect(
        (await cluster.psql(`select count(*) from pg_database where datname = '${database}'`)).trim(),
      ).toBe('0');
    });
  }

  it('dump fails the same way', async () => {
    const dumped = await runCli(['dump', 'latest'], { env: repo.env });
    expectExit(dumped, 7);
    expect(dumped.stderr).toMatch(BLOB_DAMAGED);
  });
});
