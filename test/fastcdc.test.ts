import { describe, expect, it } from 'vitest';
import { Chunker, gearTable, validateChunkerParams, type ChunkerParams } from '../src/chunking/fastcdc.ts';
import fc from 'fast-check';
import { referenceChunks } from './helpers/chunker-reference.ts';
import { seededBytes } from './helpers/data.ts';

const params: ChunkerParams = { min: 2048, avg: 8192, max: 32768 };
const gear = gearTable(Buffer.from('strongbox test seed'));

/** Chunks `data` fed in pieces; chunks are copied, since the chunker's views last one call. */
function chunkAll(data: Uint8Array, pieceSize: number, chunkerParams = params): Buffer[] {
  const chunker = new Chunker(chunkerParams, gear);
  const chunks: Buffer[] = [];
  for (let at = 0; at < data.length; at += pieceSize) {
    for (const chunk of chunker.push(data.subarray(at, at + pieceSize))) chunks.push(Buffer.from(chunk.data));
  }
  const last = chunker.cut();
  if (last) chunks.push(Buffer.from(last.data));
  return chunks;
}

const sizes = (chunks: Uint8Array[]) => chunks.map((chunk) => chunk.length);

describe('FastCDC', () => {
  it('derives the gear table from its seed (vector in docs/FORMAT.md)', () => {
    expect([...gear.slice(0, 4)]).toEqual([495079924, 83845934, 387587001, 2075882037]);
  });

  it('cuts a fixed input at fixed points (vector in docs/FORMAT.md)', () => {
    const data = seededBytes('strongbox fastcdc vector', 1 << 20);
    expect(sizes(chunkAll(data, 1 << 20)).slice(0, 12)).toEqual([
      9216, 9706, 11390, 8563, 8721, 14232, 8035, 9257, 8998, 12337, 10092, 2110,
    ]);
    expect(chunkAll(data, 1 << 20)).toHaveLength(109);
  });

  it('reset makes a used chunker cut and sketch a new stream as a fresh one does', () => {
    const reused = new Chunker(params, gear);
    const first = seededBytes('first stream', 200_000);
    const second = seededBytes('second stream', 300_000);
    // A stream abandoned midway (a failed read) leaves a partial chunk behind, carried and hashed.
    reused.push(first.subarray(0, 12_345));
    reused.reset();
    for (const data of [first, second]) {
      const chunks: { data: Buffer; sketch: number[] }[] = [];
      for (let at = 0; at < data.length; at += 5000)
        for (const chunk of reused.push(data.subarray(at, at + 5000)))
          chunks.push({ data: Buffer.from(chunk.data), sketch: chunk.sketch });
      const last = reused.cut();
      if (last) chunks.push({ data: Buffer.from(last.data), sketch: last.sketch });
      const fresh = new Chunker(params, gear);
      const expected = [...fresh.push(data), fresh.cut()!].map((chunk) => ({
        data: Buffer.from(chunk.data),
        sketch: chunk.sketch,
      }));
      expect(chunks.length).toBeGreaterThan(10);
      expect(chunks).toEqual(expected);
      reused.reset();
    }
  });

  it('cuts and sketches as the plain definition does, whatever the pieces', () => {
    // Low-entropy stretches (runs, repeated rows) as well as random bytes, so that cut points
    // come early, late and at max; and chunker sizes small enough for every path to be taken.
    const pieceOf = fc.oneof(
      fc.uint8Array({ minLength: 1, maxLength: 40_000 }),
      fc
        .record({ byte: fc.integer({ min: 0, max: 255 }), length: fc.integer({ min: 1, max: 70_000 }) })
        .map(({ byte, length }) => new Uint8Array(length).fill(byte)),
      fc.string({ minLength: 1, maxLength: 60 }).map((row) => Buffer.from(`${row}\n`.repeat(500))),
    );
    const paramsOf = fc.constantFrom<ChunkerParams>(
      params,
      { min: 64, avg: 256, max: 1024 },
      { min: 4096, avg: 65536, max: 1 << 20 },
    );
    fc.assert(
      fc.property(
        fc.array(pieceOf, { minLength: 1, maxLength: 12 }),
        paramsOf,
        fc.integer({ min: 1, max: 1 << 21 }),
        (parts, chunkerParams, pieceSize) => {
          const data = Buffer.concat(parts);
          const chunker = new Chunker(chunkerParams, gear);
          const chunks: { length: number; sketch: number[] }[] = [];
          for (let at = 0; at < data.length; at += pieceSize) {
            for (const { data: chunk, sketch } of chunker.push(data.subarray(at, at + pieceSize)))
              chunks.push({ length: chunk.length, sketch });
          }
          const last = chunker.cut();
          if (last) chunks.push({ length: last.data.length, sketch: last.sketch });
          expect(chunks).toEqual(referenceChunks(data, chunkerParams, gear));
        },
      ),
      { numRuns: 60 },
    );
  });

  it('finds the same cut points however the input is split', () => {
    const data = seededBytes('split', 300_000);
    const whole = sizes(chunkAll(data, data.length));
    for (const piece of [1, 7, 1000, 4096, 65536]) expect(sizes(chunkAll(data, piece))).toEqual(whole);
  });

  it('returns chunks that concatenate to the input and respect min and max', () => {
    const data = seededBytes('bounds', 500_000);
    const chunks = chunkAll(data, 10_000);
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
    for (const chunk of chunks.slice(0, -1)) {
      expect(chunk.length).toBeGreaterThanOrEqual(params.min);
      expect(chunk.length).toBeLessThanOrEqual(params.max);
    }
  });

  it('cuts at max on input with no cut points (all zeros)', () => {
    expect(sizes(chunkAll(Buffer.alloc(100_000), 4096))).toEqual([32768, 32768, 32768, 1696]);
  });

  it('keeps chunk boundaries after an insertion (content-defined)', () => {
    const data = seededBytes('shift', 400_000);
    const shifted = Buffer.concat([
      data.subarray(0, 1000),
      Buffer.from('inserted bytes'),
      data.subarray(1000),
    ]);
    const before = new Set(chunkAll(data, 8192).map((chunk) => Buffer.from(chunk).toString('hex')));
    const after = chunkAll(shifted, 8192);
    const shared = after.filter((chunk) => before.has(Buffer.from(chunk).toString('hex'))).length;
    expect(shared).toBeGreaterThanOrEqual(after.length - 2);
  });

  it('averages near the configured size', () => {
    const chunks = chunkAll(seededBytes('average', 4 << 20), 1 << 20);
    const mean = (4 << 20) / chunks.length;
    expect(mean).toBeGreaterThan(params.avg * 0.8);
    expect(mean).toBeLessThan(params.avg * 1.5);
  });

  it('keeps no reference to its input: a reused read buffer gives the same chunks', () => {
    const data = seededBytes('reuse', 400_000);
    const reused = new Uint8Array(5000);
    const chunker = new Chunker(params, gear);
    const chunks: Buffer[] = [];
    for (let at = 0; at < data.length; at += reused.length) {
      const piece = data.subarray(at, at + reused.length);
      reused.set(piece);
      for (const chunk of chunker.push(reused.subarray(0, piece.length)))
        chunks.push(Buffer.from(chunk.data));
      reused.fill(0xee);
    }
    chunks.push(Buffer.from(chunker.cut()!.data));
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
  });

  it('ends a chunk where the source forces a boundary', () => {
    const chunker = new Chunker(params, gear);
    const first = seededBytes('a', 5000);
    expect(chunker.push(first)).toEqual([]);
    const forced = chunker.cut();
    expect(Buffer.from(forced!.data).equals(first)).toBe(true);
    expect(chunker.cut()).toBeUndefined();
    // After a forced cut the next chunk starts fresh: same cuts as chunking the rest alone.
    const rest = seededBytes('b', 200_000);
    const continued = [...chunker.push(rest).map((chunk) => chunk.data.length), chunker.cut()!.data.length];
    expect(continued).toEqual(sizes(chunkAll(rest, rest.length)));
  });

  it('rejects impossible parameters', () => {
    expect(() => validateChunkerParams({ min: 1000, avg: 3000, max: 8000 })).toThrow(/power of two/);
    expect(() => validateChunkerParams({ min: 9000, avg: 8192, max: 32768 })).toThrow(/min < avg < max/);
  });
});
