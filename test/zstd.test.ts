import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { DecompressedTooLarge, zstdCompress, zstdDecompress } from '../src/compression/zstd.ts';
import { seededBytes } from './helpers/data.ts';

const zstdNapi = createRequire(import.meta.url)('zstd-napi') as {
  compress(data: Uint8Array, params: { compressionLevel: number; hashLog?: number }): Buffer;
};

/** Random bytes and runs, so that every size compresses some but not all. */
function sample(length: number): Buffer {
  const data = seededBytes(`zstd ${length}`, length);
  for (let at = 0; at < length; at += 4096) data.fill(at & 0xff, at, Math.min(length, at + 2048));
  return data;
}

describe('zstd', () => {
  it('writes the frames zstd-napi writes with the same parameters, whatever the size, one call after another', () => {
    for (const level of [1, 3, 9])
      for (const length of [0, 100, 128 * 1024, 1024 * 1024 + 1, 3 * 1024 * 1024]) {
        const data = sample(length);
        const expected = zstdNapi.compress(
          data,
          level <= 1 ? { compressionLevel: level, hashLog: 12 } : { compressionLevel: level },
        );
        const compressed = zstdCompress(data, level);
        expect(compressed.equals(expected)).toBe(true);
        expect(zstdDecompress(compressed).equals(data)).toBe(true);
      }
  });

  it('keeps each result its own: a later call does not change an earlier result', () => {
    const first = zstdCompress(sample(200_000), 3);
    const copy = Buffer.from(first);
    zstdCompress(sample(300_000), 3);
    expect(first.equals(copy)).toBe(true);
  });

  it('refuses output past its limit, also when the frame declares its size', () => {
    const data = sample(128 * 1024);
    const compressed = zstdCompress(data, 3);
    expect(zstdDecompress(compressed, data.length).equals(data)).toBe(true);
    expect(() => zstdDecompress(compressed, data.length - 1)).toThrow(DecompressedTooLarge);
    expect(() => zstdDecompress(compressed.subarray(0, compressed.length - 10))).toThrow();
  });
});
