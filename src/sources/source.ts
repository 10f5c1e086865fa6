import type { Tree } from '../repository/tree.ts';

/**
 * What a backup source sees of the repository: somewhere to put content and trees. Sources
 * produce streams and metadata; they know nothing of packs, keys or storage.
 */
export const CHUNK_BOUNDARY: unique symbol = Symbol('strongbox.chunk-boundary');

/** A piece of file content, or a marker where the source wants a chunk to end (a record end, say). */
export type ContentPiece = Uint8Array | typeof CHUNK_BOUNDARY;

export interface StoredContent {
  blobs: string[];
  size: number;
}

export interface StoreContentOptions {
  /**
   * Cut every this many bytes (and at CHUNK_BOUNDARY) instead of where the content says: for
   * content laid out in fixed places, such as a relation file's pages, whose changed stretches
   * stay where they were. Within the repository's chunk size limits.
   */
  fixedChunkSize?: number;
}

export interface ContentSink {
  /**
   * Stores a stream of content. Each piece is consumed before the next is requested and no
   * reference to it is kept, so a source may hand out the same read buffer every time.
   */
  storeContent(
    content: AsyncIterable<ContentPiece>,
    previous?: PreviousContent,
    options?: StoreContentOptions,
  ): Promise<StoredContent>;
  storeTree(tree: Tree): Promise<string>;
  /**
   * Asks to reuse a file's content from the parent snapshot without reading it: false when a
   * blob of it can no longer be read through the index (its index file lost, say), and then the
   * source must store the content again.
   */
  reuseContent(content: readonly string[], size: number): boolean;
}

/**
 * The content blobs the same file had in the parent snapshot: a changed chunk is best
 * delta-encoded against the one at its place there.
 */
export type PreviousContent = readonly string[];

/** The content of the file `name` at the root of the parent snapshot, if it has one there. */
export async function previousContent(
  parent: ParentTrees | undefined,
  name: string,
): Promise<PreviousContent | undefined> {
  if (!parent) return undefined;
  const node = (await parent.readTree(parent.root)).nodes.find((candidate) => candidate.name === name);
  return node?.type === 'file' ? node.content : undefined;
}

/** Trees of the previous snapshot of the same source, when the key can read them. */
export interface ParentTrees {
  root: string;
  readTree(id: string): Promise<Tree>;
}

export interface SourceResult {
  tree: string;
  /** Bytes of content the snapshot holds. */
  size: number;
  paths: string[];
  summary: Record<string, number>;
  details?: Record<string, unknown>;
}

export interface BackupSource {
  /** files, stdin, postgres… */
  readonly kind: string;
  /** The snapshot's short name: a file name, a database, the first path. */
  readonly name: string;
  run(sink: ContentSink, parent: ParentTrees | undefined): Promise<SourceResult>;
  /**
   * Stops what a source started before it was run (a dump begun while the repository opened),
   * when it will not be run after all. Does nothing once `run` was called: `run` ends it.
   */
  abandon?(): Promise<void>;
}
