import { watch } from 'node:fs';
import { readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repairIndex, type RepairIndexResult, type Repository } from '../src/index.ts';
import { locationKey } from '../src/repository/master-index.ts';
import { expectExit, runCli, startCli } from './helpers/cli.ts';
import { seededBytes } from './helpers/data.ts';
import { seededRandom } from './helpers/fault-proxy.ts';
import { backupBuffer, createTestRepo, PASSWORD, readAll, type TestRepo } from './helpers/repo.ts';
import { rounds, seed } from './helpers/soak.ts';

/**
 * `repair index` rebuilds the index from the packs' own tables: from scratch it must find every
 * blob where the lost index had it, beside an intact index it must keep what tables lack (the
 * resemblance sketches), and killed at any point it must leave an index that still reads every
 * snapshot, which a second repair completes.
 */

/** Every listing of the index a fresh session loads: its place, and its sketch. */
async function listings(repo: TestRepo): Promise<Map<string, string>> {
  const repository = await repo.reopen();
  try {
    await repository.loadIndex();
    return new Map(
      [...repository.index.everyLocation()].map(([id, copy]) => [
        locationKey(id, copy),
        JSON.stringify(copy.sketch ?? null),
      ]),
    );
  } finally {
    await repository.close();
  }
}

async function withSession<T>(repo: TestRepo, action: (repository: Repository) => Promise<T>): Promise<T> {
  const repository = await repo.reopen();
  try {
    return await action(repository);
  } finally {
    await repository.close();
  }
}

const indexFiles = async (repo: TestRepo) =>
  (await readdir(path.join(repo.location, 'index'))).filter((name) => !name.startsWith('.'));

/** `data`, with one byte changed every `step` bytes from `start`: chunks that resemble the originals. */
function changed(data: Buffer, start: number, step: number): Buffer {
  const copy = Buffer.from(data);
  for (let at = start; at < copy.length; at += step) copy[at]! ^= 1;
  return copy;
}

describe('repair index', () => {
  let repo: TestRepo;
  const expected = new Map<string, Buffer>();

  beforeAll(async () => {
    repo = await createTestRepo({ chunker: { min: 256, avg: 1024, max: 4096 }, packSize: 1024 * 1024 });
    const original = seededBytes('repair', 3_000_000);
    for (const data of [original, changed(original, 0, 40_000), changed(original, 7, 25_000)]) {
      const result = await backupBuffer(repo.repository, data, `v${expected.size}`);
      expected.set(result.snapshot, data);
    }
  }, 120_000);
  afterAll(async () => {
    await repo.repository.close();
    await repo.cleanup();
  });

  it('beside an intact index, writes the same listings, sketches included, and removes the old files', async () => {
    const before = await listings(repo);
    expect([...before.values()].some((sketch) => sketch !== 'null')).toBe(true);
    const oldFiles = await indexFiles(repo);

    const dryRun = await withSession(repo, (repository) => repairIndex(repository, { dryRun: true }));
    expect(await indexFiles(repo)).toEqual(oldFiles);
    const result = await withSession(repo, (repository) => repairIndex(repository));
    expect(dryRun).toEqual({ ...result, dryRun: true, indexFilesRemoved: 0 });
    expect(result).toMatchObject({ unauthenticated: [], copiesLeftOut: [], packsLeftOut: [] });
    expect(result.entries).toBe(before.size);
    expect(result.indexFilesRemoved).toBe(oldFiles.length);
    expect((await indexFiles(repo)).filter((name) => oldFiles.includes(name))).toEqual([]);
    expect(await listings(repo)).toEqual(before);
  });

  it('from scratch, after every index file is deleted, finds every blob where it was', async () => {
    const before = await listings(repo);
    for (const name of await indexFiles(repo)) await rm(path.join(repo.location, 'index', name));

    const result = await withSession(repo, (repository) => repairIndex(repository));
    expect(result).toMatchObject({ previousEntries: 0, indexFilesRemoved: 0, packsLeftOut: [] });
    expect(result.entries).toBe(before.size);
    // The same places; the sketches were only in the index files.
    expect([...(await listings(repo)).keys()].sort()).toEqual([...before.keys()].sort());
    await withSession(repo, async (repository) => {
      for (const [snapshot, data] of expected)
        expect((await readAll(repository, snapshot)).equals(data)).toBe(true);
    });
  });

  it('needs a full key', async () => {
    const identity = path.join(repo.dir, 'write-only.id');
    await withSession(repo, async (repository) =>
      writeFile(identity, await repository.exportIdentity('write-only')),
    );
    const result = await runCli(['repair', 'index'], {
      env: { STRONGBOX_REPO: repo.location, STRONGBOX_IDENTITY_FILE: identity },
    });
    expectExit(result, 5);
    expect(result.stderr).toContain('a write-only key cannot rebuild the index from the packs');
  });
});

describe('repair index killed with SIGKILL', () => {
  let repo: TestRepo;
  let env: Record<string, string>;
  const expected = new Map<string, Buffer>();

  beforeAll(async () => {
    // Tiny chunks: tens of thousands of blobs, so that the repair writes several index files.
    repo = await createTestRepo({ chunker: { min: 64, avg: 256, max: 1024 }, packSize: 1024 * 1024 });
    const passwordFile = path.join(repo.dir, 'password');
    await writeFile(passwordFile, PASSWORD);
    env = { STRONGBOX_REPO: repo.location, STRONGBOX_PASSWORD_FILE: passwordFile };
    for (const name of ['first', 'second']) {
      const data = seededBytes(name, 6_000_000);
      expected.set((await backupBuffer(repo.repository, data, name, 1 << 20)).snapshot, data);
    }
  }, 300_000);
  afterAll(async () => {
    await repo.repository.close();
    await repo.cleanup();
  });

  it('leaves an index that reads every snapshot, wherever it dies, and a second repair completes it', async () => {
    const random = seededRandom(seed('repair index kill'));
    const complete = new Set((await listings(repo)).keys());
    for (let round = 0; round < rounds(3); round++) {
      const dryRun = await runCli(['repair', 'index', '--dry-run', '--json'], { env });
      expectExit(dryRun, 0);
      const { indexFilesWritten } = JSON.parse(dryRun.stdout.toString()) as RepairIndexResult;
      const oldFiles = new Set(await indexFiles(repo));
      expect(indexFilesWritten).toBeGreaterThan(2);
      // The state to interrupt: after `changes` index files appeared or went (0: while reading tables).
      const changes = Math.floor(random() * (indexFilesWritten + oldFiles.size));
      const seen = new Set<string>();
      const child = startCli(['repair', 'index'], { env });
      const exited = new Promise<NodeJS.Signals | null>((resolve) =>
        child.once('close', (_, signal) => resolve(signal)),
      );
      const kill = () => {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          // already gone
        }
      };
      const watcher = watch(path.join(repo.location, 'index'), (_, name) => {
        if (!name || name.startsWith('.') || seen.has(name)) return;
        seen.add(name);
        if (seen.size >= changes) kill();
      });
      if (changes === 0) {
        const locks = watch(path.join(repo.location, 'locks'), () => kill());
        await exited;
        locks.close();
      }
      await exited;
      watcher.close();

      // Either the old index files are all there, or the new ones are: every listing is found.
      const left = new Set((await listings(repo)).keys());
      expect(
        [...complete].filter((key) => !left.has(key)),
        `round ${round}, killed after ${changes}`,
      ).toEqual([]);
      for (const [snapshot, data] of expected) {
        const cat = await runCli(['cat', snapshot], { env });
        expectExit(cat, 0);
        expect(cat.stdout.equals(data)).toBe(true);
      }
      const again = await runCli(['repair', 'index', '--json'], { env });
      expectExit(again, 0);
      expect(new Set((await listings(repo)).keys())).toEqual(complete);
    }
    const checked = await runCli(['check', '--read-data'], { env });
    expectExit(checked, 0);
  }, 600_000);
});
