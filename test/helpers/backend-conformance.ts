import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { ObjectNotFoundError, type StorageBackend } from '../../src/storage/backend.ts';

/**
 * What every storage backend must do, run against a real server. `open` gives a backend on an
 * empty location of its own (a new prefix, container or directory) each time it is called.
 */
export function describeBackendConformance(name: string, open: () => Promise<StorageBackend>): void {
  describe(`${name}: the storage interface`, () => {
    it('puts, gets, reads ranges, lists, stats and deletes', async () => {
      const store = await open();
      try {
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
        await expect(store.getRange('data/ab/abc', 0, 1)).rejects.toBeInstanceOf(ObjectNotFoundError);
      } finally {
        await store.close();
      }
    });

    it('stores large objects exactly and replaces objects whole', async () => {
      const store = await open();
      try {
        const big = randomBytes(17 * 1024 * 1024 + 123);
        await store.put('data/cd/big', big, { deferSync: true });
        await store.syncDeferred();
        expect((await store.get('data/cd/big')).equals(big)).toBe(true);
        expect(
          (await store.getRange('data/cd/big', 16 * 1024 * 1024, 1000)).equals(
            big.subarray(16 * 1024 * 1024, 16 * 1024 * 1024 + 1000),
          ),
        ).toBe(true);
        await store.put('config', Buffer.from('first'));
        await store.put('config', Buffer.from('second'));
        expect((await store.get('config')).toString()).toBe('second');
      } finally {
        await store.close();
      }
    });

    it('lists many objects across pages, under their prefix only', async () => {
      const store = await open();
      try {
        const names = Array.from({ length: 1100 }, (_, i) => `index/${String(i).padStart(5, '0')}`);
        for (let i = 0; i < names.length; i += 50) {
          await Promise.all(names.slice(i, i + 50).map((object) => store.put(object, Buffer.from(object))));
        }
        await store.put('indexes-not/x', Buffer.from('x'));
        const listed = [];
        for await (const object of store.list('index/')) listed.push(object.name);
        expect(listed.sort()).toEqual(names);
      } finally {
        await store.close();
      }
    });

    it('fails a range read past the end loudly', async () => {
      const store = await open();
      try {
        await store.put('data/x', Buffer.from('short'));
        await expect(store.getRange('data/x', 2, 100)).rejects.toThrow();
      } finally {
        await store.close();
      }
    });
  });
}
