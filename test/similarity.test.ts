import { createHash } from 'node:crypto';
import { describe, it, expect } from 'vitest';
import { sketch, SimilarityIndex, SKETCH_SIZE } from '../src/chunking/similarity.ts';

/** `length` deterministic pseudo-random bytes: sha256(seed || counter) blocks. */
function randomBytes(seed: string, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let i = 0; i * 32 < length; i++)
    createHash('sha256')
      .update(`${seed}/${i}`)
      .digest()
      .copy(out, i * 32);
  return out;
}

/** One pg_dump-like COPY row (~160 bytes): fixed structure, a few pseudo-random fields. */
function row(seed: string, id: number): string {
  const h = createHash('sha256').update(`${seed}/row/${id}`).digest();
  const plan = ['free', 'pro', 'team'][h[0]! % 3];
  const tld = ['com', 'org', 'net'][h[1]! % 3];
  const minute = String(h[2]! % 60).padStart(2, '0');
  const second = String(h[3]! % 60).padStart(2, '0');
  return `${id}\tuser${id}@example.${tld}\t${h.toString('hex', 4, 12)}\tPL\t2024-02-18 01:${minute}:${second}+00\t{"plan": "${plan}", "tags": ["${h.toString('hex', 12, 28)}", ${h[28]}], "score": ${h.readUInt16LE(29) / 1000}}\t\\N\n`;
}

function rows(seed: string, first: number, bytes: number): { text: Buffer; ids: number[] } {
  const parts: string[] = [];
  const ids: number[] = [];
  let length = 0;
  for (let id = first; length < bytes; id++) {
    const r = row(seed, id);
    parts.push(r);
    ids.push(id);
    length += r.length;
  }
  return { text: Buffer.from(parts.join('')), ids };
}

/** The rows of `base` with one new ~160-byte row inserted after every `every`-th row. */
function withInsertedRows(seed: string, first: number, bytes: number, every: number): Buffer {
  const { ids } = rows(seed, first, bytes);
  const parts: string[] = [];
  ids.forEach((id, i) => {
    parts.push(row(seed, id));
    if (i % every === every - 1) parts.push(row(seed, 1_000_000 + id));
  });
  return Buffer.from(parts.join(''));
}

function shared(a: number[], b: number[]): number {
  return a.filter((v) => b.includes(v)).length;
}

/**
 * The sketch as documented, one window at a time with a Map: pins the definition, which must
 * not change silently because sketches are persisted in the repository index.
 */
function referenceSketch(data: Uint8Array): number[] {
  const gear = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    gear[i] = createHash('sha256')
      .update('strongbox similarity sketch v1')
      .update(Uint8Array.of(i))
      .digest()
      .readInt32LE(0);
  }
  const firstEnd = new Map<number, number>();
  let h = 0;
  for (let i = 0; i < data.length; i++) {
    h = ((h << 1) + gear[data[i]!]!) | 0;
    if (i >= 31 && !firstEnd.has(h >>> 0)) firstEnd.set(h >>> 0, i);
  }
  const values: number[] = [];
  for (const rank of [...firstEnd.keys()].sort((x, y) => x - y).slice(0, SKETCH_SIZE)) {
    const end = firstEnd.get(rank)!;
    let x = 0x811c9dc5;
    for (let i = end - 31; i <= end; i++) x = Math.imul(x ^ data[i]!, 0x01000193);
    x ^= x >>> 16;
    x = Math.imul(x, 0x85ebca6b);
    x ^= x >>> 13;
    x = Math.imul(x, 0xc2b2ae35);
    x ^= x >>> 16;
    if (!values.includes(x >>> 0)) values.push(x >>> 0);
  }
  return values;
}

describe('sketch', () => {
  it('returns up to SKETCH_SIZE distinct uint32 values, deterministically', () => {
    const data = randomBytes('a', 65536);
    const s = sketch(data);
    expect(s).toHaveLength(SKETCH_SIZE);
    expect(new Set(s).size).toBe(s.length);
    for (const v of s) expect(Number.isInteger(v) && v >= 0 && v <= 0xffffffff).toBe(true);
    expect(sketch(Buffer.from(data))).toEqual(s);
    // A view at another offset of another buffer gives the same sketch.
    const padded = Buffer.concat([Buffer.from('xyz'), data]);
    expect(sketch(padded.subarray(3))).toEqual(s);
  });

  it('matches the documented definition on every path (short, long, repetitive)', () => {
    const inputs: Uint8Array[] = [
      randomBytes('r1', 32),
      randomBytes('r2', 100),
      randomBytes('r3', 8191),
      randomBytes('r4', 8192),
      randomBytes('r5', 20001),
      rows('s', 0, 30000).text,
      Buffer.alloc(20000), // one distinct window
      Buffer.from('abc'.repeat(9000)), // three distinct windows
      Buffer.concat([Buffer.alloc(30000, 7), randomBytes('r6', 40)]), // few distinct windows
    ];
    for (const data of inputs) expect(sketch(data)).toEqual(referenceSketch(data));
  });

  it('is empty for input shorter than one 32-byte window', () => {
    expect(sketch(new Uint8Array(0))).toEqual([]);
    expect(sketch(randomBytes('short', 31))).toEqual([]);
    expect(sketch(randomBytes('short', 32))).toHaveLength(1);
  });

  it('is mostly unchanged by rows inserted every ~6 KiB', () => {
    const base = rows('db', 1000, 65536).text;
    const target = withInsertedRows('db', 1000, 65536, 40);
    expect(target.length - base.length).toBeGreaterThan(1500);
    expect(shared(sketch(base), sketch(target))).toBeGreaterThanOrEqual(6);
  });

  it('still overlaps when chunk boundaries shift', () => {
    const stream = rows('db', 5000, 200000).text;
    const a = stream.subarray(10000, 10000 + 65536);
    const b = stream.subarray(10000 + 12000, 10000 + 12000 + 70000);
    expect(shared(sketch(a), sketch(b))).toBeGreaterThanOrEqual(3);
  });

  it('shares nothing between unrelated chunks', () => {
    expect(shared(sketch(randomBytes('u1', 65536)), sketch(randomBytes('u2', 65536)))).toBe(0);
    // Same table layout, different rows: the common field names do not make them similar.
    expect(
      shared(sketch(rows('db', 0, 65536).text), sketch(rows('db', 50000, 65536).text)),
    ).toBeLessThanOrEqual(1);
    expect(shared(sketch(rows('db', 0, 65536).text), sketch(randomBytes('u3', 65536)))).toBe(0);
  });
});

describe('SimilarityIndex', () => {
  it('finds the stored chunk a new version resembles, and nothing for new content', () => {
    const index = new SimilarityIndex();
    for (let i = 0; i < 8; i++) index.add(`other${i}`, sketch(rows('db', 100000 + i * 1000, 65536).text));
    index.add('base', sketch(rows('db', 1000, 65536).text));
    index.add('random', sketch(randomBytes('x', 65536)));
    expect(index.findBase(sketch(withInsertedRows('db', 1000, 65536, 40)))).toBe('base');
    expect(index.findBase(sketch(randomBytes('y', 65536)))).toBeUndefined();
    expect(index.findBase([])).toBeUndefined();
  });

  it('prefers the id sharing the most values', () => {
    const index = new SimilarityIndex();
    index.add('two', [1, 2, 50, 51]);
    index.add('three', [1, 2, 3, 60]);
    index.add('one', [4, 70]);
    expect(index.findBase([1, 2, 3, 4])).toBe('three');
  });

  it('requires minShared values, or all of a smaller query', () => {
    const index = new SimilarityIndex({ minShared: 2 });
    index.add('a', [1, 2, 3]);
    expect(index.findBase([1, 9, 10])).toBeUndefined();
    expect(index.findBase([1, 2, 10])).toBe('a');
    expect(index.findBase([3])).toBe('a');
    const loose = new SimilarityIndex({ minShared: 1 });
    loose.add('a', [1, 2, 3]);
    expect(loose.findBase([1, 9, 10])).toBe('a');
  });

  it('keeps only the newest maxIdsPerValue ids per value', () => {
    const index = new SimilarityIndex({ maxIdsPerValue: 2 });
    index.add('a', [1, 2, 3, 4]);
    index.add('b', [1, 2]);
    index.add('c', [1, 2]);
    // Values 1 and 2 have forgotten 'a', so 'a' shares only 3 and 4; ties go to the newest.
    expect(index.findBase([1, 2, 3, 4])).toBe('c');
    expect(index.findBase([1, 2])).toBe('c');
    expect(index.findBase([3, 4])).toBe('a');
    expect(index.size).toBe(4);
    // Re-adding an id refreshes it rather than duplicating it.
    index.add('b', [1, 2]);
    expect(index.findBase([1, 2])).toBe('b');
  });

  it('rejects bad options', () => {
    expect(() => new SimilarityIndex({ minShared: 0 })).toThrow(RangeError);
    expect(() => new SimilarityIndex({ maxIdsPerValue: 1.5 })).toThrow(RangeError);
  });
});
