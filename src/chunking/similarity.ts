/**
 * Resemblance sketches, for finding a stored chunk that a new chunk can be delta-encoded against.
 *
 * Design: a bottom-k min-hash (k = 8) over the chunk's 32-byte windows, ranked by the chunker's
 * own gear hash. The chunker computes that hash for every byte past the minimum chunk size
 * anyway, and every cut point ranks below the candidate threshold (a cut needs the hash's top
 * bits to be zero), so one comparison per byte serves both: sketches cost the backup almost
 * nothing, where a separate pass cost a quarter of a core. Because the gear table is derived
 * from the repository secret, sketches are keyed too.
 *
 * Why bottom-k rather than super-features (Shilane et al. 2012; Finesse; Odess): a super-feature
 * matches only when all of its features match, so it falls off steeply as the shared fraction
 * drops (chunks with shifted boundaries), while bottom-k values match with a probability close
 * to the share of common windows, and the number of shared values tells SimilarityIndex which
 * candidate is closest. Windows repeated across a whole table (separators, JSON keys) rarely
 * crowd the sketch out: a 64 KiB chunk has tens of thousands of distinct windows.
 *
 * The reported values are not the ranks (the k smallest ranks carry only ~19 bits) but a 32-bit
 * hash of each chosen window's bytes, so unrelated chunks collide with probability ~k²/2³².
 */

/** An unused slot of the similarity table. */
const EMPTY = -1;

/** Number of values in a sketch (fewer for chunks with fewer candidate windows). */
export const SKETCH_SIZE = 8;
/** The gear hash at a position depends on the 32 bytes ending there. */
export const SKETCH_WINDOW = 32;

/** FNV-1a over the 32-byte window ending at `end` (inclusive), then the murmur3 finalizer. */
export function windowHash(data: Uint8Array, end: number): number {
  let x = 0x811c9dc5;
  for (let i = end - SKETCH_WINDOW + 1; i <= end; i++) x = Math.imul(x ^ data[i]!, 0x01000193);
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/**
 * The sketch of `chunk` from its candidate windows: `ranks[i]` (a gear hash, compared as
 * unsigned) of the window ending at `ends[i]`. Takes the SKETCH_SIZE smallest distinct ranks
 * (the first window of each rank) and reports the window hash of each, without repeats.
 */
export function sketchFromCandidates(
  chunk: Uint8Array,
  ranks: Int32Array,
  ends: Int32Array,
  count: number,
): number[] {
  const order = Array.from({ length: count }, (_, k) => k);
  order.sort((x, y) => (ranks[x]! >>> 0) - (ranks[y]! >>> 0) || ends[x]! - ends[y]!);
  const values: number[] = [];
  let distinctRanks = 0;
  let lastRank = -1;
  for (const k of order) {
    const rank = ranks[k]! >>> 0;
    if (rank === lastRank) continue;
    lastRank = rank;
    const value = windowHash(chunk, ends[k]!);
    if (!values.includes(value)) values.push(value);
    if (++distinctRanks === SKETCH_SIZE) break;
  }
  return values;
}

export interface SimilarityIndexOptions {
  /**
   * Sketch values a candidate must share with the query to be returned (default 1, capped at the
   * query's own size). The candidate sharing the most is returned, so this matters only when the
   * best shares a single value, which may come from one common window (a JSON key run, a run of
   * zeros) rather than from common content. A delta against such a base is kept only when it is
   * smaller than the chunk compressed alone, so a poor one costs time, not space; and requiring
   * two left a changed chunk without any base whenever its predecessor's other values had been
   * crowded out by chunks that share them (see maxIdsPerValue): the second backup of the
   * benchmark database stored 0.8 % to 1.1 % of the first from one repository to another with 2,
   * 0.83 % to 0.87 % with 1.
   */
  minShared?: number;
  /** Most recent ids remembered per sketch value (default 4); older ones are forgotten. */
  maxIdsPerValue?: number;
  /** Table entries before the first growth, a power of two (default 1024; tests start small). */
  capacity?: number;
}

/**
 * In-memory map from sketch values to the ids (small integers: index positions) of chunks that
 * have them, as an open-addressing table in typed arrays: it holds a value for every chunk stored
 * whole in the repository, so each entry costs 12 bytes rather than a map entry and an array.
 * Each value keeps its `maxIdsPerValue` newest ids, so a window common to many chunks costs no
 * more than a rare one.
 */
export class SimilarityIndex {
  private keys: Uint32Array;
  private ids: Int32Array;
  /** When each entry was added or refreshed: newer ids win ties and outlive older ones. */
  private ages: Uint32Array;
  private entries = 0;
  private distinctValues = 0;
  private clock = 0;
  private readonly minShared: number;
  private readonly maxIdsPerValue: number;

  constructor(options: SimilarityIndexOptions = {}) {
    this.minShared = options.minShared ?? 1;
    this.maxIdsPerValue = options.maxIdsPerValue ?? 4;
    if (!(Number.isInteger(this.minShared) && this.minShared >= 1))
      throw new RangeError('minShared must be a positive integer');
    if (!(Number.isInteger(this.maxIdsPerValue) && this.maxIdsPerValue >= 1)) {
      throw new RangeError('maxIdsPerValue must be a positive integer');
    }
    const capacity = options.capacity ?? 1024;
    if (!(Number.isInteger(capacity) && capacity >= 2 && (capacity & (capacity - 1)) === 0))
      throw new RangeError('capacity must be a power of two');
    this.keys = new Uint32Array(capacity);
    this.ids = new Int32Array(capacity).fill(EMPTY);
    this.ages = new Uint32Array(capacity);
  }

  /** Number of distinct sketch values held. */
  get size(): number {
    return this.distinctValues;
  }

  add(id: number, sketch: readonly number[]): void {
    for (const value of new Set(sketch)) {
      const age = ++this.clock;
      const mask = this.keys.length - 1;
      let at = value & mask;
      let held = 0;
      let oldest = -1;
      let refreshed = false;
      for (; this.ids[at] !== EMPTY; at = (at + 1) & mask) {
        if (this.keys[at] !== value) continue;
        if (this.ids[at] === id) {
          this.ages[at] = age;
          refreshed = true;
          break;
        }
        held++;
        if (oldest < 0 || this.ages[at]! < this.ages[oldest]!) oldest = at;
      }
      if (refreshed) continue;
      if (held >= this.maxIdsPerValue) {
        this.ids[oldest] = id;
        this.ages[oldest] = age;
        continue;
      }
      if (held === 0) this.distinctValues++;
      this.keys[at] = value;
      this.ids[at] = id;
      this.ages[at] = age;
      if (++this.entries * 10 > this.keys.length * 7) this.grow();
    }
  }

  /**
   * The id sharing the most values with `sketch`, if it shares at least
   * min(minShared, distinct values in `sketch`). Ties go to `preferred`, else to the id found
   * first, looking at the query's values in order and at each value's ids newest first.
   */
  findBase(sketch: readonly number[], preferred?: number): number | undefined {
    const values = new Set(sketch);
    const required = Math.min(this.minShared, values.size);
    if (required === 0) return undefined;
    const counts = new Map<number, number>();
    let best: number | undefined;
    let bestCount = 0;
    const mask = this.keys.length - 1;
    for (const value of values) {
      const holders: number[] = [];
      for (let at = value & mask; this.ids[at] !== EMPTY; at = (at + 1) & mask) {
        if (this.keys[at] === value) holders.push(at);
      }
      holders.sort((a, b) => this.ages[b]! - this.ages[a]!);
      for (const at of holders) {
        const id = this.ids[at]!;
        const count = (counts.get(id) ?? 0) + 1;
        counts.set(id, count);
        if (count > bestCount) {
          bestCount = count;
          best = id;
        }
      }
    }
    // The caller's own guess wins ties: it knows more than the sketches (see BlobWriter.save).
    if (preferred !== undefined && (counts.get(preferred) ?? 0) >= bestCount) best = preferred;
    return bestCount >= required ? best : undefined;
  }

  private grow(): void {
    const { keys, ids, ages } = this;
    this.keys = new Uint32Array(keys.length * 2);
    this.ids = new Int32Array(keys.length * 2).fill(EMPTY);
    this.ages = new Uint32Array(keys.length * 2);
    const mask = this.keys.length - 1;
    for (let from = 0; from < keys.length; from++) {
      if (ids[from] === EMPTY) continue;
      let at = keys[from]! & mask;
      while (this.ids[at] !== EMPTY) at = (at + 1) & mask;
      this.keys[at] = keys[from]!;
      this.ids[at] = ids[from]!;
      this.ages[at] = ages[from]!;
    }
  }
}
