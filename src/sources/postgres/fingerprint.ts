/** The seed of every row's hash: not 0, under which the empty row would hash to 0 and add nothing. */
const SEED = 0x5eedb0c5;
const C1 = 0x239b961b;
const C2 = 0xab0e9789;
const C3 = 0x38b34ae5;
const C4 = 0xa1e38b93;
/** Which bytes of a tail word are the row's, by how many of them are (0 to 4). */
const TAIL_MASKS = new Int32Array([0, 0xff, 0xffff, 0xffffff, -1]);
const LIMBS = 4;
/** A limb below 2^32 after settling stays exact in a double (below 2^53) for 2^20 more rows. */
const ROWS_BETWEEN_CARRIES = 2 ** 20;

/**
 * A table's fingerprint: its row count and an order-independent hash of its rows, so a restore
 * can be checked against the backup table by table, whatever order the rows come back in.
 *
 * A row is one line of the table's COPY text output without its "\n": what ArchiveReader hands
 * out for a TABLE DATA block. The restore side computes the same thing from the database by
 * running the TOC entry's copyStatement with "FROM stdin" turned into "TO STDOUT" (the same
 * columns in the same order), in a session set up as pg_dump's: client_encoding the database's
 * encoding, DateStyle ISO, IntervalStyle postgres, extra_float_digits 3, and the same TimeZone,
 * since timestamptz text depends on it; it splits the output at each "\n" (COPY escapes the
 * newlines inside values, so every "\n" ends a row) and feeds each line, without the "\n".
 *
 * The hash is the sum, modulo 2^128, of each row's MurmurHash3_x86_128 (Austin Appleby's, as in
 * SMHasher's MurmurHash3.cpp) with seed 0x5eedb0c5, its 16 output bytes (h1, h2, h3, h4 as
 * little-endian 32-bit words) read as one little-endian number, h1 + h2·2^32 + h3·2^64 + h4·2^96;
 * the digest is that sum as 32 lowercase hexadecimal digits, most significant first. The rows
 * "", "a" and "1\tfoo\t2024-01-01" (UTF-8) digest to 20386e31fd4baca0226a0f2a99a8a05c; no rows
 * to 32 zeros.
 *
 * Addition ignores order, and unlike XOR counts a row present twice twice. Each step of the hash
 * is a bijection of its 128-bit state, so two rows of one length that differ within one 16-byte
 * block (a changed byte or bit) never hash alike; the length enters the hash too, so "" adds
 * something. Other accidental differences (lost, duplicated or changed rows, swapped columns, a
 * row cut short) go unnoticed with a chance near 2^-128; less for a table of rows under 9 bytes,
 * whose hashes repeat words (h3 = h4, and h2 too up to 4 bytes), down to about 2^-64 when every
 * row is 4 bytes or shorter. It does not resist rows crafted to collide (MurmurHash3 has
 * seed-independent collisions, and sums of hashes fall to generalized birthday attacks), which
 * is not what it guards against: a restore that lost or changed rows.
 *
 * Not a cryptographic hash, because SHA-256 costs 300 ns a call in Node, which made fingerprinting
 * slower than parsing the dump; this takes about 45 ns for a typical 64-byte row. The x86 variant,
 * because it needs only 32-bit multiplications (Math.imul) where the x64 one needs 64-bit ones.
 * The sum is kept in four 32-bit limbs held in doubles, whose carries are settled only now and
 * then.
 */
export class TableFingerprint {
  private count = 0;
  private rowsUntilCarries = ROWS_BETWEEN_CARRIES;
  /** The sum's 32-bit limbs, least significant first. */
  private readonly limbs = new Float64Array(LIMBS);

  /**
   * Hashes the row in place, spelled out: as a function of its own, too big for V8 to inline, or
   * split into helpers past V8's inlining budget, it costs a fifth to four fifths more per row.
   */
  addRow(row: Uint8Array): void {
    const length = row.length;
    const blocksEnd = length & ~15;
    let h1 = SEED;
    let h2 = h1;
    let h3 = h1;
    let h4 = h1;
    let at = 0;
    for (; at < blocksEnd; at += 16) {
      let k1 = row[at]! | (row[at + 1]! << 8) | (row[at + 2]! << 16) | (row[at + 3]! << 24);
      let k2 = row[at + 4]! | (row[at + 5]! << 8) | (row[at + 6]! << 16) | (row[at + 7]! << 24);
      let k3 = row[at + 8]! | (row[at + 9]! << 8) | (row[at + 10]! << 16) | (row[at + 11]! << 24);
      let k4 = row[at + 12]! | (row[at + 13]! << 8) | (row[at + 14]! << 16) | (row[at + 15]! << 24);
      k1 = Math.imul(k1, C1);
      k1 = (k1 << 15) | (k1 >>> 17);
      h1 ^= Math.imul(k1, C2);
      h1 = (h1 << 19) | (h1 >>> 13);
      h1 = (Math.imul(h1 + h2, 5) + 0x561ccd1b) | 0;
      k2 = Math.imul(k2, C2);
      k2 = (k2 << 16) | (k2 >>> 16);
      h2 ^= Math.imul(k2, C3);
      h2 = (h2 << 17) | (h2 >>> 15);
      h2 = (Math.imul(h2 + h3, 5) + 0x0bcaa747) | 0;
      k3 = Math.imul(k3, C3);
      k3 = (k3 << 17) | (k3 >>> 15);
      h3 ^= Math.imul(k3, C4);
      h3 = (h3 << 15) | (h3 >>> 17);
      h3 = (Math.imul(h3 + h4, 5) + 0x96cd1c35) | 0;
      k4 = Math.imul(k4, C4);
      k4 = (k4 << 18) | (k4 >>> 14);
      h4 ^= Math.imul(k4, C1);
      h4 = (h4 << 13) | (h4 >>> 19);
      h4 = (Math.imul(h4 + h1, 5) + 0x32ac3b17) | 0;
    }
    if (at < length) {
      // The reference mixes in only the tail's words that hold a byte, but a zero word mixes in as
      // nothing, so all four are, sparing a branch per word.
      const last = length - 1;
      let k1 = tailWord(row, at, last);
      let k2 = tailWord(row, at + 4, last);
      let k3 = tailWord(row, at + 8, last);
      let k4 = tailWord(row, at + 12, last);
      k1 = Math.imul(k1, C1);
      k1 = (k1 << 15) | (k1 >>> 17);
      h1 ^= Math.imul(k1, C2);
      k2 = Math.imul(k2, C2);
      k2 = (k2 << 16) | (k2 >>> 16);
      h2 ^= Math.imul(k2, C3);
      k3 = Math.imul(k3, C3);
      k3 = (k3 << 17) | (k3 >>> 15);
      h3 ^= Math.imul(k3, C4);
      k4 = Math.imul(k4, C4);
      k4 = (k4 << 18) | (k4 >>> 14);
      h4 ^= Math.imul(k4, C1);
    }
    h1 ^= length;
    h2 ^= length;
    h3 ^= length;
    h4 ^= length;
    h1 = (h1 + h2 + h3 + h4) | 0;
    h2 = (h2 + h1) | 0;
    h3 = (h3 + h1) | 0;
    h4 = (h4 + h1) | 0;
    h1 = fmix32(h1);
    h2 = fmix32(h2);
    h3 = fmix32(h3);
    h4 = fmix32(h4);
    h1 = (h1 + h2 + h3 + h4) | 0;
    const limbs = this.limbs;
    limbs[0] = limbs[0]! + (h1 >>> 0);
    limbs[1] = limbs[1]! + ((h2 + h1) >>> 0);
    limbs[2] = limbs[2]! + ((h3 + h1) >>> 0);
    limbs[3] = limbs[3]! + ((h4 + h1) >>> 0);
    this.count++;
    if (--this.rowsUntilCarries === 0) this.settleCarries();
  }

  get rows(): number {
    return this.count;
  }

  /** The sum as 32 hexadecimal digits. */
  digest(): string {
    this.settleCarries();
    let hex = '';
    for (let limb = LIMBS - 1; limb >= 0; limb--) hex += this.limbs[limb]!.toString(16).padStart(8, '0');
    return hex;
  }

  /** Carries each limb's overflow into the next more significant one; the top one's is dropped. */
  private settleCarries(): void {
    this.rowsUntilCarries = ROWS_BETWEEN_CARRIES;
    let carry = 0;
    for (let limb = 0; limb < LIMBS; limb++) {
      const value = this.limbs[limb]! + carry;
      carry = Math.floor(value / 2 ** 32);
      this.limbs[limb] = value - carry * 2 ** 32;
    }
  }
}

/** The digest of TableFingerprint over these rows, for a side that has them all at hand. */
export function fingerprintRows(rows: Iterable<Uint8Array>): string {
  const fingerprint = new TableFingerprint();
  for (const row of rows) fingerprint.addRow(row);
  return fingerprint.digest();
}

/**
 * The little-endian word of bytes[from, from + 4) cut after bytes[last] and padded with zeros,
 * read without branches (every index clamped to last, the bytes past it masked off): a row's tail
 * is as likely any length from 1 to 15 bytes as another, so branches on it would be mispredicted.
 */
function tailWord(bytes: Uint8Array, from: number, last: number): number {
  const word =
    bytes[Math.min(from, last)]! |
    (bytes[Math.min(from + 1, last)]! << 8) |
    (bytes[Math.min(from + 2, last)]! << 16) |
    (bytes[Math.min(from + 3, last)]! << 24);
  return word & TAIL_MASKS[Math.max(0, Math.min(4, last + 1 - from))]!;
}

function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}
