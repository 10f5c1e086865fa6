import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  fitBytes,
  keptName,
  markText,
  MAX_NAME_BYTES,
  readMark,
  restoreStamp,
  SCRATCH_PREFIX,
  scratchName,
} from '../src/postgres/restore/restore-names.ts';

const bytes = (text: string) => Buffer.byteLength(text);
/** Database names up to 63 bytes, of any characters PostgreSQL takes in a quoted identifier. */
const databaseName = fc
  .string({ unit: 'grapheme', minLength: 1, maxLength: 63 })
  .filter((name) => !name.includes('\0') && bytes(name) <= MAX_NAME_BYTES);

describe('restore names', () => {
  it('cuts text to a number of bytes, never inside a character', () => {
    expect(fitBytes('數據庫', 7)).toBe('數據');
    expect(fitBytes('é'.repeat(10), 5)).toBe('éé');
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), fc.nat(80), (text, limit) => {
        const cut = fitBytes(text, limit);
        expect(bytes(cut)).toBeLessThanOrEqual(limit);
        expect(text.startsWith(cut)).toBe(true);
        expect(Buffer.from(cut).toString()).toBe(cut);
      }),
    );
  });

  it('makes names that fit NAMEDATALEN, start as promised and differ from try to try', () => {
    const stamp = restoreStamp(new Date('2026-12-04T16:05:22.123Z'));
    expect(stamp).toBe('20261204_160522');
    expect(scratchName('shop', stamp)).toBe('strongbox_restore_shop_20261204_160522');
    expect(scratchName('shop', stamp, 1)).toBe('strongbox_restore_shop_20261204_160522_2');
    expect(keptName('shop', stamp)).toBe('shop_before_20261204_160522');
    fc.assert(
      fc.property(databaseName, fc.nat(98), (target, attempt) => {
        const names = [0, attempt, attempt + 1].flatMap((n) => [
          scratchName(target, stamp, n),
          keptName(target, stamp, n),
        ]);
        for (const name of names) expect(bytes(name)).toBeLessThanOrEqual(MAX_NAME_BYTES);
        expect(new Set(names).size).toBe(attempt === 0 ? 4 : 6);
        expect(scratchName(target, stamp, attempt).startsWith(SCRATCH_PREFIX)).toBe(true);
        expect(keptName(target, stamp, attempt)).not.toBe(target);
        expect(keptName(target, stamp, attempt).startsWith(SCRATCH_PREFIX)).toBe(
          target.startsWith(SCRATCH_PREFIX),
        );
      }),
    );
  });

  it('reads back only the marks it wrote', () => {
    const mark = { kind: 'scratch', target: 'shop "main"' } as const;
    expect(readMark(markText(mark))).toEqual(mark);
    expect(readMark(markText({ kind: 'replaced', target: 'é' }))).toEqual({ kind: 'replaced', target: 'é' });
    expect(readMark(null)).toBeUndefined();
    expect(readMark('production, do not touch')).toBeUndefined();
    expect(readMark('{"strongbox": "scratch"}')).toBeUndefined();
    expect(readMark('{"strongbox":"other","target":"x"}')).toBeUndefined();
    expect(readMark('{"strongbox":broken')).toBeUndefined();
  });
});
