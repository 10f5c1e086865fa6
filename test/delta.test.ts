import { createHash } from 'node:crypto';
import { describe, it, expect } from 'vitest';
import { seededBytes } from './helpers/data.ts';
import { decodeDelta, encodeDelta, MAX_DELTA_TARGET_LENGTH } from '../src/compression/delta.ts';

/** Deterministic integers in [0, n) for choosing edit positions. */
function picker(seed: string): (n: number) => number {
  let counter = 0;
  return (n) => createHash('sha256').update(`${seed}/${counter++}`).digest().readUInt32LE(0) % n;
}

/** pg_dump-like rows: repetitive structure with pseudo-random fields. */
function rows(seed: string, bytes: number): Buffer {
  const parts: string[] = [];
  let length = 0;
  for (let id = 0; length < bytes; id++) {
    const h = createHash('sha256').update(`${seed}/${id}`).digest();
    const line = `${id}\tuser${id}@example.com\t${h.toString('hex', 0, 8)}\t2024-02-18 01:${h[8]! % 60}:${h[9]! % 60}+00\t{"plan": "free", "tags": ["${h.toString('hex', 10, 26)}"], "score": ${h[27]}}\n`;
    parts.push(line);
    length += line.length;
  }
  return Buffer.from(parts.join('')).subarray(0, bytes);
}

/** Applies `count` scattered edits: inserts, deletes and same-length replacements. */
function edit(base: Buffer, seed: string, count: number): Buffer {
  const pick = picker(seed);
  let out = Buffer.from(base);
  for (let i = 0; i < count; i++) {
    const at = pick(out.length + 1);
    const length = 1 + pick(200);
    const fresh = seededBytes(`${seed}/edit/${i}`, length);
    if (i % 3 === 0) out = Buffer.concat([out.subarray(0, at), fresh, out.subarray(at)]);
    else if (i % 3 === 1)
      out = Buffer.concat([out.subarray(0, at), out.subarray(Math.min(out.length, at + length))]);
    else
      out = Buffer.concat([
        out.subarray(0, at),
        fresh.subarray(0, Math.max(0, Math.min(length, out.length - at))),
        out.subarray(at + length),
      ]);
  }
  return out;
}

function roundTrip(base: Uint8Array, target: Uint8Array): Buffer {
  const delta = encodeDelta(base, target);
  const decoded = decodeDelta(base, delta);
  expect(Buffer.compare(decoded, target)).toBe(0);
  return delta;
}

/** Unsigned LEB128, for building deltas by hand. */
function varint(value: number): number[] {
  const out: number[] = [];
  while (value >= 0x80) {
    out.push((value & 0x7f) | 0x80);
    value = Math.floor(value / 128);
  }
  out.push(value);
  return out;
}

const copy = (length: number, offset: number) => [
  ...varint(length * 2 + 1),
  ...varint(offset >= 0 ? offset * 2 : -offset * 2 - 1),
];
const insert = (bytes: number[]) => [...varint(bytes.length * 2), ...bytes];
const header = (baseLength: number, targetLength: number) => [
  1,
  ...varint(baseLength),
  ...varint(targetLength),
];

describe('encodeDelta / decodeDelta round trips', () => {
  const base = rows('base', 65536);

  it('handles empty inputs', () => {
    expect([...roundTrip(new Uint8Array(0), new Uint8Array(0))]).toEqual([1, 0, 0]);
    roundTrip(new Uint8Array(0), seededBytes('t', 1000));
    expect(roundTrip(base, new Uint8Array(0)).length).toBeLessThanOrEqual(5);
  });

  it('handles inputs shorter than the hash window', () => {
    roundTrip(Buffer.from('abc'), Buffer.from('abc'));
    roundTrip(Buffer.from('abc'), Buffer.from('abcd'));
    roundTrip(seededBytes('b', 5), seededBytes('t', 3));
    roundTrip(base, base.subarray(100, 105));
  });

  it('encodes identical inputs as one copy', () => {
    const delta = roundTrip(base, base);
    expect([...delta]).toEqual([...header(65536, 65536), ...copy(65536, 0)]);
  });

  it('emits the documented instructions for an insertion', () => {
    const b = seededBytes('doc', 100);
    b[50] = 0; // differs from the inserted 'X' and 'Y'
    b[51] = 0;
    const target = Buffer.concat([b.subarray(0, 50), Buffer.from('XY'), b.subarray(50)]);
    const delta = roundTrip(b, target);
    expect([...delta]).toEqual([
      ...header(100, 102),
      ...copy(50, 0),
      ...insert([0x58, 0x59]),
      ...copy(50, 0),
    ]);
  });

  it('is small for scattered inserts, deletes and replacements', () => {
    const target = edit(base, 'scattered', 30);
    const delta = roundTrip(base, target);
    // 30 edits of at most 200 bytes: about 2 KiB of new bytes plus a few bytes per instruction.
    expect(delta.length).toBeLessThan(5000);
  });

  it('finds rows inserted every ~6 KiB, like a day of writes to a table', () => {
    const parts: Buffer[] = [];
    for (let at = 0; at < base.length; at += 6400) {
      parts.push(base.subarray(at, at + 6400), seededBytes(`row${at}`, 164));
    }
    const target = Buffer.concat(parts);
    const delta = roundTrip(base, target);
    expect(delta.length).toBeLessThan(11 * 164 + 11 * 10);
  });

  it('handles moved and repeated blocks (negative copy offsets)', () => {
    const target = Buffer.concat([
      base.subarray(40000, 50000),
      base.subarray(0, 30000),
      base.subarray(40000, 45000),
      base.subarray(60000),
    ]);
    const delta = roundTrip(base, target);
    expect(delta.length).toBeLessThan(40);
  });

  it('falls back to inserts for unrelated data', () => {
    const target = seededBytes('unrelated', 65536);
    const delta = roundTrip(base, target);
    expect(delta.length).toBeLessThan(target.length + 16);
    roundTrip(seededBytes('a', 65536), seededBytes('b', 70000));
  });

  it('round-trips random edits of random and structured data', () => {
    for (let i = 0; i < 20; i++) {
      const b = i % 2 === 0 ? seededBytes(`base${i}`, 1000 + i * 3001) : rows(`rows${i}`, 1000 + i * 3001);
      roundTrip(b, edit(b, `e${i}`, i));
    }
  });

  it('round-trips a 256 KiB chunk', () => {
    const big = rows('big', 262144);
    roundTrip(big, edit(big, 'big', 50));
  });
});

describe('decodeDelta rejects malformed input', () => {
  const base = seededBytes('base', 100);
  const cases: [string, number[]][] = [
    ['empty', []],
    ['unknown version', [2, 100, 0]],
    ['wrong base length', header(99, 0)],
    ['truncated base length', [1, 0x80]],
    ['truncated target length', [1, 100]],
    ['overlong varint', [1, 0xe4, 0x00, 0]],
    ['varint longer than 5 bytes', [1, 100, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01]],
    ['varint above 2^32 - 1', [1, 100, 0xff, 0xff, 0xff, 0xff, 0x1f]],
    ['target too large', [1, 100, ...varint(MAX_DELTA_TARGET_LENGTH + 1)]],
    ['truncated instruction', [...header(100, 10), 0x80]],
    ['zero-length insert', [...header(100, 0), 0]],
    ['zero-length copy', [...header(100, 0), 1, 0]],
    ['truncated insert', [...header(100, 5), ...varint(10), 1, 2]],
    ['copy without offset', [...header(100, 5), ...varint(11)]],
    ['copy before the base', [...header(100, 5), ...copy(5, -1)]],
    ['copy past the base', [...header(100, 5), ...copy(5, 96)]],
    ['relative copy past the base', [...header(100, 10), ...copy(5, 90), ...copy(5, 1)]],
    ['instructions overrun the target', [...header(100, 4), ...copy(5, 0)]],
    ['instructions end early', [...header(100, 10), ...copy(5, 0)]],
    ['bytes after the last instruction', [...header(100, 5), ...copy(5, 0), 0x80]],
  ];
  for (const [name, bytes] of cases) {
    it(name, () => {
      expect(() => decodeDelta(base, Uint8Array.from(bytes))).toThrow(/malformed delta/);
    });
  }

  it('accepts the well-formed variants of those cases', () => {
    expect([...decodeDelta(base, Uint8Array.from([...header(100, 5), ...copy(5, 95)]))]).toEqual([
      ...base.subarray(95),
    ]);
    expect([
      ...decodeDelta(base, Uint8Array.from([...header(100, 7), ...copy(5, 90), ...copy(2, -5)])),
    ]).toEqual([...base.subarray(90, 95), ...base.subarray(90, 92)]);
    expect([...decodeDelta(base, Uint8Array.from([...header(100, 2), ...insert([7, 8])]))]).toEqual([7, 8]);
  });

  it('never returns wrong-length output or throws anything but Error for corrupted deltas', () => {
    const b = rows('fuzz', 4000);
    const target = edit(b, 'fuzz', 6);
    const good = encodeDelta(b, target);
    const pick = picker('mutations');
    let rejected = 0;
    for (let i = 0; i < 500; i++) {
      const bad = Buffer.from(good);
      const flips = 1 + pick(3);
      for (let f = 0; f < flips; f++) bad[pick(bad.length)] = pick(256);
      const cut = i % 5 === 0 ? bad.subarray(0, pick(bad.length)) : bad;
      try {
        expect(decodeDelta(b, cut).length).toBe(target.length);
      } catch (error) {
        expect(error).toBeInstanceOf(Error);
        if (!(error instanceof Error) || !/malformed delta/.test(error.message)) throw error;
        rejected++;
      }
    }
    expect(rejected).toBeGreaterThan(100);
  });
});
