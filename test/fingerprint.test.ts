import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { fingerprintRows, TableFingerprint } from '../src/postgres/logical/fingerprint.ts';
import { seededBytes } from './helpers/data.ts';
import { referenceDigest, referenceRowHash } from './helpers/murmur-reference.ts';

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
/** Seeded bytes that can be a row of COPY text: no "\n", no NUL. */
const copyRow = (seed: string, length: number): Buffer => {
  const row = seededBytes(seed, length);
  for (let at = 0; at < row.length; at++) if (row[at] === 0x0a || row[at] === 0) row[at] = 0x20;
  return row;
};
/** Rows as COPY text: each followed by "\n". */
const copyText = (rows: readonly Uint8Array[]): Buffer =>
  Buffer.concat(rows.flatMap((row) => [row, Buffer.of(0x0a)]));

describe('TableFingerprint', () => {
  const rows = Array.from({ length: 500 }, (_, i) => copyRow(`row ${i}`, i % 300));

  it('digests the documented test vector', () => {
    expect(fingerprintRows(['', 'a', '1\tfoo\t2024-01-01'].map(text))).toBe(
      '20386e31fd4baca0226a0f2a99a8a05c',
    );
  });

  it("hashes a row as SMHasher's MurmurHash3_x86_128 does", () => {
    for (const [length, hash] of REFERENCE_HASHES) {
      const row = text(ALPHABET.slice(0, length));
      expect(referenceRowHash(row).toString(16).padStart(32, '0'), `reference, length ${length}`).toBe(hash);
      expect(fingerprintRows([row]), `length ${length}`).toBe(hash);
    }
    const long = copyRow('long row', 1_000_003);
    expect(fingerprintRows([long])).toBe(referenceDigest([long]));
  });

  it("is the sum modulo 2^128 of the rows' hashes", () => {
    const expected = referenceDigest(rows);
    const fingerprint = new TableFingerprint();
    for (const row of rows) fingerprint.addRow(row);
    expect(fingerprint.digest()).toBe(expected);
    expect(fingerprint.rows).toBe(rows.length);
    expect(fingerprintRows(rows)).toBe(expected);
    fingerprint.addRow(rows[0]!);
    expect(fingerprint.digest()).toBe(referenceDigest([...rows, rows[0]!]));
  });

  it('carries between the words of the sum', () => {
    const row = text('42\tcarry');
    const times = 2 ** 21 + 3;
    const fingerprint = new TableFingerprint();
    fingerprint.push(copyText(Array.from({ length: times }, () => row)));
    const expected = ((referenceRowHash(row) * BigInt(times)) % 2n ** 128n).toString(16).padStart(32, '0');
    expect(fingerprint.digest()).toBe(expected);
    expect(fingerprint.rows).toBe(times);
  });

  it('reads COPY text pushed in pieces split anywhere, rows longer than a piece included', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 0, max: 700_000 }), { minLength: 1, maxLength: 6 }),
        fc.array(fc.integer({ min: 1, max: 600_000 }), { minLength: 1, maxLength: 8 }),
        fc.integer(),
        (lengths, pieceLengths, seed) => {
          const tableRows = lengths.map((length, i) =>
            copyRow(`${seed} ${i}`, length % 3 === 0 ? length % 40 : length),
          );
          const all = copyText(tableRows);
          const fingerprint = new TableFingerprint();
          for (let at = 0, piece = 0; at < all.length; piece++) {
            const next = Math.min(all.length, at + pieceLengths[piece % pieceLengths.length]!);
            expect(fingerprint.push(all.subarray(at, next))).toBeUndefined();
            at = next;
          }
          expect(fingerprint.insideRow).toBe(false);
          expect(fingerprint.rows).toBe(tableRows.length);
          expect(fingerprint.digest()).toBe(referenceDigest(tableRows));
        },
      ),
      { numRuns: 40 },
    );
    const fingerprint = new TableFingerprint();
    fingerprint.push(text('1\tab'));
    expect(fingerprint.insideRow).toBe(true);
    expect(fingerprint.rows).toBe(0);
    fingerprint.push(text('c\n'));
    expect(fingerprint.insideRow).toBe(false);
    expect(fingerprint.digest()).toBe(fingerprintRows([text('1\tabc')]));
  });

  it('keeps fingerprints fed in turns apart', () => {
    const first = new TableFingerprint();
    const second = new TableFingerprint();
    const all = copyText(rows);
    for (let at = 0; at < all.length; at += 777) {
      first.push(all.subarray(at, at + 777));
      second.push(all.subarray(at, at + 777).reverse());
    }
    expect(first.digest()).toBe(referenceDigest(rows));
    expect(second.digest()).not.toBe(first.digest());
  });

  it('ends an archive\'s rows at the "\\." line, then allows only empty lines', () => {
    const archive = new TableFingerprint({ archive: true });
    expect(archive.push(text('1\ta\n2\tb\n\\.\n\n\n'))).toBeUndefined();
    expect(archive.terminated).toBe(true);
    expect(archive.rows).toBe(2);
    expect(archive.digest()).toBe(fingerprintRows([text('1\ta'), text('2\tb')]));
    expect(archive.push(text('\nx'))).toEqual({ status: 'after-terminator', at: 1 });

    // Elsewhere "\." is a row like any other, which COPY never writes: a backslash is doubled.
    const plain = new TableFingerprint();
    plain.push(text('\\.\n3\tc\n'));
    expect(plain.rows).toBe(2);
    expect(plain.terminated).toBe(false);
  });

  it('stops at a NUL byte, which COPY text never holds', () => {
    const fingerprint = new TableFingerprint({ archive: true });
    const bytes = Buffer.alloc(300_000, 0x61);
    bytes[299_000] = 0;
    expect(fingerprint.push(bytes)).toEqual({ status: 'nul', at: 299_000 });
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
      ...Array.from({ length: 70 }, (_, length) => copyRow(`flip ${length}`, length)),
      text('12853334\tcustomer 12853334\t2024-01-01 00:00:00+00\t\\N'),
    ];
    for (const original of originals) {
      const seen = new Set([fingerprintRows([original])]);
      let variants = 1;
      for (let bit = 0; bit < original.length * 8; bit++) {
        const flipped = Buffer.from(original);
        flipped[bit >> 3]! ^= 1 << (bit & 7);
        // A flip that makes a "\n" or a NUL makes something other than one row.
        if (flipped[bit >> 3] === 0x0a || flipped[bit >> 3] === 0) continue;
        seen.add(fingerprintRows([flipped]));
        variants++;
      }
      expect(seen.size, `a row of ${original.length} bytes`).toBe(variants);
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
