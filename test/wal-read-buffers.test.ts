import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ReadBuffers } from '../src/postgres/wal/read-buffers.ts';
import { seededBytes } from './helpers/data.ts';

let directory: string | undefined;

afterEach(async () => {
  if (directory) await rm(directory, { recursive: true, force: true });
  directory = undefined;
});

describe('WAL read buffers', () => {
  it('reads each file whole, hands a buffer out again only once released, and keeps no more than asked', async () => {
    directory = await mkdtemp(path.join(os.tmpdir(), 'strongbox-read-buffers-'));
    const segment = (seed: string) => seededBytes(seed, 2 * 1024 * 1024);
    const files = {
      a: segment('a'),
      b: segment('b'),
      c: segment('c'),
      history: Buffer.from('1\t0/3000000\tx\n'),
    };
    for (const [name, bytes] of Object.entries(files)) await writeFile(path.join(directory, name), bytes);
    const buffers = new ReadBuffers(1);
    const at = (name: string) => path.join(directory!, name);

    const a = await buffers.read(at('a'));
    const b = await buffers.read(at('b'));
    expect(Buffer.from(a.bytes).equals(files.a)).toBe(true);
    expect(Buffer.from(b.bytes).equals(files.b)).toBe(true);
    // Both in use: each has its own shared memory.
    expect(a.bytes.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(a.bytes.buffer).not.toBe(b.bytes.buffer);

    a.release();
    a.release(); // twice is harmless: the buffer is not kept twice
    b.release(); // one kept at most: this one goes
    const c = await buffers.read(at('c'));
    expect(c.bytes.buffer).toBe(a.bytes.buffer);
    expect(Buffer.from(c.bytes).equals(files.c)).toBe(true);
    const d = await buffers.read(at('a'));
    expect(d.bytes.buffer).not.toBe(a.bytes.buffer);
    expect(d.bytes.buffer).not.toBe(b.bytes.buffer);
    expect(Buffer.from(d.bytes).equals(files.a)).toBe(true);

    // A small file (a timeline's history) is read into memory of its own.
    const history = await buffers.read(at('history'));
    expect(Buffer.from(history.bytes).equals(files.history)).toBe(true);
    expect(history.bytes.buffer).not.toBeInstanceOf(SharedArrayBuffer);
  });
});
