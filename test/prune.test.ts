import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LockLostError } from '../src/errors.ts';
import { STALE_AFTER_MS } from '../src/repository/locks.ts';
import { check } from '../src/ops/check.ts';
import { prune } from '../src/ops/prune.ts';
import type { Repository } from '../src/index.ts';
import { seededBytes } from './helpers/data.ts';
import { backupBuffer, createTestRepo, readAll, type TestRepo } from './helpers/repo.ts';

/**
 * Prune against real repositories on disk: after forgetting snapshots, every snapshot kept reads
 * back byte for byte and `check --read-data` finds nothing, what only the forgotten ones used is
 * gone, and deltas whose base only a forgotten snapshot referenced keep their base.
 */

const SMALL = { chunker: { min: 4096, avg: 16384, max: 65536 }, packSize: 1024 * 1024 };

let repo: TestRepo | undefined;
afterEach(async () => {
  await repo?.repository.close();
  await repo?.cleanup();
  repo = undefined;
});

async function packFiles(location: string): Promise<string[]> {
  const names: string[] = [];
  for (const fan of await readdir(path.join(location, 'data'))) {
    for (const name of await readdir(path.join(location, 'data', fan))) names.push(name);
  }
  return names;
}

async function expectIntact(repository: Repository, kept: Map<string, Buffer>): Promise<void> {
  for (const [snapshot, data] of kept) expect((await readAll(repository, snapshot)).equals(data)).toBe(true);
  const checked = await check(repository, { readData: 1 });
  expect(checked.problems).toEqual([]);
  expect(checked.unreferencedPacks).toBe(0);
}

/** `base` with a few bytes changed in every 20 KiB: new chunks that resemble the old ones. */
function edited(base: Buffer, seed: number): Buffer {
  const copy = Buffer.from(base);
  for (let at = 1000 + seed * 37; at < copy.length; at += 20_000) copy.write(`edit ${seed}`, at);
  return copy;
}

describe('prune', () => {
  it('removes what only forgotten snapshots used, and every kept snapshot reads back exactly', async () => {
    repo = await createTestRepo(SMALL);
    const { repository } = repo;
    const kept = new Map<string, Buffer>();
    const forgotten: string[] = [];
    for (let i = 0; i < 6; i++) {
      const data = seededBytes(`prune ${i}`, 1_500_000);
      const { snapshot } = await backupBuffer(repository, data, `file-${i}`);
      if (i % 2 === 0) forgotten.push(snapshot);
      else kept.set(snapshot, data);
    }
    const before = await packFiles(repo.location);
    await repository.removeSnapshots(forgotten, 'forget');
    const result = await prune(repository);
    expect(result.outcome).toBe('done');
    expect(result.packs.deleted).toBeGreaterThan(0);
    const after = await packFiles(repo.location);
    expect(after.length).toBeLessThan(before.length);
    const fresh = await repo.reopen();
    try {
      await expectIntact(fresh, kept);
      // A second prune finds nothing more to do.
      const again = await prune(fresh);
      expect(again.packs.deleted + again.packs.orphansDeleted).toBe(0);
      expect(await packFiles(repo.location)).toEqual(expect.arrayContaining(after));
    } finally {
      await fresh.close();
    }
  });

  it('keeps the base of every delta a kept snapshot needs, when only a forgotten snapshot referenced it', async () => {
    repo = await createTestRepo(SMALL);
    const { repository } = repo;
    const original = seededBytes('delta base', 3_000_000);
    const first = await backupBuffer(repository, original, 'db.dump');
    const changed = edited(original, 1);
    const writer = await repo.reopen();
    const second = await backupBuffer(writer, changed, 'db.dump');
    await writer.close();
    const fresh = await repo.reopen();
    try {
      await fresh.loadIndex();
      const deltas = [...fresh.index.everyLocation()].filter(([, copy]) => copy.base !== undefined);
      expect(deltas.length).toBeGreaterThan(0);
      await fresh.removeSnapshots([first.snapshot], 'forget');
      const unrelated = await backupBuffer(fresh, seededBytes('unrelated', 2_500_000), 'other');
      await fresh.removeSnapshots([unrelated.snapshot], 'forget');
      const result = await prune(fresh, { maxUnused: 0 });
      expect(result.packs.deleted).toBeGreaterThan(0);
    } finally {
      await fresh.close();
    }
    const last = await repo.reopen();
    try {
      await expectIntact(last, new Map([[second.snapshot, changed]]));
    } finally {
      await last.close();
    }
  });

  it('repacks packs mostly unused down to the tolerance, copying what kept snapshots need', async () => {
    repo = await createTestRepo({ ...SMALL, packSize: 4 * 1024 * 1024 });
    const { repository } = repo;
    // One pack holds both files: forgetting one leaves it half unused.
    const a = seededBytes('half a', 1_000_000);
    const b = seededBytes('half b', 1_000_000);
    const both = await backupBuffer(repository, Buffer.concat([a, b]), 'both');
    const writer = await repo.reopen();
    const onlyA = await backupBuffer(writer, a, 'a');
    await writer.close();
    const session = await repo.reopen();
    try {
      await session.removeSnapshots([both.snapshot], 'forget');
      const dry = await prune(session, { dryRun: true });
      expect(dry.packs.repacked).toBeGreaterThan(0);
      const result = await prune(session);
      expect(result.packs.repacked).toBeGreaterThan(0);
      expect(result.bytes.written).toBeGreaterThan(0);
    } finally {
      await session.close();
    }
    const last = await repo.reopen();
    try {
      await expectIntact(last, new Map([[onlyA.snapshot, a]]));
    } finally {
      await last.close();
    }
  });

  it('a writer whose lock may have looked stale to a prune writes no snapshot', async () => {
    repo = await createTestRepo(SMALL);
    const { repository } = repo;
    const { snapshot } = await backupBuffer(repository, seededBytes('stale', 100_000), 'stale');
    const { header, body } = await repository.loadSnapshot(snapshot);
    await repository.withLock('backup stdin', { exclusive: false }, async () => {
      // The clock moved on without the lock being refreshed: the process was suspended. (The
      // clock is the one thing faked here: waiting half an hour is not a test.)
      const now = Date.now();
      const clock = vi.spyOn(Date, 'now').mockReturnValue(now + STALE_AFTER_MS);
      try {
        await expect(repository.saveSnapshot({ ...header, name: 'late' }, body)).rejects.toBeInstanceOf(
          LockLostError,
        );
      } finally {
        clock.mockRestore();
      }
      // Refreshed in time, it writes.
      await repository.saveSnapshot({ ...header, name: 'in time' }, body);
    });
    expect((await repository.listSnapshots()).map((info) => info.header.name).sort()).toEqual([
      'in time',
      'stale',
    ]);
  });
});
