import { describe, expect, it } from 'vitest';
import { fingerprintRows, TableFingerprint } from '../src/sources/postgres/fingerprint.ts';
import { seededBytes } from './helpers/data.ts';

const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyz';
/**
 * MurmurHash3_x86_128 with seed 0x5eedb0c5 of ALPHABET's first n bytes (every tail length, one
 * and two blocks), as SMHasher's MurmurHash3.cpp computes it, read as a little-endian number.
 */
const REFERENCE_HASHES: [number, string][] = [
  [0, '7d0183ca7d0183ca7d0183ca135b04b0'],
  [1, 'cf9d41afcf9d41afcf9d41af51173f42'],
  [2, '1206273e1206273e1206273e44dd0943'],
  [3, '2863723a2863723a2863723a1499f547'],
  [4, 'ac7d1cd1ac7d1cd1ac7d1cd106733bdb'],
  [5, 'ef57c7b5ef57c7b5423c5217115fdb38'],
  [6, '1926776819267768b309d2a9eea1f2f1'],
  [7, '281a5a55281a5a555b61ae45fec1afdf'],
  [8, '87ad5bc687ad5bc6e7a2289511ed08ed'],
  [9, '12d002d7e1e7af7d9d29a307e9e9637f'],
  [10, '0e888ca16b4436998ef981c0da073f58'],
  [11, '5d2507193f81d8b12e42d7a3ad63b128'],
  [12, '7061800bccc656b4c416ceac05deda3d'],
  [13, 'f61236d3d3419cb70d7b76b7ededc181'],
  [14, '8d1e879dc31688aab1ba1fce4ca4114e'],
  [15, 'c9ab7d5202d72b41bd04fa5d2b7de165'],
  [16, '2e929d89311fbf4eb9a0b2167b2c1787'],
  [17, '5fd004757e718a86d4c3aa465f1c41c2'],
  [31, 'b26839c076fc15bed986a638e5e11463'],
  [32, '677fe20c13f861971526c4f27556e9c6'],
  [33, '57df262613074c51a49ab474495adbe1'],
];

const text = (row: string): Buffer => Buffer.from(row, 'utf8');
/** One row's hash, as the digest of a table holding only that row. */
const rowHash = (row: Uint8Array): bigint => BigInt(`0x${fingerprintRows([row])}`);

describe('TableFingerprint', () => {
  const rows = Array.from({ length: 500 }, (_, i) => seededBytes(`row ${i}`, i % 300));

  it('digests the documented test vector', () => {
    expect(fingerprintRows(['', 'a', '1\tfoo\t2024-01-01'].map(text))).toBe(
      '20386e31fd4baca0226a0f2a99a8a05c',
    );
  });

  it("hashes a row as SMHasher's MurmurHash3_x86_128 does", () => {
    for (const [length, hash] of REFERENCE_HASHES) {
      expect(fingerprintRows([text(ALPHABET.slice(0, length))]), `length ${length}`).toBe(hash);
    }
    expect(fingerprintRows([seededBytes('long row', 100_003)])).toBe('d5ca0b14ef0f52fff2eb4da04bd7ea78');
  });

  it("is the sum modulo 2^128 of the rows' hashes", () => {
    let sum = 0n;
    for (const row of rows) sum += rowHash(row);
    const expected = (sum % 2n ** 128n).toString(16).padStart(32, '0');
    const fingerprint = new TableFingerprint();
    for (const row of rows) fingerprint.addRow(row);
    expect(fingerprint.digest()).toBe(expected);
    expect(fingerprint.rows).toBe(rows.length);
    expect(fingerprintRows(rows)).toBe(expected);
    fingerprint.addRow(rows[0]!);
    expect(fingerprint.digest()).toBe(fingerprintRows([...rows, rows[0]!]));
  });

  it('keeps the sum exact past the rows between carry settlements', () => {
    const row = text('42\tcarry');
    const times = 2 ** 21 + 3;
    const fingerprint = new TableFingerprint();
    for (let i = 0; i < times; i++) fingerprint.addRow(row);
    const expected = ((rowHash(row) * BigInt(times)) % 2n ** 128n).toString(16).padStart(32, '0');
    expect(fingerprint.digest()).toBe(expected);
    expect(fingerprint.rows).toBe(times);
  });

  it('ignores order and counts duplicates', () => {
    expect(fingerprintRows([...rows].reverse())).toBe(fingerprintRows(rows));
    expect(fingerprintRows([...rows, rows[0]!])).not.toBe(fingerprintRows(rows));
    expect(fingerprintRows([...rows, rows[0]!, rows[0]!])).not.toBe(fingerprintRows([...rows, rows[0]!]));
    expect(fingerprintRows([])).toBe('0'.repeat(32));
  });

  it('tells apart the empty row, prefixes and swapped columns', () => {
    const variants = ['', '1', '1\t', '1\tfoo', '1\tfo', '1\tfoo\t', 'foo\t1', '1\tfoo\\N', '1\t\\N'];
    const digests = new Set(variants.map((row) => fingerprintRows([text(row)])));
    expect(digests.size).toBe(variants.length);
    expect(fingerprintRows([text('')])).not.toBe(fingerprintRows([]));
  });

  it('changes when any single bit of a row flips', () => {
    const originals = [
      ...Array.from({ length: 70 }, (_, length) => seededBytes(`flip ${length}`, length)),
      text('12853334\tcustomer 12853334\t2024-01-01 00:00:00+00\t\\N'),
    ];
    for (const original of originals) {
      const seen = new Set([fingerprintRows([original])]);
      for (let bit = 0; bit < original.length * 8; bit++) {
        const flipped = Buffer.from(original);
        flipped[bit >> 3]! ^= 1 << (bit & 7);
        seen.add(fingerprintRows([flipped]));
      }
      expect(seen.size, `a row of ${original.length} bytes`).toBe(original.length * 8 + 1);
    }
  });

  it('shows no bias in the bits of hashes of rows with consecutive ids', () => {
    const count = 1 << 16;
    for (const row of [(id: number) => `${id}`, (id: number) => `${id}\tcustomer ${id}\t2024-01-01`]) {
      // Each hash as four 32-bit words, least significant first.
      const hashes = Array.from({ length: count }, (_, id) =>
        fingerprintRows([text(row(id))])
          .match(/.{8}/g)!
          .map((word) => parseInt(word, 16))
          .reverse(),
      );
      // Each bit is set in half the hashes, give or take five standard deviations.
      for (let bit = 0; bit < 128; bit++) {
        const ones = hashes.filter((words) => (words[bit >> 5]! >>> (bit & 31)) & 1).length;
        expect(Math.abs(ones - count / 2), `bit ${bit} of ${row(7)}`).toBeLessThan(5 * Math.sqrt(count / 4));
      }
      // The low 8 bits spread evenly over their 256 values: chi-square within six standard deviations.
      const buckets = new Array<number>(256).fill(0);
      for (const words of hashes) buckets[words[0]! & 255]!++;
      const expected = count / 256;
      const chiSquare = buckets.reduce((sum, seen) => sum + (seen - expected) ** 2 / expected, 0);
      expect(chiSquare).toBeLessThan(255 + 6 * Math.sqrt(2 * 255));
    }
  });
});
