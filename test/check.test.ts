import { open, readdir, rm, truncate } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { check } from '../src/index.ts';
import { seededBytes } from './helpers/data.ts';
import { backupBuffer, createTestRepo, type TestRepo } from './helpers/repo.ts';

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name));
}

/** Flips one bit of the byte at `offset`, runs `action`, and flips it back. */
async function withFlippedByte<T>(file: string, offset: number, action: () => Promise<T>): Promise<T> {
  const handle = await open(file, 'r+');
  try {
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, offset);
    await handle.write(Buffer.of(byte[0]! ^ 0x10), 0, 1, offset);
    try {
      return await action();
    } finally {
      await handle.write(byte, 0, 1, offset);
    }
  } finally {
    await handle.close();
  }
}

async function fileSize(file: string): Promise<number> {
  const handle = await open(file, 'r');
  try {
    return (await handle.stat()).size;
  } finally {
    await handle.close();
  }
}

describe('check', () => {
  let repo: TestRepo;
  let snapshots: string[];

  beforeAll(async () => {
    // Small packs so that the data spreads over several of them.
    repo = await createTestRepo({ packSize: 1024 * 1024 });
    const first = await backupBuffer(repo.repository, seededBytes('first', 1_500_000), 'first.bin');
    const second = await backupBuffer(repo.repository, seededBytes('second', 1_500_000), 'second.bin');
    snapshots = [first.snapshot, second.snapshot];
  });
  afterAll(async () => {
    await repo.repository.close();
    await repo.cleanup();
  });

  async function freshCheck(readData: number) {
    const repository = await repo.reopen();
    try {
      return await check(repository, { readData });
    } finally {
      await repository.close();
    }
  }

  it('finds nothing wrong with an intact repository', async () => {
    const result = await freshCheck(1);
    expect(result.problems).toEqual([]);
    expect(result.snapshots).toBe(2);
    expect(result.packsRead).toBe(result.packs);
    expect(result.packs).toBeGreaterThan(2);
  });

  it('catches a flipped byte anywhere in any pack, index or snapshot file', async () => {
    const files = [
      ...(await filesUnder(path.join(repo.location, 'data'))),
      ...(await filesUnder(path.join(repo.location, 'index'))),
      ...(await filesUnder(path.join(repo.location, 'snapshots'))),
    ];
    expect(files.length).toBeGreaterThan(4);
    for (const file of files) {
      const size = await fileSize(file);
      for (const offset of [0, 5, Math.floor(size / 3), Math.floor(size / 2), size - 30, size - 1]) {
        const result = await withFlippedByte(file, offset, () => freshCheck(1));
        expect(result.problems.length, `${path.relative(repo.location, file)} at ${offset}`).toBeGreaterThan(
          0,
        );
      }
    }
  });

  it('names the snapshot a damaged blob belongs to', async () => {
    const packs = await filesUnder(path.join(repo.location, 'data'));
    // The largest pack holds data blobs; corrupt the middle of it.
    const sizes = await Promise.all(packs.map(fileSize));
    const pack = packs[sizes.indexOf(Math.max(...sizes))]!;
    const result = await withFlippedByte(pack, Math.floor(Math.max(...sizes) / 2), () => freshCheck(1));
    expect(result.problems).toHaveLength(1);
    expect(result.problems[0]!.message).toMatch(/fails? authentication/);
    expect(result.problems[0]!.snapshots.length).toBe(1);
    expect(snapshots).toContain(result.problems[0]!.snapshots[0]);
  });

  it('reports a truncated or missing pack without reading data, with the snapshots affected', async () => {
    const packs = await filesUnder(path.join(repo.location, 'data'));
    const victim = packs[0]!;
    const original = await (await import('node:fs/promises')).readFile(victim);
    try {
      await truncate(victim, original.length - 10);
      const truncated = await freshCheck(0);
      expect(truncated.problems.some((problem) => /bytes, the index says/.test(problem.message))).toBe(true);
      await rm(victim);
      const missing = await freshCheck(0);
      const problem = missing.problems.find((candidate) => /missing/.test(candidate.message))!;
      expect(problem.snapshots.length).toBeGreaterThan(0);
    } finally {
      await (await import('node:fs/promises')).writeFile(victim, original);
    }
    expect((await freshCheck(0)).problems).toEqual([]);
  });

  it('reads only part of the data with a subset', async () => {
    const result = await freshCheck(0.3);
    expect(result.packsRead).toBeGreaterThan(0);
    expect(result.packsRead).toBeLessThan(result.packs);
  });
});
