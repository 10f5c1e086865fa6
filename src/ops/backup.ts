import os from 'node:os';
import { isDeepStrictEqual } from 'node:util';
import { Chunker, type Chunk } from '../chunking/fastcdc.ts';
import { FixedCutter } from '../chunking/fixed.ts';
import { BlobType } from '../repository/blob.ts';
import { BlobWriter } from '../repository/blob-writer.ts';
import { MasterIndex } from '../repository/master-index.ts';
import type { Repository } from '../repository/repository.ts';
import type { SnapshotHeader } from '../repository/snapshot.ts';
import { encodeTree, type Tree } from '../repository/tree.ts';
import {
  CHUNK_BOUNDARY,
  type BackupSource,
  type ContentPiece,
  type ContentSink,
  type ParentTrees,
  type PreviousContent,
  type StoreContentOptions,
  type StoredContent,
} from '../sources/source.ts';
import { currentUsername } from '../util/host.ts';
import { pieceAt } from '../util/search.ts';
import { PROGRAM } from '../version.ts';
import { ConfigError, VerificationError } from '../errors.ts';
import { LIMITS } from '../repository/schemas.ts';
import { ObjectNotFoundError } from '../storage/backend.ts';
import { ReferencedBlobs, UnreadableSnapshotError } from './referenced-blobs.ts';

export interface BackupOptions {
  tags?: string[];
  host?: string;
  /**
   * The time the snapshot records instead of the backup's start: for importing older dumps, and
   * for building a history to test retention against.
   */
  time?: Date;
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
  /**
   * Bytes of the packs and index files the backup added: the same number its header records and
   * `snapshots` lists (the snapshot file, written after, is not counted).
   */
  stored: number;
  /**
   * The snapshot's size over the bytes it added (deduplication and compression): 3.3 is 3.3:1;
   * null when it added nothing.
   */
  deduplicationRatio: number | null;
  newBlobs: number;
  deltaBlobs: number;
  /** Packs found damaged: this snapshot depends on none of them (see the next two). */
  damagedPacks: string[];
  /** Chunks stored again because no stored copy could be read (damaged packs, a lost index file). */
  storedAgain: number;
  /** Chunks stored whole because their delta base is in a damaged pack. */
  wholeForDamagedBase: number;
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
  try {
    return await backupLocked(repository, source, options);
  } finally {
    // A source that failed before it ran stops what it began early (once run, this does nothing).
    await source.abandon?.();
  }
}

/** Tags and a host name beyond the header's limits would make a snapshot no reader accepts. */
function requireRecordable(options: BackupOptions): void {
  const tags = options.tags ?? [];
  if (tags.length > LIMITS.tags) throw new ConfigError(`a snapshot holds at most ${LIMITS.tags} tags`);
  const long = [...tags, options.host ?? ''].find((label) => label.length > LIMITS.label);
  if (long !== undefined)
    throw new ConfigError(
      `${JSON.stringify(`${long.slice(0, 40)}…`)} is longer than ${LIMITS.label} characters`,
    );
}

async function backupLocked(
  repository: Repository,
  source: BackupSource,
  options: BackupOptions,
): Promise<BackupResult> {
  requireRecordable(options);
  const started = Date.now();
  return repository.withLock(`backup ${source.kind}`, { exclusive: false }, async () => {
    await repository.loadIndex();
    await repository.findMissingOrTruncatedPacks();
    const host = options.host ?? os.hostname();
    const parent = await findParent(repository, source, host);
    const writer = new BlobWriter(
      repository,
      options.threads === undefined ? {} : { threads: options.threads },
    );
    try {
      const references = new ReferencedBlobs(repository.index);
      const sink = new RepositorySink(repository, writer, references, options.onProgress);
      const result = await source.run(sink, parent?.trees);
      await writer.flush();
      await proveReadable(repository, references, writer.indexFilesWritten);
      const header: SnapshotHeader = {
        time: (options.time ?? new Date(started)).toISOString(),
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
      const stored = header.stored;
      return {
        snapshot: saved.id,
        ...(parent ? { parent: parent.id } : {}),
        size: result.size,
        bytesRead: sink.bytesRead,
        bytesNew: writer.stats.newRawBytes,
        stored,
        deduplicationRatio: stored > 0 ? result.size / stored : null,
        newBlobs: writer.stats.newBlobs,
        deltaBlobs: writer.stats.deltaBlobs,
        damagedPacks: [...repository.knownDamagedPacks],
        storedAgain: writer.stats.storedAgain,
        wholeForDamagedBase: writer.stats.wholeForDamagedBase,
        durationMs: Date.now() - started,
        summary: result.summary,
      };
    } finally {
      await writer.close();
    }
  });
}

/**
 * Before the snapshot is written: the index files this backup wrote read back from storage as
 * what it indexed, and every blob the snapshot references resolves through the index, deltas
 * and their bases included. A backup that exits 0 must restore; this costs a map lookup per blob
 * and one read of this backup's own index files.
 */
async function proveReadable(
  repository: Repository,
  references: ReferencedBlobs,
  indexFiles: readonly string[],
): Promise<void> {
  for (const name of indexFiles) {
    const written = new MasterIndex();
    try {
      written.addIndexFile(name, await repository.readIndexFile(name, await repository.backend.get(name)));
    } catch (error) {
      if (error instanceof ObjectNotFoundError)
        throw new UnreadableSnapshotError(`index file ${name}`, 'the storage lost it after accepting it');
      if (error instanceof VerificationError)
        throw new UnreadableSnapshotError(`index file ${name}`, 'it does not read back as written');
      throw error;
    }
    for (const [id, blob] of written.entries()) {
      if (!repository.index.locations(id).some((location) => isDeepStrictEqual(location, blob)))
        throw new UnreadableSnapshotError(`index file ${name}`, 'it does not read back as written');
    }
  }
  const unreadable = references.firstUnreadable();
  if (unreadable) throw new UnreadableSnapshotError(`blob ${unreadable.id.slice(0, 16)}`, unreadable.reason);
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
  return { id: previous.id, trees: { root: body.tree, readTree: (id) => readParentTree(repository, id) } };
}

/**
 * A tree of the parent snapshot, or an empty one when it cannot be read (its index file lost, its
 * pack damaged): the parent only spares reading unchanged files, so without it they are read.
 */
async function readParentTree(repository: Repository, id: string): Promise<Tree> {
  if (repository.index.whyUnreadable(id) !== undefined) return { nodes: [] };
  try {
    return await repository.readTree(id);
  } catch (error) {
    if (error instanceof VerificationError) return { nodes: [] };
    throw error;
  }
}

class RepositorySink implements ContentSink {
  bytesRead = 0;
  /**
   * Chunkers not in use. A cluster's thousands of small files would otherwise each allocate a
   * chunker's buffers, garbage that piles up between collections and fragments the heap.
   */
  private readonly idleChunkers: Chunker[] = [];
  private readonly idleFixedCutters: FixedCutter[] = [];

  constructor(
    private readonly repository: Repository,
    private readonly writer: BlobWriter,
    private readonly references: ReferencedBlobs,
    private readonly onProgress: ((progress: BackupProgress) => void) | undefined,
  ) {}

  async storeContent(
    content: AsyncIterable<ContentPiece>,
    previous?: PreviousContent,
    options: StoreContentOptions = {},
  ): Promise<StoredContent> {
    if (options.fixedChunkSize !== undefined) {
      const { min, max } = this.repository.config.chunker;
      const size = Math.min(max, Math.max(min, options.fixedChunkSize));
      const index = this.idleFixedCutters.findIndex((cutter) => cutter.size === size);
      const cutter = index >= 0 ? this.idleFixedCutters.splice(index, 1)[0]! : new FixedCutter(size);
      cutter.reset();
      try {
        return await this.chunk(cutter, content, previous);
      } finally {
        this.idleFixedCutters.push(cutter);
      }
    }
    const chunker =
      this.idleChunkers.pop() ?? new Chunker(this.repository.config.chunker, this.repository.gear);
    chunker.reset();
    try {
      return await this.chunk(chunker, content, previous);
    } finally {
      this.idleChunkers.push(chunker);
    }
  }

  private async chunk(
    chunker: Pick<Chunker, 'push' | 'cut'>,
    content: AsyncIterable<ContentPiece>,
    previous: PreviousContent | undefined,
  ): Promise<StoredContent> {
    const places = previous ? PlacesInPrevious.of(previous, this.repository) : undefined;
    const blobs: string[] = [];
    let size = 0;
    /** Where the next chunk starts in the stream. */
    let offset = 0;
    const save = async (chunk: Chunk | undefined) => {
      if (!chunk) return;
      const length = chunk.data.length;
      const saved = await this.writer.save(BlobType.data, chunk.data, chunk.sketch, places?.at(offset));
      // An unchanged chunk, or the base a changed one was found, shows where this stretch was.
      places?.found(saved.isNew ? saved.base : saved.id, offset);
      blobs.push(saved.id);
      offset += length;
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
    // Every blob a snapshot references is named by one of its trees.
    for (const node of tree.nodes) {
      for (const id of node.content ?? []) this.references.add(id);
      if (node.subtree !== undefined) this.references.add(node.subtree);
    }
    const { id } = await this.writer.save(BlobType.tree, encodeTree(tree));
    this.references.add(id);
    return id;
  }

  reuseContent(content: readonly string[]): boolean {
    return content.every((id) => this.repository.hasReadableCopy(id));
  }
}

/**
 * Where a stream's chunks were in the previous version of the same file. A chunk found unchanged,
 * or the stored chunk a changed one resembles, shows how the two versions line up (rows inserted
 * or deleted before it shift the rest); a changed chunk's predecessor is the previous version's
 * chunk at the corresponding place.
 */
class PlacesInPrevious {
  /** The offset, in the previous version, of each of its blobs. */
  private readonly starts: number[] = [];
  /** Each blob's indexes in the previous version's list. */
  private readonly places = new Map<string, number[]>();
  /** This stream's offset minus the previous version's, as last seen. */
  private shift = 0;

  private constructor(private readonly blobs: PreviousContent) {}

  /** Undefined when a blob of the previous version is not in the index (its length unknown). */
  static of(blobs: PreviousContent, repository: Repository): PlacesInPrevious | undefined {
    const places = new PlacesInPrevious(blobs);
    let at = 0;
    for (const [index, id] of blobs.entries()) {
      const length = repository.index.rawLength(id);
      if (length === undefined) return undefined;
      places.starts.push(at);
      at += length;
      const indexes = places.places.get(id);
      if (indexes) indexes.push(index);
      else places.places.set(id, [index]);
    }
    return places;
  }

  /** The chunk starting at `offset` is, or resembles, `id`: if the previous version has it, there. */
  found(id: string | undefined, offset: number): void {
    const indexes = id === undefined ? undefined : this.places.get(id);
    if (!indexes) return;
    // Of a blob the previous version holds several times, the occurrence nearest where expected.
    const expected = offset - this.shift;
    let nearest = indexes[0]!;
    for (const index of indexes) {
      if (Math.abs(this.starts[index]! - expected) < Math.abs(this.starts[nearest]! - expected))
        nearest = index;
    }
    this.shift = offset - this.starts[nearest]!;
  }

  /** The previous version's blob holding the byte where a chunk starting at `offset` would be. */
  at(offset: number): string | undefined {
    const place = offset - this.shift;
    if (this.blobs.length === 0 || place < 0) return undefined;
    return this.blobs[pieceAt(this.starts, this.blobs.length, place)];
  }
}
