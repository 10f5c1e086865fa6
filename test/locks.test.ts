import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { LockedError, unlock } from '../src/index.ts';
import { acquireLock, isStale, listLocks, STALE_AFTER_MS, type LockInfo } from '../src/repository/locks.ts';
import { sealJson } from '../src/repository/sealed-file.ts';
import { createTestRepo, type TestRepo } from './helpers/repo.ts';

let repo: TestRepo | undefined;
afterEach(async () => {
  await repo?.cleanup();
  repo = undefined;
});

function lockInfo(overrides: Partial<LockInfo>): LockInfo {
  const now = new Date().toISOString();
  return {
    host: os.hostname(),
    pid: process.pid,
    username: 'test',
    exclusive: false,
    operation: 'test',
    created: now,
    refreshed: now,
    ...overrides,
  };
}

/** The pid of a process that has exited, so that no live process has it. */
function deadPid(): number {
  return Number(spawnSync(process.execPath, ['-e', 'console.log(process.pid)']).stdout.toString().trim());
}

describe('locks', () => {
  it('lets shared locks coexist and keeps exclusive ones apart', async () => {
    repo = await createTestRepo();
    const { backend, metadataKey } = repo.repository;
    const first = await acquireLock(backend, metadataKey, { exclusive: false, operation: 'backup' });
    const second = await acquireLock(backend, metadataKey, { exclusive: false, operation: 'backup' });
    await expect(
      acquireLock(backend, metadataKey, { exclusive: true, operation: 'prune' }),
    ).rejects.toBeInstanceOf(LockedError);
    await first.release();
    await second.release();
    const exclusive = await acquireLock(backend, metadataKey, { exclusive: true, operation: 'prune' });
    const error = await acquireLock(backend, metadataKey, { exclusive: false, operation: 'backup' }).catch(
      (caught: unknown) => caught,
    );
    expect(error).toBeInstanceOf(LockedError);
    expect((error as LockedError).message).toMatch(/prune by pid \d+/);
    await exclusive.release();
    expect(await listLocks(backend, metadataKey)).toEqual([]);
  });

  it('treats locks of dead local processes, or not refreshed in time, as stale', () => {
    expect(isStale(lockInfo({}))).toBe(false);
    expect(isStale(lockInfo({ pid: deadPid() }))).toBe(true);
    const old = new Date(Date.now() - STALE_AFTER_MS - 60_000).toISOString();
    expect(isStale(lockInfo({ host: 'another-host', pid: 1, refreshed: old }))).toBe(true);
    expect(isStale(lockInfo({ host: 'another-host', pid: 1 }))).toBe(false);
  });

  it('ignores stale exclusive locks, and unlock removes only stale ones unless asked', async () => {
    repo = await createTestRepo();
    const { backend, metadataKey } = repo.repository;
    await backend.put(
      'locks/stale',
      sealJson('SBLK', metadataKey, lockInfo({ exclusive: true, pid: deadPid() })),
    );
    await backend.put(
      'locks/live',
      sealJson('SBLK', metadataKey, lockInfo({ host: 'another-host', pid: 1 })),
    );
    const lock = await acquireLock(backend, metadataKey, { exclusive: false, operation: 'backup' });
    await lock.release();
    expect((await unlock(repo.repository)).locks).toBe(1);
    expect((await listLocks(backend, metadataKey)).map((listed) => listed.name)).toEqual(['locks/live']);
    expect((await unlock(repo.repository, { all: true })).locks).toBe(1);
  });

  it('holds nothing with a damaged or stray lock file, which unlock removes', async () => {
    repo = await createTestRepo();
    const { backend, metadataKey } = repo.repository;
    await backend.put('locks/notes.txt', Buffer.from('not a lock\n'));
    const exclusive = await acquireLock(backend, metadataKey, { exclusive: true, operation: 'prune' });
    await exclusive.release();
    expect((await unlock(repo.repository)).locks).toBe(1);
    expect(await listLocks(backend, metadataKey)).toEqual([]);
  });
});
