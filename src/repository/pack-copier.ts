import { packName } from './blob.ts';
import type { IndexedBlob, IndexedPackRecord } from './master-index.ts';
import { PackBuilder } from './pack-format.ts';
import type { Repository } from './repository.ts';

/** Packs indexed by one index file at most, as a backup's writer does. */
const PACKS_PER_INDEX_FILE = 16;

/**
 * Writes blobs in their stored form (as another pack held them) into new packs, one at a time on
 * this thread: what prune copies out of the packs it deletes needs decrypting and sealing again,
 * not compressing, so one pack buffer is all the memory it takes. Packs are indexed only once
 * durable, as a backup's are.
 */
export class PackCopier {
  private pack: PackBuilder | undefined;
  private readonly finished: IndexedPackRecord[] = [];
  private sketches = new Map<string, number[]>();
  storedBytes = 0;

  constructor(private readonly repository: Repository) {}

  async add(id: string, copy: IndexedBlob, stored: Buffer): Promise<void> {
    this.pack ??= new PackBuilder(
      this.repository.recipients,
      this.repository.config.compression.level,
      this.repository.config.packSize + 1024 * 1024,
    );
    this.pack.addStored(Buffer.from(id, 'hex'), stored, {
      type: copy.type,
      rawLength: copy.rawLength,
      compression: copy.compression,
      level: copy.level,
      ...(copy.base ? { base: copy.base } : {}),
    });
    // A copy stored whole keeps its sketch, so that later backups still find it as a delta base.
    if (!copy.base && copy.sketch) this.sketches.set(id, copy.sketch);
    if (this.pack.length >= this.repository.config.packSize) await this.finishPack();
  }

  /** Makes everything added durable and indexed. */
  async flush(): Promise<void> {
    await this.finishPack();
    await this.writeIndex();
  }

  private async finishPack(): Promise<void> {
    const pack = this.pack;
    this.pack = undefined;
    if (!pack || pack.blobCount === 0) return;
    const { bytes, record } = pack.finish();
    await this.repository.backend.put(packName(record.id), bytes, { deferSync: true, retain: true });
    this.storedBytes += bytes.length;
    const sketches = new Map<string, number[]>();
    for (const blob of record.blobs) {
      const sketch = this.sketches.get(blob.id);
      if (sketch) sketches.set(blob.id, sketch);
    }
    this.finished.push({ ...record, sketches });
    this.sketches = new Map();
    if (this.finished.length >= PACKS_PER_INDEX_FILE) await this.writeIndex();
  }

  private async writeIndex(): Promise<void> {
    if (this.finished.length === 0) return;
    await this.repository.backend.syncDeferred();
    const { size } = await this.repository.writeIndex(this.finished.splice(0));
    this.storedBytes += size;
  }
}
