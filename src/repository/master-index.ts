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

export class MasterIndex {
  private readonly blobs = new Map<string, IndexedBlob>();
  private readonly packs = new Map<string, IndexedPack>();

  get blobCount(): number {
    return this.blobs.size;
  }

  get packCount(): number {
    return this.packs.size;
  }

  has(id: string): boolean {
    return this.blobs.has(id);
  }

  get(id: string): IndexedBlob | undefined {
    return this.blobs.get(id);
  }

  pack(id: string): IndexedPack | undefined {
    return this.packs.get(id);
  }

  packIds(): IterableIterator<string> {
    return this.packs.keys();
  }

  entries(): IterableIterator<[string, IndexedBlob]> {
    return this.blobs.entries();
  }

  addPack(record: IndexedPackRecord, indexFile?: string): void {
    const known = this.packs.get(record.id);
    if (known) {
      if (indexFile) known.indexFiles.add(indexFile);
    } else {
      this.packs.set(record.id, {
        size: record.size,
        keys: record.keys,
        indexFiles: new Set(indexFile ? [indexFile] : []),
      });
    }
    for (const blob of record.blobs) {
      const entry: IndexedBlob = {
        pack: record.id,
        type: blob.type,
        offset: blob.offset,
        length: blob.length,
        rawLength: blob.rawLength,
        compression: blob.compression,
        level: blob.level,
      };
      if (blob.base) entry.base = blob.base;
      const sketch = record.sketches?.get(blob.id);
      if (sketch) entry.sketch = sketch;
      this.blobs.set(blob.id, entry);
    }
  }

  addIndexFile(name: string, content: IndexFileContent): void {
    for (const pack of content.packs) this.addPack(deserializePack(pack), name);
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
