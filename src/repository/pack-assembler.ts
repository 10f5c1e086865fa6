import type { BlobTypeValue, PackRecord } from './blob.ts';
import { encodedEntry, PackBuilder, type DeltaBase, type EncodedBlob } from './pack-format.ts';

export interface PackAssemblerOptions {
  recipients: Uint8Array[];
  packSize: number;
  level: number;
  /**
   * Buffers of uploaded packs kept for later ones (default 1): as many as packs upload at once,
   * so that none is dropped. A dropped one is 17 MiB that stays allocated until a collection.
   */
  spares?: number;
}

export interface StoreItem {
  id: Uint8Array;
  type: BlobTypeValue;
  /** The plaintext; with `encoded`, the stored form instead (`encoded.stored` is not sent). */
  data: Uint8Array;
  delta?: DeltaBase;
  /** Compressed (or delta-encoded) already, by the thread that queued it: only sealing is left. */
  encoded?: Omit<EncodedBlob, 'stored'> & { rawLength: number };
}

export interface FinishedPack {
  /** A view of a buffer that belongs to this pack alone. */
  bytes: Buffer;
  record: PackRecord;
  rawBytes: number;
}

/**
 * Fills one pack at a time and hands it over once it reaches the target size. The buffer of an
 * uploaded pack comes back through `recycle()` to hold a later one, so packs cost no garbage.
 * Pack workers run one each.
 */
export class PackAssembler {
  /** Room for the pack and the blob that takes it past the target size. */
  readonly capacity: number;
  private pack: PackBuilder | undefined;
  private readonly spares: Buffer[] = [];

  constructor(private readonly options: PackAssemblerOptions) {
    this.capacity = options.packSize + 1024 * 1024;
  }

  /** Adds a blob; returns the pack if this blob filled it. */
  add(item: StoreItem): FinishedPack | undefined {
    if (!this.pack) {
      this.pack = new PackBuilder(
        this.options.recipients,
        this.options.level,
        this.capacity,
        this.spares.pop(),
      );
    }
    if (item.encoded) {
      const { rawLength, ...encoded } = item.encoded;
      this.pack.addStored(item.id, ...encodedEntry(item.type, rawLength, { ...encoded, stored: item.data }));
    } else this.pack.add(item.id, item.type, item.data, item.delta);
    return this.pack.length >= this.options.packSize ? this.finish() : undefined;
  }

  /** Closes the open pack, if it holds any blob. */
  finish(): FinishedPack | undefined {
    const pack = this.pack;
    if (!pack || pack.blobCount === 0) return undefined;
    this.pack = undefined;
    const { bytes, record } = pack.finish();
    return { bytes, record, rawBytes: pack.rawBytes };
  }

  recycle(buffer: Buffer): void {
    if (this.spares.length < (this.options.spares ?? 1) && buffer.byteLength >= this.capacity)
      this.spares.push(buffer);
  }
}
