import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FixedCutter } from '../src/chunking/fixed.ts';

/**
 * The cutter against its model: the stream cut at every multiple of the size (and at each forced
 * cut, after which counting starts again), whatever pieces the stream arrives in. Each input
 * piece is overwritten once pushed, as a source reusing its read buffer does, so a chunk that
 * still pointed into an earlier piece after the next call would show wrong bytes.
 */
describe('FixedCutter', () => {
  it('cuts every `size` bytes and where told, whatever the pieces, and its chunks outlive the input they came from', () => {
    const step = fc.oneof(
      fc.record({ bytes: fc.uint8Array({ minLength: 0, maxLength: 700 }) }),
      fc.constant({ cut: true as const }),
    );
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 300 }), fc.array(step, { maxLength: 40 }), (size, steps) => {
        const cutter = new FixedCutter(size);
        const chunks: Buffer[] = [];
        const expected: Buffer[] = [];
        let current: number[] = [];
        const expectCut = () => {
          if (current.length > 0) expected.push(Buffer.from(current));
          current = [];
        };
        for (const next of steps) {
          if ('cut' in next) {
            const last = cutter.cut();
            if (last) chunks.push(Buffer.from(last.data));
            expectCut();
            continue;
          }
          const piece = Buffer.from(next.bytes);
          const made = cutter.push(piece);
          // Read only after the whole call, as the backup does: every chunk must still be intact.
          for (const chunk of made) chunks.push(Buffer.from(chunk.data));
          piece.fill(0xee);
          for (const byte of next.bytes) {
            current.push(byte);
            if (current.length === size) expectCut();
          }
        }
        const last = cutter.cut();
        if (last) chunks.push(Buffer.from(last.data));
        expectCut();
        expect(chunks).toEqual(expected);
      }),
      { numRuns: 300 },
    );
  });

  it('hands out the whole chunks inside a piece as views of it, without a copy', () => {
    const cutter = new FixedCutter(4);
    const piece = Buffer.from('abcdefghij');
    const chunks = cutter.push(piece);
    expect(chunks.map((chunk) => Buffer.from(chunk.data).toString())).toEqual(['abcd', 'efgh']);
    for (const chunk of chunks) expect(chunk.data.buffer).toBe(piece.buffer);
    expect(chunks.every((chunk) => chunk.sketch.length === 0)).toBe(true);
    expect(Buffer.from(cutter.cut()!.data).toString()).toBe('ij');
  });
});
