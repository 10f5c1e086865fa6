import { VerificationError } from '../errors.ts';
import type { MasterIndex } from '../repository/master-index.ts';

/**
 * The blobs a snapshot about to be written references, so that the backup can prove, before it
 * writes the snapshot, that a reader will find every one of them. Blobs already indexed cost a
 * bit each (by index slot), whatever the snapshot's size; only blobs this backup is still storing
 * are remembered by id until their packs are indexed.
 */
export class ReferencedBlobs {
  private marks = new Uint8Array(1024);
  private readonly unindexed = new Set<string>();

  constructor(private readonly index: MasterIndex) {}

  add(id: string): void {
    const slot = this.index.slotOf(id);
    if (slot === undefined) this.unindexed.add(id);
    else this.mark(slot);
  }

  /** The first referenced blob a reader could not get, and why; call once every pack is indexed. */
  firstUnreadable(): { id: string; reason: string } | undefined {
    for (const id of this.unindexed) {
      const slot = this.index.slotOf(id);
      if (slot === undefined) return { id, reason: 'it is not in the index' };
      this.mark(slot);
    }
    this.unindexed.clear();
    for (let byte = 0; byte < this.marks.length; byte++) {
      const bits = this.marks[byte]!;
      if (bits === 0) continue;
      for (let bit = 0; bit < 8; bit++) {
        if ((bits & (1 << bit)) === 0) continue;
        const id = this.index.idAt(byte * 8 + bit);
        const reason = this.index.whyUnreadable(id);
        if (reason) return { id, reason };
      }
    }
    return undefined;
  }

  private mark(slot: number): void {
    const byte = slot >>> 3;
    if (byte >= this.marks.length) {
      const grown = new Uint8Array(Math.max(this.marks.length * 2, byte + 1));
      grown.set(this.marks);
      this.marks = grown;
    }
    this.marks[byte]! |= 1 << (slot & 7);
  }
}

/** A backup refused to write a snapshot a reader could not restore. */
export class UnreadableSnapshotError extends VerificationError {
  /** `object`: what a reader could not get ("blob 1f2e…", "index file index/ab…"); `reason`: why. */
  constructor(
    readonly object: string,
    readonly reason: string,
  ) {
    super(`no snapshot was written: ${object} would not be readable (${reason})`, {
      hint: 'Nothing this backup wrote is referenced yet; run `strongbox check`, and report this if it persists.',
    });
  }
}
