import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LocalBackend } from '../src/storage/local.ts';
import { describeBackendConformance } from './helpers/backend-conformance.ts';

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

async function backend(): Promise<LocalBackend> {
  dir = await mkdtemp(path.join(os.tmpdir(), 'strongbox-local-'));
  return new LocalBackend(path.join(dir, 'repo'));
}

describe('local storage', () => {
  it('replaces objects atomically and keeps them private', async () => {
    const store = await backend();
    await store.put('config', Buffer.from('first'));
    await store.put('config', Buffer.from('second'));
    expect((await store.get('config')).toString()).toBe('second');
    expect((await stat(path.join(store.location, 'config'))).mode & 0o777).toBe(0o600);
    expect((await readdir(store.location)).filter((name) => name.startsWith('.'))).toEqual([]);
  });

  it('makes deferred writes visible at once and durable on syncDeferred', async () => {
    const store = await backend();
    await store.put('data/ab/deferred', Buffer.from('later'), { deferSync: true });
    expect((await store.get('data/ab/deferred')).toString()).toBe('later');
    await store.syncDeferred();
    await store.syncDeferred();
    expect((await store.get('data/ab/deferred')).toString()).toBe('later');
  });

  it('hides temporary files of interrupted writes and can remove them', async () => {
    const store = await backend();
    await store.put('data/ab/real', Buffer.from('x'));
    await writeFile(path.join(store.location, 'data', 'ab', '.tmp-deadbeef'), 'partial');
    const listed = [];
    for await (const object of store.list('data/')) listed.push(object.name);
    expect(listed).toEqual(['data/ab/real']);
    expect(await store.removeIncompleteUploads(new Date(Date.now() - 60_000))).toBe(0);
    expect(await store.removeIncompleteUploads(new Date(Date.now() + 1000))).toBe(1);
  });

  it('fails a short range read loudly', async () => {
    const store = await backend();
    await store.put('data/x', Buffer.from('short'));
    await expect(store.getRange('data/x', 2, 100)).rejects.toThrow(/shorter than expected/);
  });

  it('refuses names that escape the repository', async () => {
    const store = await backend();
    await expect(store.put('../escape', Buffer.from('x'))).rejects.toThrow(/invalid object name/);
  });
});

describeBackendConformance('local', backend);
