/**
 * Resemblance sketches, for finding a stored chunk that a new chunk can be delta-encoded against.
 *
 * Design: bottom-k min-hash (k = 8) over every 32-byte window, ranked by a gear rolling hash.
 * Why this rather than super-features (Shilane et al. 2012; Finesse; Odess):
 *  - Speed. It runs on every new chunk on the main thread, and in V8 a gear hash over every byte
 *    is already about 1 GB/s per dependency chain. Bottom-k adds only a comparison per byte:
 *    windows whose rank has its top 9 bits zero go to a small buffer, and the k smallest are
 *    picked from those afterwards. Super-features need N independent transforms per byte (or
 *    per sampled anchor, after a gear pass that costs as much as all of this). Two lanes (the
 *    two halves of the chunk) break the add-per-byte dependency chain and roughly double speed.
 *  - Graceful degradation. A super-feature matches only if all of its 3-4 features do, so its
 *    hit rate falls off steeply when chunks share, say, 60% of their content (shifted chunk
 *    boundaries); each bottom-k value matches with probability about the Jaccard similarity of
 *    the two window sets, and the count of shared values ranks candidate bases.
 *  - Robustness to boilerplate. Windows repeated across a whole table (column separators, JSON
 *    keys) are one element each of a set of tens of thousands of distinct windows per chunk,
 *    so they rarely reach the k smallest; the index still requires two shared values.
 * Ranks use the gear hash itself, but the k smallest ranks carry only ~19 bits of entropy, so
 * each reported value is a separate 32-bit hash of the window's bytes: a chance collision
 * between unrelated chunks then costs about k²/2³² per pair, not k²/2¹⁹.
 * The gear table is fixed and independent of the chunker's: the chunker cuts where its own gear
 * hash is small, so sharing its table would pull every sketch toward chunk ends. Being unkeyed,
 * sketches reveal content equality to anyone who reads them: keep them in encrypted metadata.
 * The definition (see sketch()) is persisted in repository indexes: changing any constant here
 * makes old and new sketches incomparable.
 */
import { createHash } from 'node:crypto';

/** Number of values in a sketch (fewer only for chunks with fewer distinct 32-byte windows). */
export const SKETCH_SIZE = 8;
/** The gear hash at position i depends on bytes i-31..i: one bit of shift per byte. */
const WINDOW = 32;
/** Shorter inputs take the exact path: the fast path expects only n/512 candidates. */
const FAST_MIN = 8192;
/** Room for fast-path candidates: enough for chunks up to about 2 MiB. */
const CAPACITY = 4096;

const GEAR: Int32Array = (() => {
  const table = new Int32Array(256);
  for (let i = 0; i < 256; i++) {
    table[i] = createHash('sha256')
      .update('strongbox similarity sketch v1')
      .update(Uint8Array.of(i))
      .digest()
      .readInt32LE(0);
  }
  return table;
})();

// Scratch space for the fast path (sketch() is synchronous, so one set serves every call).
const candidateHash = new Int32Array(CAPACITY);
const candidateEnd = new Int32Array(CAPACITY);

/** FNV-1a over the window ending at `end` (inclusive), then the murmur3 finalizer. */
function windowHash(data: Uint8Array, end: number): number {
  let x = 0x811c9dc5;
  for (let i = end - WINDOW + 1; i <= end; i++) x = Math.imul(x ^ data[i]!, 0x01000193);
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * Resemblance sketch of `data`: up to SKETCH_SIZE distinct uint32 values (fewer when the data
 * has fewer distinct 32-byte windows; none when it is shorter than 32 bytes). Chunks that share
 * a fraction J of their windows share about J·SKETCH_SIZE values. The order carries no meaning.
 *
 * Precisely: rank every window ending at i = 31..n-1 by its gear hash as an unsigned number;
 * among the windows of each rank keep the first; take the SKETCH_SIZE smallest ranks; report
 * windowHash of each, dropping repeats.
 */
export function sketch(data: Uint8Array): number[] {
  const ends = (data.length >= FAST_MIN && fastBottomK(data)) || exactBottomK(data);
  const values: number[] = [];
  for (const end of ends) {
    const value = windowHash(data, end);
    if (!values.includes(value)) values.push(value);
  }
  return values;
}

/**
 * The hot path. Only windows whose rank has its top 9 bits zero (1 in 512, so 128 expected in
 * 64 KiB) are candidates; if they include SKETCH_SIZE distinct ranks and none were dropped for
 * lack of room, those are exactly the smallest ranks. Otherwise (short, huge or repetitive data)
 * returns undefined and the caller takes the exact path.
 * Speed notes, measured in V8 on 64 KiB chunks: two lanes (first and second half) break the gear
 * hash's one-add-per-byte dependency chain (~1.0 -> 2.0 GB/s for the bare loop); no call in the
 * loop keeps everything in registers; the test must be against a literal constant (`h & C`
 * with C a variable, or even `h < limit`, is 20-40% slower); unrolling by two gains 30%.
 */
function fastBottomK(data: Uint8Array): number[] | undefined {
  const n = data.length;
  const half = n >>> 1;
  const offset = half - (WINDOW - 1);
  let a = 0;
  let b = 0;
  let count = 0;
  for (let i = 0; i < WINDOW - 1; i++) {
    a = ((a << 1) + GEAR[data[i]!]!) | 0;
    b = ((b << 1) + GEAR[data[i + offset]!]!) | 0;
  }
  // Lane a ranks windows ending at 31 .. half-1, lane b those ending at half .. n-1, two bytes
  // per iteration (unrolling gains about 30%). -0x800000 is 0xff800000, the candidate test,
  // spelled out so that V8 sees a constant.
  let i = WINDOW - 1;
  let j = half;
  for (; i + 1 < half; i += 2, j += 2) {
    a = ((a << 1) + GEAR[data[i]!]!) | 0;
    b = ((b << 1) + GEAR[data[j]!]!) | 0;
    if ((a & -0x800000) === 0 && count < CAPACITY) {
      candidateHash[count] = a;
      candidateEnd[count++] = i;
    }
    if ((b & -0x800000) === 0 && count < CAPACITY) {
      candidateHash[count] = b;
      candidateEnd[count++] = j;
    }
    a = ((a << 1) + GEAR[data[i + 1]!]!) | 0;
    b = ((b << 1) + GEAR[data[j + 1]!]!) | 0;
    if ((a & -0x800000) === 0 && count < CAPACITY) {
      candidateHash[count] = a;
      candidateEnd[count++] = i + 1;
    }
    if ((b & -0x800000) === 0 && count < CAPACITY) {
      candidateHash[count] = b;
      candidateEnd[count++] = j + 1;
    }
  }
  if (i < half) {
    a = ((a << 1) + GEAR[data[i]!]!) | 0;
    if ((a & -0x800000) === 0 && count < CAPACITY) {
      candidateHash[count] = a;
      candidateEnd[count++] = i;
    }
  }
  for (; j < n; j++) {
    b = ((b << 1) + GEAR[data[j]!]!) | 0;
    if ((b & -0x800000) === 0 && count < CAPACITY) {
      candidateHash[count] = b;
      candidateEnd[count++] = j;
    }
  }
  // A full buffer may have dropped candidates, so it proves nothing.
  if (count === CAPACITY || count < SKETCH_SIZE) return undefined;
  const ranks: number[] = [];
  const ends: number[] = [];
  for (let k = 0; k < count; k++) {
    const rank = candidateHash[k]!; // top bit clear, so signed order is unsigned order
    const end = candidateEnd[k]!;
    if (ranks.length === SKETCH_SIZE && rank > ranks[SKETCH_SIZE - 1]!) continue;
    let at = ranks.length;
    while (at > 0 && ranks[at - 1]! > rank) at--;
    if (at > 0 && ranks[at - 1] === rank) {
      // The lanes interleave, so the first window of a rank is the one ending earliest.
      if (end < ends[at - 1]!) ends[at - 1] = end;
      continue;
    }
    ranks.splice(at, 0, rank);
    ends.splice(at, 0, end);
    if (ranks.length > SKETCH_SIZE) {
      ranks.pop();
      ends.pop();
    }
  }
  return ranks.length === SKETCH_SIZE ? ends : undefined;
}

/** The reference definition, one window at a time; used for short and repetitive inputs. */
function exactBottomK(data: Uint8Array): number[] {
  const n = data.length;
  const ranks: number[] = [];
  const ends: number[] = [];
  const gear = GEAR;
  let h = 0;
  for (let i = 0; i < n; i++) {
    h = ((h << 1) + gear[data[i]!]!) | 0;
    if (i < WINDOW - 1) continue;
    const rank = h >>> 0;
    if (ranks.length === SKETCH_SIZE && rank >= ranks[SKETCH_SIZE - 1]!) continue;
    let at = ranks.length;
    while (at > 0 && ranks[at - 1]! > rank) at--;
    if (at > 0 && ranks[at - 1] === rank) continue; // a repeated window (or a gear collision): keep the first
    ranks.splice(at, 0, rank);
    ends.splice(at, 0, i);
    if (ranks.length > SKETCH_SIZE) {
      ranks.pop();
      ends.pop();
    }
  }
  return ends;
}

export interface SimilarityIndexOptions {
  /**
   * Sketch values a candidate must share with the query to be returned (default 2, capped at
   * the query's own size). One shared value can come from a single common window (a JSON key
   * run, a run of zeros); two independent windows among the k smallest mean the chunks share
   * roughly a quarter of their content or more, where a delta starts to beat plain compression.
   */
  minShared?: number;
  /** Most recent ids remembered per sketch value (default 4); older ones are forgotten. */
  maxIdsPerValue?: number;
}

/**
 * In-memory map from sketch values to the ids of chunks that have them. Memory is bounded per
 * value (the most recent `maxIdsPerValue` ids), so a window common to many chunks costs no
 * more than a rare one. Total memory grows with the number of distinct values added.
 */
export class SimilarityIndex {
  private readonly byValue = new Map<number, string[]>();
  private readonly minShared: number;
  private readonly maxIdsPerValue: number;

  constructor(options: SimilarityIndexOptions = {}) {
    this.minShared = options.minShared ?? 2;
    this.maxIdsPerValue = options.maxIdsPerValue ?? 4;
    if (!(Number.isInteger(this.minShared) && this.minShared >= 1))
      throw new RangeError('minShared must be a positive integer');
    if (!(Number.isInteger(this.maxIdsPerValue) && this.maxIdsPerValue >= 1)) {
      throw new RangeError('maxIdsPerValue must be a positive integer');
    }
  }

  /** Number of distinct sketch values held. */
  get size(): number {
    return this.byValue.size;
  }

  add(id: string, sketch: number[]): void {
    for (const value of new Set(sketch)) {
      let ids = this.byValue.get(value);
      if (!ids) {
        ids = [];
        this.byValue.set(value, ids);
      }
      const at = ids.indexOf(id);
      if (at >= 0) ids.splice(at, 1);
      ids.push(id);
      if (ids.length > this.maxIdsPerValue) ids.shift();
    }
  }

  /**
   * The id sharing the most values with `sketch`, if it shares at least
   * min(minShared, distinct values in `sketch`). Ties go to the id found first, looking at the
   * query's values in order and at each value's ids newest first.
   */
  findBase(sketch: number[]): string | undefined {
    const values = new Set(sketch);
    const required = Math.min(this.minShared, values.size);
    if (required === 0) return undefined;
    const counts = new Map<string, number>();
    let bestId: string | undefined;
    let bestCount = 0;
    for (const value of values) {
      const ids = this.byValue.get(value);
      if (!ids) continue;
      for (let i = ids.length - 1; i >= 0; i--) {
        const id = ids[i]!;
        const count = (counts.get(id) ?? 0) + 1;
        counts.set(id, count);
        if (count > bestCount) {
          bestCount = count;
          bestId = id;
        }
      }
    }
    return bestCount >= required ? bestId : undefined;
  }
}
