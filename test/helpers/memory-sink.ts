import { createHash } from 'node:crypto';
import { decodeTree, encodeTree, type Tree } from '../../src/repository/tree.ts';
import {
  CHUNK_BOUNDARY,
  type ContentPiece,
  type ContentSink,
  type ParentTrees,
  type StoredContent,
} from '../../src/sources/source.ts';

const PIECE_SIZE = 64 * 1024;

/**
 * A repository stand-in for source and restore tests: content is cut into fixed 64 KiB blobs
 * named by their sha256, trees are kept as encoded JSON. No packs, keys or storage.
 */
export class MemorySink implements ContentSink {
  readonly blobs = new Map<string, Buffer>();
  readonly trees = new Map<string, Buffer>();
  /** Bytes the source read and stored, and bytes it reported as reused from the parent. */
  storedBytes = 0;
  reusedBytes = 0;

  async storeContent(content: AsyncIterable<ContentPiece>): Promise<StoredContent> {
    const blobs: string[] = [];
    let size = 0;
    let pending: Buffer[] = [];
    let pendingSize = 0;
    const cut = () => {
      if (pendingSize === 0) return;
      const blob = Buffer.concat(pending);
      const id = sha256(blob);
      this.blobs.set(id, blob);
      blobs.push(id);
      pending = [];
      pendingSize = 0;
    };
    for await (const piece of content) {
      if (piece === CHUNK_BOUNDARY) {
        cut();
        continue;
      }
      size += piece.length;
      for (let offset = 0; offset < piece.length;) {
        const take = Math.min(PIECE_SIZE - pendingSize, piece.length - offset);
        pending.push(Buffer.from(piece.subarray(offset, offset + take)));
        pendingSize += take;
        offset += take;
        if (pendingSize === PIECE_SIZE) cut();
      }
    }
    cut();
    this.storedBytes += size;
    return { blobs, size };
  }

  async storeTree(tree: Tree): Promise<string> {
    const bytes = encodeTree(tree);
    const id = sha256(bytes);
    this.trees.set(id, bytes);
    return id;
  }

  reuseContent(content: readonly string[], size: number): boolean {
    if (!content.every((id) => this.blobs.has(id))) return false;
    this.reusedBytes += size;
    return true;
  }

  async readTree(id: string): Promise<Tree> {
    const bytes = this.trees.get(id);
    if (!bytes) throw new Error(`no tree ${id}`);
    return decodeTree(bytes, id);
  }

  async readBlob(id: string): Promise<Buffer> {
    const blob = this.blobs.get(id);
    if (!blob) throw new Error(`no blob ${id}`);
    return blob;
  }

  /** The parent a backup sees when `root` is the previous snapshot's tree. */
  parent(root: string): ParentTrees {
    return { root, readTree: (id) => this.readTree(id) };
  }
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
