import type { BlobLocation, BlobTypeValue, CompressionValue, PackRecord } from './blob.ts';

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

export interface IndexedPack {
  size: number;
  keys: Buffer;
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
  private packOf = new Uint32Array(1024);
  private offsets = new Uint32Array(1024);
  private lengths = new Uint32Array(1024);
  private rawLengths = new Uint32Array(1024);
  /** type | compression << 2 | level << 4 */
  private flags = new Uint16Array(1024);
  /** Slot of the delta base, or NO_BASE. */
  private bases = new Int32Array(1024);
  /** SKETCH_SLOTS values per blob; the count of values is in sketchLengths. */
  private sketchValues = new Uint32Array(1024 * SKETCH_SLOTS);
  private sketchLengths = new Uint8Array(1024);
  private readonly packIds: string[] = [];
  private readonly packSlots = new Map<string, number>();
  private readonly packs: IndexedPack[] = [];
  private located = 0;
  /**
   * Copies of a blob in other packs than the one its slot points to: a backup stores a blob again
   * when its stored copy is damaged, and index files load in any order, so readers try each copy.
   */
  private readonly otherCopies = new Map<number, IndexedBlob[]>();

  get blobCount(): number {
    return this.located;
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

  /** Every stored copy of the blob: the one `get` gives first, then any others. */
  copiesOf(id: string): IndexedBlob[] {
    const slot = this.slotOf(id);
    return slot === undefined ? [] : [this.blobAt(slot), ...(this.otherCopies.get(slot) ?? [])];
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

  /** Every copy of every blob, `entries()` and the other copies too. */
  *allCopies(): IterableIterator<[string, IndexedBlob]> {
    yield* this.entries();
    for (const [slot, copies] of this.otherCopies) for (const copy of copies) yield [this.ids[slot]!, copy];
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
      this.packs.push({ size: record.size, keys: record.keys, indexFiles: new Set() });
    }
    if (indexFile) this.packs[packSlot]!.indexFiles.add(indexFile);
    for (const blob of record.blobs) {
      const slot = this.slotFor(blob.id);
      if (this.packOf[slot] === UNLOCATED) this.located++;
      else if (this.packOf[slot] !== packSlot) this.keepOtherCopy(slot, record.id);
      this.packOf[slot] = packSlot;
      this.offsets[slot] = blob.offset;
      this.lengths[slot] = blob.length;
      this.rawLengths[slot] = blob.rawLength;
      this.flags[slot] = blob.type | (blob.compression << 2) | (blob.level << 4);
      // Index files load in any order: a base not seen yet gets a slot now and a location later.
      this.bases[slot] = blob.base ? this.slotFor(blob.base) : NO_BASE;
      const sketch = record.sketches?.get(blob.id)?.slice(0, SKETCH_SLOTS) ?? [];
      this.sketchValues.set(sketch, slot * SKETCH_SLOTS);
      this.sketchLengths[slot] = sketch.length;
    }
  }

  /** Keeps the slot's current location as another copy, before a copy in `newPack` replaces it. */
  private keepOtherCopy(slot: number, newPack: string): void {
    const { sketch: _sketch, ...current } = this.blobAt(slot);
    const others = (this.otherCopies.get(slot) ?? []).filter((copy) => copy.pack !== newPack);
    if (!others.some((copy) => copy.pack === current.pack)) others.push(current);
    this.otherCopies.set(slot, others);
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
