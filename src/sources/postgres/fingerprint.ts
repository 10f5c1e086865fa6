import { hash } from 'node:crypto';

const FULL_LANES = 10;
const LANE_BITS = [...Array<number>(FULL_LANES).fill(24), 16];
/**
 * A lane below 2^24 after settling stays exact in a double (below 2^53) for 2^29 more rows;
 * settling twice as often leaves room.
 */
const ROWS_BETWEEN_CARRIES = 2 ** 28;
const BASE64 = new Uint8Array(128);
[...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'].forEach((char, value) => {
  BASE64[char.charCodeAt(0)] = value;
});

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
 * The hash is the sum, modulo 2^256, of the SHA-256 of each row read as a big-endian number:
 * addition ignores order, and unlike XOR counts a row present twice twice; all 256 bits cost no
 * more than fewer would. It makes an accidental match between different contents vanishingly
 * unlikely; it does not resist rows crafted to collide (sums of hashes fall to generalized
 * birthday attacks), which is not what it guards against: a restore that lost or changed rows.
 * crypto.hash with base64 output is Node's fastest per-row digest (Buffer output costs three
 * times as much), and its text is decoded into 24-bit lanes summed in doubles whose carries are
 * settled only now and then.
 */
export class TableFingerprint {
  private count = 0;
  /** Ten 24-bit lanes (the digest's first 30 bytes, most significant first) and a 16-bit one. */
  private readonly lanes = new Float64Array(LANE_BITS.length);

  addRow(row: Uint8Array): void {
    const digest = hash('sha256', row, 'base64');
    const lanes = this.lanes;
    for (let lane = 0, char = 0; lane < FULL_LANES; lane++, char += 4) {
      lanes[lane] =
        lanes[lane]! +
        ((BASE64[digest.charCodeAt(char)]! << 18) |
          (BASE64[digest.charCodeAt(char + 1)]! << 12) |
          (BASE64[digest.charCodeAt(char + 2)]! << 6) |
          BASE64[digest.charCodeAt(char + 3)]!);
    }
    // The last 16 bits: two full base64 digits and the top four bits of a third.
    lanes[FULL_LANES] =
      lanes[FULL_LANES]! +
      ((BASE64[digest.charCodeAt(40)]! << 10) |
        (BASE64[digest.charCodeAt(41)]! << 4) |
        (BASE64[digest.charCodeAt(42)]! >> 2));
    if (++this.count % ROWS_BETWEEN_CARRIES === 0) this.settleCarries();
  }

  get rows(): number {
    return this.count;
  }

  /** The sum as 64 hexadecimal digits. */
  digest(): string {
    this.settleCarries();
    const bytes = Buffer.alloc(32);
    let at = 0;
    LANE_BITS.forEach((bits, lane) => {
      bytes.writeUIntBE(this.lanes[lane]!, at, bits / 8);
      at += bits / 8;
    });
    return bytes.toString('hex');
  }

  /** Carries each lane's overflow into the next more significant one; the top one's is dropped. */
  private settleCarries(): void {
    let carry = 0;
    for (let lane = LANE_BITS.length - 1; lane >= 0; lane--) {
      const scale = 2 ** LANE_BITS[lane]!;
      const value = this.lanes[lane]! + carry;
      carry = Math.floor(value / scale);
      this.lanes[lane] = value - carry * scale;
    }
  }
}

/** The digest of TableFingerprint over these rows, for a side that has them all at hand. */
export function fingerprintRows(rows: Iterable<Uint8Array>): string {
  const fingerprint = new TableFingerprint();
  for (const row of rows) fingerprint.addRow(row);
  return fingerprint.digest();
}
