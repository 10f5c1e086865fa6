import os from 'node:os';
import { Chunker, type Chunk } from '../chunking/fastcdc.ts';
import { BlobType } from '../repository/blob.ts';
import { BlobWriter } from '../repository/blob-writer.ts';
import type { Repository } from '../repository/repository.ts';
import type { SnapshotHeader } from '../repository/snapshot.ts';
import { encodeTree, type Tree } from '../repository/tree.ts';
import {
  CHUNK_BOUNDARY,
  type BackupSource,
  type ContentPiece,
  type ContentSink,
  type ParentTrees,
  type StoredContent,
} from '../sources/source.ts';
import { currentUsername } from '../util/host.ts';
import { PROGRAM } from '../version.ts';

export interface BackupOptions {
  tags?: string[];
  host?: string;
  /** Worker threads for compression and encryption (default: the number of CPUs). */
  threads?: number;
  /** Called as bytes are read from the source. */
  onProgress?: (progress: BackupProgress) => void;
}

export interface BackupProgress {
  bytesRead: number;
  bytesNew: number;
}

export interface BackupResult {
  snapshot: string;
  parent?: string;
  /** Bytes of content in the snapshot. */
  size: number;
  /** Bytes read from the source (unchanged files skipped are not read). */
  bytesRead: number;
  /** Plaintext bytes of new blobs. */
  bytesNew: number;
  /** Bytes added to the repository: packs, index and the snapshot file. */
  stored: number;
  newBlobs: number;
  deltaBlobs: number;
  durationMs: number;
  summary: Record<string, number>;
}

/**
 * Runs `source` into a new snapshot. The snapshot is written last, after every pack and index
 * file it needs is durable, so a backup that fails or is killed at any point leaves no snapshot.
 */
export async function backup(
  repository: Repository,
  source: BackupSource,
  options: BackupOptions = {},
): Promise<BackupResult> {
  const started = Date.now();
  const lock = await repository.lock(false, `backup ${source.kind}`);
  try {
    await repository.loadIndex();
    const host = options.host ?? os.hostname();
    const parent = await findParent(repository, source, host);
    const writer = new BlobWriter(
      repository,
      options.threads === undefined ? {} : { threads: options.threads },
    );
    try {
      const sink = new RepositorySink(repository, writer, options.onProgress);
      const result = await source.run(sink, parent?.trees);
      await writer.flush();
      const header: SnapshotHeader = {
        time: new Date(started).toISOString(),
        host,
        username: currentUsername(),
        kind: source.kind,
        name: source.name,
        tags: options.tags ?? [],
        size: result.size,
        stored: writer.stats.storedBytes,
        program: PROGRAM,
        ...(parent ? { parent: parent.id } : {}),
      };
      const saved = await repository.saveSnapshot(header, {
        tree: result.tree,
        paths: result.paths,
        summary: result.summary,
        ...(result.details ? { source: result.details } : {}),
      });
      return {
        snapshot: saved.id,
        ...(parent ? { parent: parent.id } : {}),
        size: result.size,
        bytesRead: sink.bytesRead,
        bytesNew: writer.stats.newRawBytes,
        stored: writer.stats.storedBytes + saved.size,
        newBlobs: writer.stats.newBlobs,
        deltaBlobs: writer.stats.deltaBlobs,
        durationMs: Date.now() - started,
        summary: result.summary,
      };
    } finally {
      await writer.close();
    }
  } finally {
    await lock.release();
  }
}

/** The newest snapshot of the same source from this host, when the key can read its trees. */
async function findParent(
  repository: Repository,
  source: BackupSource,
  host: string,
): Promise<{ id: string; trees: ParentTrees } | undefined> {
  if (!repository.canRead) return undefined;
  const previous = (await repository.listSnapshots({ kind: source.kind, name: source.name, host })).at(-1);
  if (!previous) return undefined;
  const { body } = await repository.loadSnapshot(previous.id);
  return { id: previous.id, trees: { root: body.tree, readTree: (id) => repository.readTree(id) } };
}

class RepositorySink implements ContentSink {
  bytesRead = 0;

  constructor(
    private readonly repository: Repository,
    private readonly writer: BlobWriter,
    private readonly onProgress: ((progress: BackupProgress) => void) | undefined,
  ) {}

  async storeContent(content: AsyncIterable<ContentPiece>): Promise<StoredContent> {
    const chunker = new Chunker(this.repository.config.chunker, this.repository.gear);
    const blobs: string[] = [];
    let size = 0;
    const save = async (chunk: Chunk | undefined) => {
      if (chunk) blobs.push((await this.writer.save(BlobType.data, chunk.data, chunk.sketch)).id);
    };
    for await (const piece of content) {
      if (piece === CHUNK_BOUNDARY) {
        await save(chunker.cut());
        continue;
      }
      size += piece.length;
      this.bytesRead += piece.length;
      for (const chunk of chunker.push(piece)) await save(chunk);
      this.onProgress?.({ bytesRead: this.bytesRead, bytesNew: this.writer.stats.newRawBytes });
    }
    await save(chunker.cut());
    return { blobs, size };
  }

  async storeTree(tree: Tree): Promise<string> {
    return (await this.writer.save(BlobType.tree, encodeTree(tree))).id;
  }

  reuseContent(): void {}
}
