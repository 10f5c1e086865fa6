import type { BlobLocation, BlobTypeValue, CompressionValue, PackBlobEntry, PackRecord } from './blob.ts';

/**
 * Index files (`index/<sha256>`) list packs and the blobs in them; the master index is their
 * union in memory. Writers read it to deduplicate, so it holds no plaintext and is sealed with
 * the metadata key, not with a data key.
 */
export interface IndexFileContent {
  packs: SerializedPack[];
}

/** [id, type, offset, length, rawLength, compression, level, base, sketch] */
type SerializedBlob = [
  string,
  number,
  number,
  number,
  number,
  number,
  number,
  string | null,
  number[] | null,
];

interface SerializedPack {
  id: string;
  size: number;
  keys: string;
  blobs: SerializedBlob[];
}

export interface IndexedBlob extends BlobLocation {
  /** The blob this one is stored as a delta against, if any. */
  base?: string;
  /** Resemblance sketch of a blob stored whole, so later backups can find it as a delta base. */
  sketch?: number[];
}

/** What an index file says of a pack as a whole: its size and its data key, wrapped to the recipients. */
export interface PackListing {
  size: number;
  keys: Buffer;
}

export interface IndexedPack {
  /**
   * Every distinct listing index files give the pack: one, unless they disagree. Any writer can
   * add index files, so none of them is taken over the others: readers find the right one.
   */
  listings: PackListing[];
  /** Index files that list this pack. */
  indexFiles: Set<string>;
}

export interface IndexedPackRecord extends PackRecord {
  sketches?: Map<string, number[]>;
}

const SKETCH_SLOTS = 8;
const NO_BASE = -1;
/** Pack of a slot made for a delta's base before the base itself was indexed. */
const UNLOCATED = 0xffffffff;

/**
 * The blobs of all index files, in memory. Backups consult it for every chunk and it grows with
 * the repository, so each blob costs a map entry plus a few bytes in typed arrays (about 150
 * bytes in all) rather than an object of its own.
 */
export class MasterIndex {
  private readonly slots = new Map<string, number>();
  private ids: string[] = [];
  private packOf: Uint32Array;
  private offsets: Uint32Array;
  private lengths: Uint32Array;
  private rawLengths: Uint32Array;
  /** type | compression << 2 | level << 4 */
  private flags: Uint16Array;
  /** Slot of the delta base, or NO_BASE. */
  private bases: Int32Array;
  /** SKETCH_SLOTS values per blob; the count of values is in sketchLengths. */
  private sketchValues: Uint32Array;
  private sketchLengths: Uint8Array;
  private readonly packIds: string[] = [];
  private readonly packSlots = new Map<string, number>();
  private readonly packs: IndexedPack[] = [];
  /** Further copies of blobs stored more than once, by slot: rare, so kept as whole records. */
  private readonly copies = new Map<number, IndexedBlob[]>();
  private located = 0;

  /** `capacity`: blobs before the first growth (tests start small to cross many growths). */
  constructor(capacity = 1024) {
    capacity = Math.max(1, capacity);
    this.packOf = new Uint32Array(capacity);
    this.offsets = new Uint32Array(capacity);
    this.lengths = new Uint32Array(capacity);
    this.rawLengths = new Uint32Array(capacity);
    this.flags = new Uint16Array(capacity);
    this.bases = new Int32Array(capacity);
    this.sketchValues = new Uint32Array(capacity * SKETCH_SLOTS);
    this.sketchLengths = new Uint8Array(capacity);
  }

  get blobCount(): number {
    return this.located;
  }

  /** Slots given out so far: every slot is below this. */
  get slotCount(): number {
    return this.ids.length;
  }

  get packCount(): number {
    return this.packs.length;
  }

  has(id: string): boolean {
    return this.slotOf(id) !== undefined;
  }

  /** The blob's position in this index, stable for the life of the index. */
  slotOf(id: string): number | undefined {
    const slot = this.slots.get(id);
    return slot === undefined || this.packOf[slot] === UNLOCATED ? undefined : slot;
  }

  idAt(slot: number): string {
    return this.ids[slot]!;
  }

  get(id: string): IndexedBlob | undefined {
    const slot = this.slotOf(id);
    return slot === undefined ? undefined : this.blobAt(slot);
  }

  /** A blob's plaintext length, without building its whole record. */
  rawLength(id: string): number | undefined {
    const slot = this.slotOf(id);
    return slot === undefined ? undefined : this.rawLengths[slot];
  }

  pack(id: string): IndexedPack | undefined {
    const slot = this.packSlots.get(id);
    return slot === undefined ? undefined : this.packs[slot];
  }

  packIdList(): readonly string[] {
    return this.packIds;
  }

  *entries(): IterableIterator<[string, IndexedBlob]> {
    for (let slot = 0; slot < this.ids.length; slot++) {
      if (this.packOf[slot] !== UNLOCATED) yield [this.ids[slot]!, this.blobAt(slot)];
    }
  }

  /** Slots and sketches of the blobs stored whole that have one: the candidates for delta bases. */
  *sketches(): IterableIterator<[number, number[]]> {
    for (let slot = 0; slot < this.ids.length; slot++) {
      const length = this.sketchLengths[slot]!;
      if (length > 0 && this.bases[slot] === NO_BASE && this.packOf[slot] !== UNLOCATED) {
        yield [
          slot,
          Array.from(this.sketchValues.subarray(slot * SKETCH_SLOTS, slot * SKETCH_SLOTS + length)),
        ];
      }
    }
  }

  /** Every place `id` is stored, the one `get` gives first; empty when it is not indexed. */
  locations(id: string): IndexedBlob[] {
    const slot = this.slotOf(id);
    return slot === undefined ? [] : [this.blobAt(slot), ...(this.copies.get(slot) ?? [])];
  }

  /** Every place of every blob, further copies included (what `check --read-data` reads). */
  *everyLocation(): IterableIterator<[string, IndexedBlob]> {
    yield* this.entries();
    for (const [slot, copies] of this.copies) for (const copy of copies) yield [this.ids[slot]!, copy];
  }

  /**
   * Why a reader could not get the plaintext of `id` through this index, or undefined when it
   * can: some copy of it must be stored whole, or be a delta whose base has a copy stored whole
   * (reads do not follow chains).
   */
  whyUnreadable(id: string): string | undefined {
    const slot = this.slotOf(id);
    if (slot === undefined) return 'it is not in the index';
    let reason: string | undefined;
    for (const base of this.baseSlots(slot)) {
      if (base === NO_BASE) return undefined;
      const baseId = this.ids[base]!.slice(0, 16);
      if (this.packOf[base] === UNLOCATED) reason ??= `its delta base ${baseId} is not in the index`;
      else if (!this.baseSlots(base).includes(NO_BASE))
        reason ??= `its delta base ${baseId} is a delta itself`;
      else return undefined;
    }
    return reason;
  }

  /** The base slot of each copy of a located blob: NO_BASE for a copy stored whole. */
  private baseSlots(slot: number): number[] {
    const bases = [this.bases[slot]!];
    for (const copy of this.copies.get(slot) ?? [])
      bases.push(copy.base === undefined ? NO_BASE : this.slots.get(copy.base)!);
    return bases;
  }

  private blobAt(slot: number): IndexedBlob {
    const flags = this.flags[slot]!;
    const blob: IndexedBlob = {
      pack: this.packIds[this.packOf[slot]!]!,
      type: (flags & 3) as BlobTypeValue,
      offset: this.offsets[slot]!,
      length: this.lengths[slot]!,
      rawLength: this.rawLengths[slot]!,
      compression: ((flags >> 2) & 3) as CompressionValue,
      level: flags >> 4,
    };
    const base = this.bases[slot]!;
    if (base !== NO_BASE) blob.base = this.ids[base]!;
    const sketchLength = this.sketchLengths[slot]!;
    if (sketchLength > 0)
      blob.sketch = Array.from(
        this.sketchValues.subarray(slot * SKETCH_SLOTS, slot * SKETCH_SLOTS + sketchLength),
      );
    return blob;
  }

  addPack(record: IndexedPackRecord, indexFile?: string): void {
    let packSlot = this.packSlots.get(record.id);
    if (packSlot === undefined) {
      packSlot = this.packs.length;
      this.packSlots.set(record.id, packSlot);
      this.packIds.push(record.id);
      this.packs.push({ listings: [], indexFiles: new Set() });
    }
    const pack = this.packs[packSlot]!;
    if (!pack.listings.some((listing) => listing.size === record.size && listing.keys.equals(record.keys)))
      pack.listings.push({ size: record.size, keys: record.keys });
    if (indexFile) pack.indexFiles.add(indexFile);
    for (const blob of record.blobs) {
      // Both slots first: either may grow the arrays, and a write through an array read before
      // the growth is lost (a delta's base was once written into the discarded array).
      const slot = this.slotFor(blob.id);
      // Index files load in any order: a base not seen yet gets a slot now and a location later.
      const base = blob.base ? this.slotFor(blob.base) : NO_BASE;
      const sketch = record.sketches?.get(blob.id)?.slice(0, SKETCH_SLOTS) ?? [];
      if (this.packOf[slot] === UNLOCATED) {
        this.located++;
        this.place(slot, packSlot, blob, base, sketch);
        continue;
      }
      const copy: IndexedBlob = {
        pack: record.id,
        type: blob.type,
        offset: blob.offset,
        length: blob.length,
        rawLength: blob.rawLength,
        compression: blob.compression,
        level: blob.level,
        ...(blob.base ? { base: blob.base } : {}),
      };
      // The same listing again (a rebuilt index beside the one it replaces): one location. A
      // listing that differs in anything is another location, even at the same place in the same
      // pack: which of them is right is for readers to find out (from the pack's own table), so
      // none may replace another, whatever order index files load in.
      if (sameLocation(this.blobAt(slot), copy)) {
        if (this.sketchLengths[slot] === 0) this.setSketch(slot, sketch);
        continue;
      }
      const copies = this.copies.get(slot) ?? [];
      this.copies.set(slot, copies);
      const listed = copies.find((other) => sameLocation(other, copy));
      if (listed) {
        if (!listed.sketch && sketch.length > 0) listed.sketch = sketch;
        continue;
      }
      if (sketch.length > 0) copy.sketch = sketch;
      // The first one met stays in the arrays unless this one is whole and it is a delta: reads
      // try whole copies first.
      if (base !== NO_BASE || this.bases[slot] === NO_BASE) {
        copies.push(copy);
        continue;
      }
      copies.push(this.blobAt(slot));
      this.place(slot, packSlot, blob, base, sketch);
    }
  }

  private place(slot: number, packSlot: number, blob: PackBlobEntry, base: number, sketch: number[]): void {
    this.packOf[slot] = packSlot;
    this.offsets[slot] = blob.offset;
    this.lengths[slot] = blob.length;
    this.rawLengths[slot] = blob.rawLength;
    this.flags[slot] = blob.type | (blob.compression << 2) | (blob.level << 4);
    this.bases[slot] = base;
    this.setSketch(slot, sketch);
  }

  private setSketch(slot: number, sketch: number[]): void {
    this.sketchValues.set(sketch, slot * SKETCH_SLOTS);
    this.sketchLengths[slot] = sketch.length;
  }

  addIndexFile(name: string, content: IndexFileContent): void {
    for (const pack of content.packs) this.addPack(deserializePack(pack), name);
  }

  /** The slot of `id`; a new one has no location until its pack is added. */
  private slotFor(id: string): number {
    const known = this.slots.get(id);
    if (known !== undefined) return known;
    const slot = this.ids.length;
    if (slot === this.packOf.length) this.grow();
    this.ids.push(id);
    this.slots.set(id, slot);
    this.packOf[slot] = UNLOCATED;
    this.bases[slot] = NO_BASE;
    this.sketchLengths[slot] = 0;
    return slot;
  }

  private grow(): void {
    const grown = <T extends Uint8Array | Uint16Array | Uint32Array | Int32Array>(array: T): T => {
      const bigger = new (array.constructor as new (length: number) => T)(array.length * 2);
      bigger.set(array);
      return bigger;
    };
    this.packOf = grown(this.packOf);
    this.offsets = grown(this.offsets);
    this.lengths = grown(this.lengths);
    this.rawLengths = grown(this.rawLengths);
    this.flags = grown(this.flags);
    this.bases = grown(this.bases);
    this.sketchValues = grown(this.sketchValues);
    this.sketchLengths = grown(this.sketchLengths);
  }
}

/** Whether two listings of a blob say the same of where and how it is stored (sketches aside). */
export function sameLocation(a: IndexedBlob, b: IndexedBlob): boolean {
  return (
    a.pack === b.pack &&
    a.offset === b.offset &&
    a.length === b.length &&
    a.rawLength === b.rawLength &&
    a.type === b.type &&
    a.compression === b.compression &&
    a.level === b.level &&
    a.base === b.base
  );
}

/** A listing's identity as a string: two listings of a blob that differ in anything are two copies. */
export function locationKey(id: string, copy: IndexedBlob): string {
  const { pack, offset, length, rawLength, type, compression, level, base } = copy;
  return [id, pack, offset, length, rawLength, type, compression, level, base ?? ''].join(' ');
}

export function serializeIndex(records: readonly IndexedPackRecord[]): IndexFileContent {
  return {
    packs: records.map((record) => ({
      id: record.id,
      size: record.size,
      keys: record.keys.toString('base64'),
      blobs: record.blobs.map((blob): SerializedBlob => [
        blob.id,
        blob.type,
        blob.offset,
        blob.length,
        blob.rawLength,
        blob.compression,
        blob.level,
        blob.base ?? null,
        record.sketches?.get(blob.id) ?? null,
      ]),
    })),
  };
}

/** The pack records of an index file, as `addPack` and `Repository.writeIndex` take them. */
export function indexRecords(content: IndexFileContent): IndexedPackRecord[] {
  return content.packs.map(deserializePack);
}

function deserializePack(pack: SerializedPack): IndexedPackRecord {
  const sketches = new Map<string, number[]>();
  const blobs = pack.blobs.map(([id, type, offset, length, rawLength, compression, level, base, sketch]) => {
    if (sketch) sketches.set(id, sketch);
    return {
      id,
      type: type as BlobTypeValue,
      offset,
      length,
      rawLength,
      compression: compression as CompressionValue,
      level,
      ...(base ? { base } : {}),
    };
  });
  return { id: pack.id, size: pack.size, keys: Buffer.from(pack.keys, 'base64'), blobs, sketches };
}
