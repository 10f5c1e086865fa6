import { readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { backup, filesSource, openRepository, Repository } from '../src/index.ts';
import { MasterIndex } from '../src/repository/master-index.ts';
import { ReferencedBlobs, UnreadableSnapshotError } from '../src/ops/referenced-blobs.ts';
import { LocalBackend } from '../src/storage/local.ts';
import type { PutOptions } from '../src/storage/backend.ts';
import { seededBytes } from './helpers/data.ts';
import { backupBuffer, createTestRepo, PASSWORD, readAll, type TestRepo } from './helpers/repo.ts';

/**
 * A backup that exits 0 must restore: before it writes the snapshot, every blob the snapshot
 * references must resolve through the index as a reader will see it, and content the index can
 * no longer give (its index file lost) is stored again instead of being referenced.
 */

const SMALL_CHUNKS = { chunker: { min: 256, avg: 1024, max: 4096 }, packSize: 1024 * 1024 };

let repo: TestRepo | undefined;
const opened: Repository[] = [];

afterEach(async () => {
  for (const repository of opened.splice(0)) await repository.close();
  await repo?.cleanup();
  repo = undefined;
});

const hexId = (n: number) => n.toString(16).padStart(64, '0');
const entry = (n: number, base?: number) => ({
  id: hexId(n),
  type: 0 as const,
  offset: 0,
  length: 1,
  rawLength: 1,
  compression: 0 as const,
  level: 0,
  ...(base === undefined ? {} : { base: hexId(base) }),
});

async function indexFileNames(dir: string): Promise<string[]> {
  return (await readdir(path.join(dir, 'index'))).map((name) => `index/${name}`);
}

/** Text rows, so that a changed version is stored mostly as deltas of the first. */
function rows(count: number, changed = new Set<number>()): Buffer {
  return Buffer.from(
    Array.from({ length: count }, (_, n) =>
      changed.has(n) ? `${n}\trefunded\t0.00\n` : `${n}\tcustomer-${(n * 7919) % 100_003}\t${n % 997}.25\n`,
    ).join(''),
  );
}

describe('the references a snapshot would make', () => {
  it('are each found through the index, a delta together with its base', () => {
    const index = new MasterIndex(4);
    const references = new ReferencedBlobs(index);
    index.addPack({ id: hexId(1000), size: 1, keys: Buffer.alloc(1), blobs: [entry(1, 2)] });
    references.add(hexId(1));
    expect(references.firstUnreadable()).toEqual({
      id: hexId(1),
      reason: `its delta base ${hexId(2).slice(0, 16)} is not in the index`,
    });
    index.addPack({ id: hexId(1001), size: 1, keys: Buffer.alloc(1), blobs: [entry(2)] });
    expect(references.firstUnreadable()).toBeUndefined();
    // Referenced before its pack is indexed (a blob of the running backup), then never indexed.
    references.add(hexId(3));
    expect(references.firstUnreadable()).toEqual({ id: hexId(3), reason: 'it is not in the index' });
  });

  it('are remembered by slot across thousands of blobs', () => {
    const index = new MasterIndex();
    const references = new ReferencedBlobs(index);
    const blobs = Array.from({ length: 20_000 }, (_, n) => entry(n));
    index.addPack({ id: hexId(99_999), size: 1, keys: Buffer.alloc(1), blobs });
    for (let n = 0; n < 20_000; n += 3) references.add(hexId(n));
    expect(references.firstUnreadable()).toBeUndefined();
    // A delta whose base is nowhere, referenced late: found, however far into the index it sits.
    index.addPack({ id: hexId(100_000), size: 1, keys: Buffer.alloc(1), blobs: [entry(20_500, 123_456)] });
    references.add(hexId(20_500));
    expect(references.firstUnreadable()?.id).toBe(hexId(20_500));
    // A second copy stored whole makes it readable.
    index.addPack({ id: hexId(100_001), size: 1, keys: Buffer.alloc(1), blobs: [entry(20_500)] });
    expect(references.firstUnreadable()).toBeUndefined();
  });
});

describe('a backup', () => {
  it('stores again a delta whose base lost its index file, and the snapshot restores', async () => {
    repo = await createTestRepo(SMALL_CHUNKS);
    const first = rows(20_000);
    await backupBuffer(repo.repository, first, 'table');
    const baseFiles = await indexFileNames(repo.location);
    const changed = rows(20_000, new Set([5, 900, 4_000, 12_345, 19_000]));
    const second = await backupBuffer(repo.repository, changed, 'table');
    expect(second.deltaBlobs).toBeGreaterThan(0);
    // The bases' index files are lost; the deltas' are not.
    for (const name of baseFiles) await rm(path.join(repo.location, name));

    const session = await repo.reopen();
    opened.push(session);
    const third = await backupBuffer(session, changed, 'table');
    expect(third.newBlobs).toBeGreaterThanOrEqual(second.deltaBlobs);
    const reader = await repo.reopen();
    opened.push(reader);
    expect((await readAll(reader, third.snapshot)).equals(changed)).toBe(true);
  });

  it('reads again an unchanged file whose blobs lost their index file, and the snapshot restores', async () => {
    repo = await createTestRepo();
    const data = path.join(repo.dir, 'data');
    await mkdir(data);
    const a = seededBytes('a', 300_000);
    const b = seededBytes('b', 200_000);
    await writeFile(path.join(data, 'a.bin'), a);
    await backup(repo.repository, filesSource([data]), { threads: 1 });
    const firstFiles = await indexFileNames(repo.location);
    // The second snapshot's trees are indexed apart from a.bin's blobs, which it reuses.
    await writeFile(path.join(data, 'b.bin'), b);
    await backup(repo.repository, filesSource([data]), { threads: 1 });
    for (const name of firstFiles) await rm(path.join(repo.location, name));

    const session = await repo.reopen();
    opened.push(session);
    const third = await backup(session, filesSource([data]), { threads: 1 });
    expect(third.summary.unchangedFiles).toBe(1);
    expect(third.bytesRead).toBe(a.length);
    const reader = await repo.reopen();
    opened.push(reader);
    expect((await readAll(reader, third.snapshot, path.join(data, 'a.bin'))).equals(a)).toBe(true);
    expect((await readAll(reader, third.snapshot, path.join(data, 'b.bin'))).equals(b)).toBe(true);
  });

  it("reads every file again when the parent snapshot's trees lost their index file", async () => {
    repo = await createTestRepo();
    const data = path.join(repo.dir, 'data');
    await mkdir(data);
    const content = seededBytes('unchanged', 300_000);
    await writeFile(path.join(data, 'a.bin'), content);
    await backup(repo.repository, filesSource([data]), { threads: 1 });
    for (const name of await indexFileNames(repo.location)) await rm(path.join(repo.location, name));

    const session = await repo.reopen();
    opened.push(session);
    const second = await backup(session, filesSource([data]), { threads: 1 });
    expect(second.bytesRead).toBe(content.length);
    const reader = await repo.reopen();
    opened.push(reader);
    expect((await readAll(reader, second.snapshot, path.join(data, 'a.bin'))).equals(content)).toBe(true);
  });

  it('writes no snapshot when the storage loses an index file it accepted', async () => {
    repo = await createTestRepo();
    // No real storage loses acknowledged writes on demand: this one drops every index file.
    class LosingIndexFiles extends LocalBackend {
      override async put(name: string, data: Uint8Array, options?: PutOptions): Promise<void> {
        if (!name.startsWith('index/')) await super.put(name, data, options);
      }
    }
    const session = await Repository.open(new LosingIndexFiles(repo.location), { passphrase: PASSWORD });
    opened.push(session);
    const failure = await backupBuffer(session, seededBytes('lost', 200_000)).catch(
      (error: unknown) => error,
    );
    expect(failure).toBeInstanceOf(UnreadableSnapshotError);
    expect((failure as UnreadableSnapshotError).reason).toBe('the storage lost it after accepting it');
    const reader = await openRepository({ repo: repo.location, passphrase: PASSWORD });
    opened.push(reader);
    expect(await reader.listSnapshots()).toEqual([]);
  });
});
