import { readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { LockLostError } from '../src/errors.ts';
import { STALE_AFTER_MS } from '../src/repository/locks.ts';
import { check } from '../src/ops/check.ts';
import { prune } from '../src/ops/prune.ts';
import { forget } from '../src/ops/forget.ts';
import { Repository } from '../src/repository/repository.ts';
import { LocalBackend } from '../src/storage/local.ts';
import { ObjectLockedError } from '../src/storage/backend.ts';
import { seededBytes } from './helpers/data.ts';
import { backupBuffer, createTestRepo, PASSWORD, readAll, type TestRepo } from './helpers/repo.ts';

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

async function expectIntact(
  repository: Repository,
  kept: Map<string, Buffer>,
  { unindexedAllowed = false } = {},
): Promise<void> {
  for (const [snapshot, data] of kept) expect((await readAll(repository, snapshot)).equals(data)).toBe(true);
  const checked = await check(repository, { readData: 1 });
  expect(checked.problems).toEqual([]);
  if (!unindexedAllowed) expect(checked.unreferencedPacks).toBe(0);
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

  it('a reader that loaded the index before a prune moved its blobs finds them where they went', async () => {
    repo = await createTestRepo({ ...SMALL, packSize: 4 * 1024 * 1024 });
    const a = seededBytes('moved a', 1_000_000);
    const both = await backupBuffer(
      repo.repository,
      Buffer.concat([a, seededBytes('moved b', 1_000_000)]),
      'both',
    );
    const writer = await repo.reopen();
    const onlyA = await backupBuffer(writer, a, 'a');
    await writer.close();
    // A restore begun after the plan: prune does not wait for it, and repacks under it.
    const reader = await repo.reopen();
    try {
      await reader.loadIndex();
      const { body } = await reader.loadSnapshot(onlyA.snapshot);
      const [file] = (await reader.readTree(body.tree)).nodes;
      const content = file!.content!;
      const pruner = await repo.reopen();
      try {
        await pruner.removeSnapshots([both.snapshot], 'forget');
        const result = await prune(pruner, { maxUnused: 0 });
        expect(result.packs.repacked).toBeGreaterThan(0);
      } finally {
        await pruner.close();
      }
      const parts: Buffer[] = [];
      for (const id of content) parts.push(await reader.readBlob(id));
      expect(Buffer.concat(parts).equals(a)).toBe(true);
    } finally {
      await reader.close();
    }
  });

  it('check while a plan is pending does not take the packs it deletes for damage', async () => {
    repo = await createTestRepo(SMALL);
    const kept = new Map<string, Buffer>();
    const gone: string[] = [];
    for (let i = 0; i < 3; i++) {
      const data = seededBytes(`pending ${i}`, 1_500_000);
      const { snapshot } = await backupBuffer(repo.repository, data, `file-${i}`);
      if (i === 1) gone.push(snapshot);
      else kept.set(snapshot, data);
    }
    await repo.repository.removeSnapshots(gone, 'forget');
    // A backup holds its lock: the plan is written and waits for it.
    const backup = await repo.reopen();
    const held = await backup.lock(false, 'backup stdin');
    try {
      const waiting = await prune(await repo.reopen(), { wait: false });
      expect(waiting.outcome).toBe('waiting');
      const { trusted } = await repo.repository.records.prunePlans();
      const condemned = trusted[0]!.value.delete;
      expect(condemned.length).toBeGreaterThan(0);
      // The prune deletes one under a check that began after its plan.
      const checker = await repo.reopen();
      try {
        await rm(path.join(repo.location, 'data', condemned[0]!.slice(0, 2), condemned[0]!));
        await expectIntact(checker, kept, { unindexedAllowed: true });
      } finally {
        await checker.close();
      }
    } finally {
      await held.release();
      await backup.close();
    }
    const finisher = await repo.reopen();
    try {
      const done = await prune(finisher);
      expect(done.resumedPlans).toBe(1);
      await expectIntact(finisher, kept);
    } finally {
      await finisher.close();
    }
  });

  it('leaves what the storage keeps locked, says so, and deletes it on a later run once free', async () => {
    repo = await createTestRepo(SMALL);
    const kept = new Map<string, Buffer>();
    const gone: string[] = [];
    for (let i = 0; i < 3; i++) {
      const data = seededBytes(`locked ${i}`, 1_500_000);
      const { snapshot } = await backupBuffer(repo.repository, data, `file-${i}`);
      if (i === 1) gone.push(snapshot);
      else kept.set(snapshot, data);
    }
    // No local storage enforces S3 Object Lock (test/storage-object-lock.test.ts checks what the
    // S3 and Azure backends send and how they report a refusal): this one refuses every delete
    // of packs and snapshots, as a bucket does until their retention ends.
    let locked = true;
    class LockingBackend extends LocalBackend {
      override async delete(name: string): Promise<void> {
        if (locked && /^(data|snapshots)\//.test(name))
          throw new ObjectLockedError(name, this.location, new Date(Date.now() + 86_400_000));
        return super.delete(name);
      }
    }
    const open = () =>
      Repository.open(
        new LockingBackend(repo!.location),
        { passphrase: PASSWORD },
        {
          stateDirectory: path.join(repo!.dir, 'state'),
        },
      );
    const session = await open();
    try {
      const removal = await forget(session, { ids: gone });
      expect(removal.locked.map((entry) => entry.object)).toEqual([`snapshots/${gone[0]}`]);
      // Removed all the same: hidden from every listing.
      expect((await session.listSnapshots()).map((snapshot) => snapshot.id)).not.toContain(gone[0]);
      const first = await prune(session, { maxUnused: 0 });
      expect(first.locked.length).toBeGreaterThan(0);
      expect(first.locked.every((entry) => entry.retainUntil !== undefined)).toBe(true);
      await expectIntact(session, kept, { unindexedAllowed: true });
    } finally {
      await session.close();
    }
    locked = false;
    const later = await open();
    try {
      const second = await prune(later);
      expect(second.locked).toEqual([]);
      expect(second.packs.orphansDeleted).toBeGreaterThan(0);
      expect(await readdir(path.join(repo.location, 'snapshots'))).not.toContain(gone[0]);
      await expectIntact(later, kept);
    } finally {
      await later.close();
    }
  });
});
