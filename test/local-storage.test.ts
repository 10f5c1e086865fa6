import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ObjectNotFoundError } from '../src/storage/backend.ts';
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
  it('puts, gets, reads ranges, lists, stats and deletes', async () => {
    const store = await backend();
    await store.put('data/ab/abc', Buffer.from('hello world'));
    await store.put('index/one', Buffer.from('x'));
    expect((await store.get('data/ab/abc')).toString()).toBe('hello world');
    expect((await store.getRange('data/ab/abc', 6, 5)).toString()).toBe('world');
    expect(await store.stat('data/ab/abc')).toEqual({ name: 'data/ab/abc', size: 11 });
    expect(await store.stat('data/ab/none')).toBeUndefined();
    const listed = [];
    for await (const object of store.list('data/')) listed.push(object);
    expect(listed).toEqual([{ name: 'data/ab/abc', size: 11 }]);
    await store.delete('data/ab/abc');
    await store.delete('data/ab/abc');
    await expect(store.get('data/ab/abc')).rejects.toBeInstanceOf(ObjectNotFoundError);
  });

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
