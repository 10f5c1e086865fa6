import { instantiateKernel } from '../../util/wasm.ts';
import { WASM_BASE64 } from './copy-fingerprint.wasm.ts';

/**
 * A table's fingerprint: its row count and an order-independent hash of its rows, so a restore
 * can be checked against the backup table by table, whatever order the rows come back in.
 *
 * A row is one line of the table's COPY text output without its "\n", as a TABLE DATA block of
 * pg_dump's archive holds them. The restore side computes the same thing from the database by
 * running the TOC entry's copyStatement with "FROM stdin" turned into "TO STDOUT" (the same
 * columns in the same order), in a session set up as pg_dump's: client_encoding the database's
 * encoding, DateStyle ISO, IntervalStyle postgres, extra_float_digits 3, and the same TimeZone,
 * since timestamptz text depends on it; the output is split at each "\n" (COPY escapes the
 * newlines inside values, so every "\n" ends a row).
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
 * slower than parsing the dump. The x86 variant, because it needs only 32-bit multiplications.
 *
 * The work is done by a small WebAssembly module (copy-fingerprint.c) fed the COPY text as it
 * comes, in pieces split anywhere: it finds the rows and hashes each as its bytes pass. Reading
 * and fingerprinting a 900 MB archive took 2 s in JavaScript, a call or two per row; 0.7 s now.
 */
export class TableFingerprint {
  /** The module's state for this fingerprint (copy-fingerprint.c), between calls. */
  private readonly state = new Uint8Array(STATE_BYTES);
  private readonly view = new DataView(this.state.buffer);

  /**
   * `archive`: the text is a TABLE DATA block of pg_dump's archive, whose rows end at a "\\."
   * line; only empty lines may follow it. Otherwise every line is a row.
   */
  constructor(options: { archive?: boolean } = {}) {
    const kernel = loadKernel();
    kernel.exports.reset();
    this.state.set(kernel.memory.subarray(kernel.state, kernel.state + STATE_BYTES));
    if (options.archive) this.view.setUint32(FLAGS, this.view.getUint32(FLAGS, true) | ARCHIVE, true);
  }

  /**
   * Reads the next bytes of COPY text. Returns undefined, or the problem that stopped it and its
   * index in `text`: a NUL byte (never in COPY text), or after the terminator a byte other than "\n".
   */
  push(text: Uint8Array): CopyTextProblem | undefined {
    const stopped = this.feed(text);
    return stopped.status === 'fed' ? undefined : (stopped as CopyTextProblem);
  }

  /**
   * Reads the next bytes of an archive's TABLE DATA block from its first chunk length on: chunks
   * of COPY text, each an int length (a sign byte and `intSize` bytes) then its bytes, up to a zero
   * length. Returns how many bytes were read (all, unless the block ended) or the problem met.
   */
  pushChunks(bytes: Uint8Array, intSize: number): ChunksRead | CopyTextProblem {
    if ((this.view.getUint32(FLAGS, true) & FRAMED) === 0) {
      this.view.setUint32(FLAGS, this.view.getUint32(FLAGS, true) | FRAMED, true);
      this.view.setUint32(INT_SIZE, intSize, true);
    }
    const stopped = this.feed(bytes);
    if (stopped.status === 'fed') return { status: 'read', read: bytes.length, blockEnded: false };
    if (stopped.status === 'block-end') return { status: 'read', read: stopped.at, blockEnded: true };
    return stopped as CopyTextProblem;
  }

  private feed(bytes: Uint8Array): { status: FeedStatus; at: number } {
    const kernel = loadKernel();
    const { memory, input, inputSize } = kernel;
    memory.set(this.state, kernel.state);
    try {
      for (let from = 0; from < bytes.length; from += inputSize) {
        const length = Math.min(inputSize, bytes.length - from);
        memory.set(bytes.subarray(from, from + length), input);
        const stopped = kernel.exports.feed(length);
        if (stopped !== 0) {
          const at = from + kernel.view.getUint32(kernel.state + PROBLEM_AT, true);
          return { status: FEED_STATUSES[stopped] ?? 'invalid-int', at };
        }
      }
      return { status: 'fed', at: bytes.length };
    } finally {
      this.state.set(memory.subarray(kernel.state, kernel.state + STATE_BYTES));
    }
  }

  /** Adds one row, given without its "\n". */
  addRow(row: Uint8Array): void {
    this.push(row);
    this.push(NEWLINE);
  }

  get rows(): number {
    return Number(this.view.getBigUint64(ROWS, true));
  }

  /** Whether bytes were pushed since the last row's end. */
  get insideRow(): boolean {
    return this.view.getBigUint64(ROW_LENGTH, true) > 0n;
  }

  /** Whether the archive's "\\." line was read. */
  get terminated(): boolean {
    return (this.view.getUint32(FLAGS, true) & TERMINATED) !== 0;
  }

  /** The sum as 32 hexadecimal digits. */
  digest(): string {
    let hex = '';
    for (let word = 3; word >= 0; word--)
      hex += this.view
        .getUint32(word * 4, true)
        .toString(16)
        .padStart(8, '0');
    return hex;
  }
}

export interface CopyTextProblem {
  /**
   * A NUL byte; after an archive's terminator, a byte other than "\n"; a chunk length with a
   * sign byte other than 0 or 1 (or a negative zero), or a negative one.
   */
  status: 'nul' | 'after-terminator' | 'invalid-int' | 'negative-length';
  /** Index in the bytes pushed: of the byte, or just past the chunk length. */
  at: number;
}

export interface ChunksRead {
  status: 'read';
  read: number;
  blockEnded: boolean;
}

type FeedStatus = 'fed' | 'block-end' | CopyTextProblem['status'];
/** copy-fingerprint.c's return codes. */
const FEED_STATUSES: readonly FeedStatus[] = [
  'fed',
  'nul',
  'after-terminator',
  'block-end',
  'invalid-int',
  'negative-length',
];

/** The digest of TableFingerprint over these rows, for a side that has them all at hand. */
export function fingerprintRows(rows: Iterable<Uint8Array>): string {
  const fingerprint = new TableFingerprint();
  for (const row of rows) fingerprint.addRow(row);
  return fingerprint.digest();
}

/** Offsets in the module's state (copy-fingerprint.c, struct State). */
const ROWS = 16;
const ROW_LENGTH = 24;
const FLAGS = 64;
const PROBLEM_AT = 68;
const INT_SIZE = 80;
const STATE_BYTES = 104;
const TERMINATED = 1;
const ARCHIVE = 2;
const FRAMED = 4;
const NEWLINE = Uint8Array.of(0x0a);

interface Kernel {
  exports: { reset(): void; feed(length: number): number };
  /** The module's memory, which never grows. */
  memory: Uint8Array;
  view: DataView;
  state: number;
  input: number;
  inputSize: number;
}

let kernel: Kernel | undefined;

/** One instance per thread, made on first use. */
function loadKernel(): Kernel {
  if (kernel) return kernel;
  const { exports, memory } = instantiateKernel<{
    state(): number;
    input(): number;
    inputSize(): number;
    reset(): void;
    feed(length: number): number;
  }>(WASM_BASE64);
  kernel = {
    exports,
    memory: new Uint8Array(memory),
    view: new DataView(memory),
    state: exports.state(),
    input: exports.input(),
    inputSize: exports.inputSize(),
  };
  return kernel;
}
