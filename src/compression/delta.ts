/**
 * Delta encoding of a chunk against a similar, already stored chunk (the base).
 *
 * Byte format (version 1). "varint" is unsigned LEB128: 7 bits per byte, least significant
 * group first, high bit set on every byte but the last; at most 5 bytes, no value above
 * 2^32 - 1, and no superfluous trailing zero groups (a multi-byte varint never ends in 0x00).
 *
 *   delta       = version baseLength targetLength instruction*
 *   version     = 0x01                                 (one byte)
 *   baseLength  = varint                               (must equal the base's length)
 *   targetLength= varint                               (at most MAX_DELTA_TARGET_LENGTH)
 *   instruction = varint(length * 2 + 0) bytes[length] INSERT: append the next `length` bytes
 *               | varint(length * 2 + 1) zigzag       COPY: append base[from, from + length)
 *
 * `length` is at least 1. COPY positions are relative: `from = cursor + d`, where `d` is the
 * zigzag varint read as signed (0 -> 0, 1 -> -1, 2 -> 1, 3 -> -2, ...: even v gives v / 2, odd
 * v gives -(v + 1) / 2) and `cursor` is the end of the previous COPY in the base (0 before the
 * first). Continuing the base where the last copy stopped, the common case after an inserted
 * row, therefore costs one byte. Every copy must lie within the base; the instructions must
 * produce exactly targetLength bytes and end exactly where the delta ends. Anything else is
 * malformed and decodeDelta throws. The base must be shorter than 2^31 bytes and the target at
 * most MAX_DELTA_TARGET_LENGTH, so every varint fits the limit above.
 *
 * Example: base B of 100 bytes, target = B[0,50) "XY" B[50,100):
 *   01 64 66 | 65 00 | 04 58 59 | 65 00
 *   version 1, base 100, target 102 | COPY 50 from 0 | INSERT "XY" | COPY 50 from 50 (d = 0)
 *
 * A delta identifies its base only by length: decoding against the wrong base of the same
 * length yields wrong bytes, so callers must check the result against the chunk's id.
 *
 * Encoder (not part of the format): index every 12-byte window of the base in a hash table (one
 * slot per hash; a later position overwrites an earlier one), then walk the target. At each
 * position try the base where the previous copy ended (after an insertion), where it would be
 * had the literal bytes since then replaced base bytes one for one (after a replacement), and
 * the hash-table candidate (after a deletion or a move); extend the longest match forward, then
 * backward over pending literal bytes, and emit a COPY if it reaches MIN_MATCH bytes. Probing
 * thins out over long literal runs (as in LZ4), so unrelated data is cheap. Output is not
 * compressed: the caller compresses it.
 */

/** Largest target decodeDelta will build: the chunker's largest possible chunk (64 MiB). */
export const MAX_DELTA_TARGET_LENGTH = 2 ** 26;
export const DELTA_VERSION = 1;

/** Bytes hashed to find match candidates. */
const HASH_WINDOW = 12;
/**
 * Shortest copy emitted. A copy costs 2-5 bytes of instruction that compress poorly, while the
 * literals it replaces would compress well alongside the others; on pg_dump data the
 * compressed deltas were 11% smaller with 24 than with 12, and no smaller with 32-64.
 */
const MIN_MATCH = 24;
/** After 2^SKIP_SHIFT bytes without a match, probe every 2nd position, then every 3rd, ... */
const SKIP_SHIFT = 8;
const INSERT = 0;
const COPY = 1;
/** At most 2^18 hash slots (1 MiB of table), one per position of a 256 KiB base. */
const MAX_TABLE_BITS = 18;

class Writer {
  buf: Uint8Array;
  length = 0;

  constructor(capacity: number) {
    this.buf = Buffer.allocUnsafe(Math.max(16, capacity));
  }

  private reserve(extra: number): void {
    if (this.length + extra <= this.buf.length) return;
    const grown = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.length + extra));
    grown.set(this.buf.subarray(0, this.length));
    this.buf = grown;
  }

  varint(value: number): void {
    this.reserve(5);
    const buf = this.buf;
    while (value >= 0x80) {
      buf[this.length++] = (value & 0x7f) | 0x80;
      value = Math.floor(value / 128);
    }
    buf[this.length++] = value;
  }

  bytes(data: Uint8Array, start: number, end: number): void {
    this.reserve(end - start);
    if (end - start > 64) {
      this.buf.set(data.subarray(start, end), this.length);
      this.length += end - start;
    } else {
      // Short runs are common, and a subarray costs more than copying them.
      const buf = this.buf;
      let at = this.length;
      for (let i = start; i < end; i++) buf[at++] = data[i]!;
      this.length = at;
    }
  }
}

function word(data: Uint8Array, p: number): number {
  return data[p]! | (data[p + 1]! << 8) | (data[p + 2]! << 16) | (data[p + 3]! << 24);
}

/** Hash of three little-endian words (12 bytes), reduced to the top `32 - shift` bits. */
function mix(a: number, b: number, c: number, shift: number): number {
  return (
    Math.imul(
      a ^ Math.imul(b ^ (b >>> 15), 0x85ebca77) ^ Math.imul(c ^ (c >>> 13), 0xc2b2ae3d),
      0x9e3779b1,
    ) >>> shift
  );
}

/** Length of the common run of base[b..] and target[t..], up to the end of either. */
function matchLength(base: Uint8Array, b: number, target: Uint8Array, t: number): number {
  const limit = Math.min(base.length - b, target.length - t);
  let k = 0;
  while (k < limit && base[b + k] === target[t + k]) k++;
  return k;
}

/** A delta that rebuilds `target` from `base` (see the format above). */
export function encodeDelta(base: Uint8Array, target: Uint8Array): Buffer {
  if (target.length > MAX_DELTA_TARGET_LENGTH) throw new RangeError('delta target is too large');
  if (base.length >= 2 ** 31) throw new RangeError('delta base is too large');
  const out = new Writer((target.length >>> 3) + 64);
  out.varint(DELTA_VERSION);
  out.varint(base.length);
  out.varint(target.length);

  let tableBits = 10;
  while (tableBits < MAX_TABLE_BITS && 1 << tableBits < base.length) tableBits++;
  const shift = 32 - tableBits;
  // Slots hold position + 1, so 0 means empty.
  const table = new Int32Array(1 << tableBits);
  if (base.length >= HASH_WINDOW) {
    // The three words of each 12-byte window, rolled forward a byte at a time.
    let a = word(base, 0);
    let b = word(base, 4);
    let c = word(base, 8);
    const end = base.length - HASH_WINDOW;
    for (let p = 0; ; p++) {
      table[mix(a, b, c, shift)] = p + 1;
      if (p === end) break;
      a = (a >>> 8) | (b << 24);
      b = (b >>> 8) | (c << 24);
      c = (c >>> 8) | (base[p + 12]! << 24);
    }
  }

  let cursor = 0; // end of the last copy in the base
  let literalStart = 0; // first target byte not yet emitted
  let t = 0;
  const last = target.length - HASH_WINDOW;
  // The three words of target[t, t + 12), rolled forward while t advances one byte at a time.
  let w0 = 0;
  let w1 = 0;
  let w2 = 0;
  let wordsAt = -2;
  let rejectedDiagonal = 0;
  let rejectedEnd = 0; // no position is below this yet
  while (t <= last) {
    // First the continuations of the last copy: right after it (the bytes since then were
    // inserted) or as far on as the bytes since then (they replaced base bytes one for one).
    // A copy must reach MIN_MATCH, so a mismatch at its last byte rejects a candidate cheaply.
    let bestFrom = -1;
    let bestLength = 0;
    let back = 0;
    if (t + MIN_MATCH <= target.length) {
      const replaced = cursor + (t - literalStart);
      if (
        cursor + MIN_MATCH <= base.length &&
        base[cursor + MIN_MATCH - 1] === target[t + MIN_MATCH - 1] &&
        base[cursor] === target[t]
      ) {
        const length = matchLength(base, cursor, target, t);
        if (length >= MIN_MATCH) {
          bestFrom = cursor;
          bestLength = length;
        }
      }
      if (
        bestFrom < 0 &&
        replaced !== cursor &&
        replaced + MIN_MATCH <= base.length &&
        base[replaced + MIN_MATCH - 1] === target[t + MIN_MATCH - 1] &&
        base[replaced] === target[t]
      ) {
        const length = matchLength(base, replaced, target, t);
        if (length >= MIN_MATCH) {
          bestFrom = replaced;
          bestLength = length;
        }
      }
    }
    if (bestFrom < 0) {
      // Then whatever the hash table has for these 12 bytes. The match may also extend backward
      // over literal bytes, by at most `reach`; the first byte it must reach forward is checked
      // first.
      if (t === wordsAt + 1) {
        w0 = (w0 >>> 8) | (w1 << 24);
        w1 = (w1 >>> 8) | (w2 << 24);
        w2 = (w2 >>> 8) | (target[t + 11]! << 24);
      } else {
        w0 = word(target, t);
        w1 = word(target, t + 4);
        w2 = word(target, t + 8);
      }
      wordsAt = t;
      const slot = table[mix(w0, w1, w2, shift)]!;
      const from = slot - 1;
      const reach = Math.min(t - literalStart, from);
      const need = MIN_MATCH - reach;
      if (
        slot !== 0 &&
        !(from - t === rejectedDiagonal && t < rejectedEnd) &&
        (need <= 0 ||
          (from + need <= base.length &&
            t + need <= target.length &&
            base[from + need - 1] === target[t + need - 1]))
      ) {
        const length = matchLength(base, from, target, t);
        while (back < reach && base[from - back - 1] === target[t - back - 1]) back++;
        if (length + back >= MIN_MATCH) {
          bestFrom = from;
          bestLength = length;
        } else {
          // Later positions on this diagonal, up to where the match ended, would find the
          // same too-short match again.
          rejectedDiagonal = from - t;
          rejectedEnd = t + length;
          back = 0;
        }
      }
    }
    if (bestFrom < 0) {
      // Look less often the longer nothing has matched (as LZ4 does): unrelated data costs a
      // few thousand probes per 64 KiB instead of 64 Ki, and a match found late is extended
      // backward over the bytes skipped.
      t += 1 + ((t - literalStart) >>> SKIP_SHIFT);
      continue;
    }
    const start = t - back;
    const from = bestFrom - back;
    const length = bestLength + back;
    if (start > literalStart) {
      out.varint((start - literalStart) * 2 + INSERT);
      out.bytes(target, literalStart, start);
    }
    out.varint(length * 2 + COPY);
    const d = from - cursor;
    out.varint(d >= 0 ? d * 2 : -d * 2 - 1);
    cursor = from + length;
    t = start + length;
    literalStart = t;
  }
  // The tail is shorter than a hash window; it may still continue the last copy.
  if (literalStart < target.length && cursor < base.length) {
    const length = matchLength(base, cursor, target, literalStart);
    if (length === target.length - literalStart && length > 0) {
      out.varint(length * 2 + COPY);
      out.varint(0);
      literalStart = target.length;
    }
  }
  if (literalStart < target.length) {
    out.varint((target.length - literalStart) * 2 + INSERT);
    out.bytes(target, literalStart, target.length);
  }
  return Buffer.from(out.buf.buffer, out.buf.byteOffset, out.length);
}

class Reader {
  pos = 0;

  constructor(private readonly data: Uint8Array) {}

  get done(): boolean {
    return this.pos >= this.data.length;
  }

  varint(what: string): number {
    const data = this.data;
    let value = 0;
    let scale = 1;
    for (let i = 0; i < 5; i++) {
      if (this.pos >= data.length) throw new Error(`malformed delta: truncated ${what}`);
      const byte = data[this.pos++]!;
      value += (byte & 0x7f) * scale;
      if (byte < 0x80) {
        if (byte === 0 && i > 0) throw new Error(`malformed delta: overlong ${what}`);
        if (value > 0xffffffff) throw new Error(`malformed delta: ${what} out of range`);
        return value;
      }
      scale *= 128;
    }
    throw new Error(`malformed delta: ${what} longer than 5 bytes`);
  }
}

/** Rebuilds the target from `base` and a delta made by encodeDelta; throws Error on malformed input. */
export function decodeDelta(base: Uint8Array, delta: Uint8Array): Buffer {
  const input = new Reader(delta);
  const version = input.varint('version');
  if (version !== DELTA_VERSION) throw new Error(`malformed delta: unknown version ${version}`);
  const baseLength = input.varint('base length');
  if (baseLength !== base.length)
    throw new Error(`malformed delta: made for a ${baseLength}-byte base, given ${base.length} bytes`);
  const targetLength = input.varint('target length');
  if (targetLength > MAX_DELTA_TARGET_LENGTH)
    throw new Error(`malformed delta: target length ${targetLength} is too large`);
  const out = Buffer.allocUnsafe(targetLength);
  let written = 0;
  let cursor = 0;
  while (!input.done) {
    const header = input.varint('instruction');
    const length = Math.floor(header / 2);
    if (length === 0) throw new Error('malformed delta: zero-length instruction');
    if (length > targetLength - written)
      throw new Error('malformed delta: instructions overrun the target length');
    if (header % 2 === INSERT) {
      if (length > delta.length - input.pos) throw new Error('malformed delta: truncated insert');
      out.set(delta.subarray(input.pos, input.pos + length), written);
      input.pos += length;
    } else {
      const zigzag = input.varint('copy offset');
      const from = cursor + (zigzag % 2 === 0 ? zigzag / 2 : -(zigzag + 1) / 2);
      if (from < 0 || from + length > base.length) throw new Error('malformed delta: copy outside the base');
      out.set(base.subarray(from, from + length), written);
      cursor = from + length;
    }
    written += length;
  }
  if (written !== targetLength) throw new Error('malformed delta: instructions end before the target length');
  return out;
}
