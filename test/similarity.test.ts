import { createHash } from 'node:crypto';
import fc from 'fast-check';
import { describe, it, expect } from 'vitest';
import { seededBytes } from './helpers/data.ts';
import { Chunker, gearTable } from '../src/chunking/fastcdc.ts';
import { SimilarityIndex, SKETCH_SIZE } from '../src/chunking/similarity.ts';

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

const params = { min: 16384, avg: 65536, max: 262144 };
const gear = gearTable(Buffer.from('similarity test seed'));

/** Chunks of `data` (fed in `piece`-byte pieces) with their sketches, copied out of the chunker. */
function chunkSketches(data: Uint8Array, piece = 1 << 20): { data: Buffer; sketch: number[] }[] {
  const chunker = new Chunker(params, gear);
  const out: { data: Buffer; sketch: number[] }[] = [];
  for (let at = 0; at < data.length; at += piece) {
    for (const chunk of chunker.push(data.subarray(at, at + piece)))
      out.push({ data: Buffer.from(chunk.data), sketch: chunk.sketch });
  }
  const last = chunker.cut();
  if (last) out.push({ data: Buffer.from(last.data), sketch: last.sketch });
  return out;
}

/**
 * The sketch as docs/FORMAT.md defines it, one position at a time: pins the definition, which
 * must not change silently because sketches are persisted in the repository index.
 */
function referenceSketch(chunk: Uint8Array): number[] {
  const bits = Math.log2(params.avg);
  const maskStrict = (((1 << (bits + 2)) - 1) << (32 - bits - 2)) >>> 0;
  const maskLoose = (((1 << (bits - 2)) - 1) << (32 - bits + 2)) >>> 0;
  const limit = Math.max(2 ** (32 - bits + 2), Math.floor((2 ** 32 * 32) / (params.avg - params.min)));
  const firstEnd = new Map<number, number>();
  let h = 0;
  for (let p = params.min; p < chunk.length; p++) {
    h = ((h << 1) + gear[chunk[p]!]!) | 0;
    const rank = h >>> 0;
    const isCut = p === chunk.length - 1 && (rank & (p < params.avg ? maskStrict : maskLoose)) === 0;
    if (rank < limit && !isCut && !firstEnd.has(rank)) firstEnd.set(rank, p);
  }
  const values: number[] = [];
  for (const rank of [...firstEnd.keys()].sort((x, y) => x - y).slice(0, SKETCH_SIZE)) {
    const end = firstEnd.get(rank)!;
    let x = 0x811c9dc5;
    for (let i = end - 31; i <= end; i++) x = Math.imul(x ^ chunk[i]!, 0x01000193);
    x ^= x >>> 16;
    x = Math.imul(x, 0x85ebca6b);
    x ^= x >>> 13;
    x = Math.imul(x, 0xc2b2ae35);
    x ^= x >>> 16;
    if (!values.includes(x >>> 0)) values.push(x >>> 0);
  }
  return values;
}

/** Share of `target`'s chunks that are new and for which an index of `base`'s chunks finds a base. */
function basesFound(base: Uint8Array, target: Uint8Array): { changed: number; found: number } {
  const index = new SimilarityIndex();
  const known = new Set<string>();
  for (const [i, chunk] of chunkSketches(base).entries()) {
    index.add(i, chunk.sketch);
    known.add(chunk.data.toString('hex'));
  }
  let changed = 0;
  let found = 0;
  for (const chunk of chunkSketches(target)) {
    if (known.has(chunk.data.toString('hex'))) continue;
    changed++;
    if (index.findBase(chunk.sketch) !== undefined) found++;
  }
  return { changed, found };
}

describe('sketches from the chunker', () => {
  it('gives up to SKETCH_SIZE distinct uint32 values, the same however the input is fed', () => {
    const data = rows('db', 0, 1_000_000).text;
    const chunks = chunkSketches(data);
    expect(chunkSketches(data, 7919).map((chunk) => chunk.sketch)).toEqual(
      chunks.map((chunk) => chunk.sketch),
    );
    for (const { sketch } of chunks) {
      expect(sketch.length).toBeLessThanOrEqual(SKETCH_SIZE);
      expect(new Set(sketch).size).toBe(sketch.length);
      for (const value of sketch)
        expect(Number.isInteger(value) && value >= 0 && value <= 0xffffffff).toBe(true);
    }
    expect(chunks.filter((chunk) => chunk.sketch.length === SKETCH_SIZE).length).toBeGreaterThan(
      chunks.length * 0.9,
    );
  });

  it('matches the documented definition', () => {
    for (const data of [rows('db', 0, 600_000).text, seededBytes('r', 600_000), Buffer.alloc(300_000)]) {
      for (const chunk of chunkSketches(data)) expect(chunk.sketch).toEqual(referenceSketch(chunk.data));
    }
  });

  it('is empty for a chunk no longer than the minimum size', () => {
    const chunker = new Chunker(params, gear);
    chunker.push(seededBytes('short', params.min));
    expect(chunker.cut()!.sketch).toEqual([]);
  });

  it('finds a base for chunks changed by rows inserted every ~6 KiB', () => {
    const { changed, found } = basesFound(
      rows('db', 1000, 2_000_000).text,
      withInsertedRows('db', 1000, 2_000_000, 40),
    );
    expect(changed).toBeGreaterThan(20);
    expect(found / changed).toBeGreaterThan(0.9);
  });

  it('finds no base for unrelated content, even with the same table layout', () => {
    expect(basesFound(seededBytes('u1', 1_000_000), seededBytes('u2', 1_000_000)).found).toBe(0);
    const sameLayout = basesFound(rows('db', 0, 1_000_000).text, rows('db', 500_000, 1_000_000).text);
    expect(sameLayout.found).toBeLessThanOrEqual(1);
  });
});

describe('SimilarityIndex', () => {
  it('finds the stored sketch a query resembles, and nothing for new values', () => {
    const index = new SimilarityIndex();
    for (let i = 0; i < 8; i++) index.add(10 + i, [100 + 8 * i, 101 + 8 * i, 102 + 8 * i, 103 + 8 * i]);
    index.add(1, [1, 2, 3, 4, 5, 6, 7, 8]);
    expect(index.findBase([1, 2, 3, 4, 5, 900, 901, 902])).toBe(1);
    expect(index.findBase([500, 501, 502, 503])).toBeUndefined();
    expect(index.findBase([])).toBeUndefined();
  });

  it('prefers the id sharing the most values', () => {
    const index = new SimilarityIndex();
    index.add(2, [1, 2, 50, 51]);
    index.add(3, [1, 2, 3, 60]);
    index.add(1, [4, 70]);
    expect(index.findBase([1, 2, 3, 4])).toBe(3);
  });

  it('gives ties to the preferred id, and only ties', () => {
    const index = new SimilarityIndex();
    index.add(2, [1, 2, 50]);
    index.add(3, [1, 2, 60]);
    index.add(4, [1, 2, 3]);
    expect(index.findBase([1, 2, 9], 2)).toBe(2);
    expect(index.findBase([1, 2, 9], 3)).toBe(3);
    expect(index.findBase([1, 2, 3], 2)).toBe(4);
    expect(index.findBase([1, 2, 3], 7)).toBe(4);
    expect(index.findBase([8, 9], 2)).toBeUndefined();
  });

  it('requires minShared values, or all of a smaller query', () => {
    const index = new SimilarityIndex({ minShared: 2 });
    index.add(1, [1, 2, 3]);
    expect(index.findBase([1, 9, 10])).toBeUndefined();
    expect(index.findBase([1, 2, 10])).toBe(1);
    expect(index.findBase([3])).toBe(1);
    const loose = new SimilarityIndex({ minShared: 1 });
    loose.add(1, [1, 2, 3]);
    expect(loose.findBase([1, 9, 10])).toBe(1);
  });

  it('grows past its initial room and still finds every id', () => {
    const index = new SimilarityIndex();
    for (let id = 0; id < 5000; id++) index.add(id, [id * 8 + 1, id * 8 + 2, id * 8 + 3]);
    expect(index.size).toBe(15000);
    for (let id = 0; id < 5000; id += 499) expect(index.findBase([id * 8 + 1, id * 8 + 2])).toBe(id);
  });

  it('keeps only the newest maxIdsPerValue ids per value', () => {
    const index = new SimilarityIndex({ maxIdsPerValue: 2 });
    index.add(1, [1, 2, 3, 4]);
    index.add(2, [1, 2]);
    index.add(3, [1, 2]);
    // Values 1 and 2 have forgotten id 1, so it shares only 3 and 4; ties go to the newest.
    expect(index.findBase([1, 2, 3, 4])).toBe(3);
    expect(index.findBase([1, 2])).toBe(3);
    expect(index.findBase([3, 4])).toBe(1);
    expect(index.size).toBe(4);
    // Re-adding an id refreshes it rather than duplicating it.
    index.add(2, [1, 2]);
    expect(index.findBase([1, 2])).toBe(2);
  });

  it('rejects bad options', () => {
    expect(() => new SimilarityIndex({ minShared: 0 })).toThrow(RangeError);
    expect(() => new SimilarityIndex({ maxIdsPerValue: 1.5 })).toThrow(RangeError);
    expect(() => new SimilarityIndex({ capacity: 3 })).toThrow(RangeError);
  });
});

/**
 * SimilarityIndex against a plain model: for each value, its ids with the time each was added or
 * refreshed, the oldest forgotten past maxIdsPerValue. Small tables, so that random additions
 * cross several growths, with values drawn from a small pool so that they collide and probe.
 */
describe('SimilarityIndex (model-based)', () => {
  interface Model {
    holders: Map<number, { id: number; age: number }[]>;
    clock: number;
  }

  function modelAdd(model: Model, maxIdsPerValue: number, id: number, sketch: number[]): void {
    for (const value of new Set(sketch)) {
      const age = ++model.clock;
      const holders = model.holders.get(value) ?? [];
      model.holders.set(value, holders);
      const held = holders.find((holder) => holder.id === id);
      if (held) held.age = age;
      else if (holders.length >= maxIdsPerValue) {
        const oldest = holders.reduce((a, b) => (b.age < a.age ? b : a));
        oldest.id = id;
        oldest.age = age;
      } else holders.push({ id, age });
    }
  }

  function modelFind(model: Model, minShared: number, sketch: number[], preferred?: number) {
    const values = new Set(sketch);
    const required = Math.min(minShared, values.size);
    if (required === 0) return undefined;
    const counts = new Map<number, number>();
    let best: number | undefined;
    let bestCount = 0;
    for (const value of values) {
      const holders = [...(model.holders.get(value) ?? [])].sort((a, b) => b.age - a.age);
      for (const { id } of holders) {
        const count = (counts.get(id) ?? 0) + 1;
        counts.set(id, count);
        if (count > bestCount) [best, bestCount] = [id, count];
      }
    }
    if (preferred !== undefined && (counts.get(preferred) ?? 0) >= bestCount) best = preferred;
    return bestCount >= required ? best : undefined;
  }

  it('answers as a plain model does, across growths', () => {
    const sketch = (valuePool: number) =>
      fc.array(
        fc.integer({ min: 0, max: valuePool }).map((n) => (n * 0x9e3779b1) >>> 0),
        { maxLength: 10 },
      );
    const operation = (idPool: number, valuePool: number) =>
      fc.oneof(
        fc.record({ add: fc.nat({ max: idPool }), sketch: sketch(valuePool) }),
        fc.record({
          find: sketch(valuePool),
          preferred: fc.option(fc.nat({ max: idPool }), { nil: undefined }),
        }),
      );
    const runs = fc
      .record({
        minShared: fc.integer({ min: 1, max: 4 }),
        maxIdsPerValue: fc.integer({ min: 1, max: 5 }),
        capacity: fc.constantFrom(2, 4, 8, 16),
        idPool: fc.integer({ min: 1, max: 60 }),
        valuePool: fc.integer({ min: 1, max: 400 }),
      })
      .chain((options) =>
        fc.tuple(
          fc.constant(options),
          fc.array(operation(options.idPool, options.valuePool), { maxLength: 120 }),
        ),
      );
    fc.assert(
      fc.property(runs, ([options, operations]) => {
        const index = new SimilarityIndex(options);
        const model: Model = { holders: new Map(), clock: 0 };
        for (const operation of operations) {
          if ('add' in operation) {
            index.add(operation.add, operation.sketch);
            modelAdd(model, options.maxIdsPerValue, operation.add, operation.sketch);
          } else {
            expect(index.findBase(operation.find, operation.preferred)).toBe(
              modelFind(model, options.minShared, operation.find, operation.preferred),
            );
          }
          expect(index.size).toBe(model.holders.size);
        }
      }),
      { numRuns: 300 },
    );
  });
});
