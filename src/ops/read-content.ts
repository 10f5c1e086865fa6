import { ConfigError, VerificationError } from '../errors.ts';
import type { Repository } from '../repository/repository.ts';
import type { TreeNode } from '../repository/tree.ts';
import { pieceAt } from '../util/search.ts';

/** Blob reads kept in flight ahead of the writer, so storage latency overlaps decryption. */
const READ_AHEAD = 4;

/** Yields the plaintext of `ids` in order, reading a few ahead. */
export async function* readBlobs(
  repository: Pick<Repository, 'readBlob'>,
  ids: readonly string[],
): AsyncGenerator<Buffer> {
  const pending: Promise<Buffer>[] = [];
  let next = 0;
  const fill = () => {
    while (pending.length < READ_AHEAD && next < ids.length) {
      const read = repository.readBlob(ids[next++]!);
      read.catch(() => undefined); // awaited below, in order; this only silences early rejections
      pending.push(read);
    }
  };
  fill();
  while (pending.length > 0) {
    const blob = await pending.shift()!;
    fill();
    yield blob;
  }
}

/**
 * A file's content blobs with where each starts in the file, from the index's lengths, so that
 * any byte range of it can be read without reading the blobs before it.
 */
export class ContentRanges {
  private constructor(
    private readonly repository: Pick<Repository, 'readBlob'>,
    private readonly ids: readonly string[],
    /** starts[i] is the offset of blob i; starts[ids.length] is the file's length. */
    private readonly starts: Float64Array,
  ) {}

  static async of(
    repository: Pick<Repository, 'readBlob' | 'blobLength'>,
    ids: readonly string[],
  ): Promise<ContentRanges> {
    const starts = new Float64Array(ids.length + 1);
    for (const [i, id] of ids.entries()) starts[i + 1] = starts[i]! + (await repository.blobLength(id));
    return new ContentRanges(repository, ids, starts);
  }

  /** Yields bytes [start, end), reading only the blobs that hold them. */
  async *read(start: number, end: number): AsyncGenerator<Buffer> {
    const size = this.starts[this.ids.length]!;
    if (end > size) {
      throw new VerificationError(`bytes ${start}..${end} lie past the end of the content (${size} bytes)`);
    }
    const first = pieceAt(this.starts, this.ids.length, start);
    let last = first;
    while (last < this.ids.length && this.starts[last]! < end) last++;
    let position = this.starts[first]!;
    for await (const blob of readBlobs(this.repository, this.ids.slice(first, last))) {
      const from = Math.max(0, start - position);
      const to = Math.min(blob.length, end - position);
      position += blob.length;
      if (to > from) yield from === 0 && to === blob.length ? blob : blob.subarray(from, to);
    }
  }
}

/**
 * Finds the file node at `path` in a snapshot tree. Without a path, the snapshot must hold
 * exactly one file at its root (as stdin snapshots do).
 */
export async function findFile(
  repository: Repository,
  rootTree: string,
  path: string | undefined,
): Promise<TreeNode> {
  let tree = await repository.readTree(rootTree);
  if (path === undefined) {
    const files = tree.nodes.filter((node) => node.type === 'file');
    if (tree.nodes.length === 1 && files.length === 1) return files[0]!;
    throw new ConfigError('this snapshot holds more than one file', {
      hint: 'Name the file to print: strongbox cat ID PATH.',
    });
  }
  const parts = path.split('/').filter((part) => part !== '');
  for (const [i, part] of parts.entries()) {
    const node = tree.nodes.find((candidate) => candidate.name === part);
    if (!node) break;
    if (i === parts.length - 1) {
      if (node.type !== 'file') throw new ConfigError(`${path} is a ${node.type}, not a file`);
      return node;
    }
    if (node.type !== 'dir' || !node.subtree) break;
    tree = await repository.readTree(node.subtree);
  }
  throw new ConfigError(`${path} is not in this snapshot`, {
    hint: 'Paths are absolute, as backed up (e.g. /etc/myapp/app.conf).',
  });
}

/** The content of one file of a snapshot, as a stream of buffers. */
export async function* catFile(
  repository: Repository,
  snapshot: string,
  path?: string,
): AsyncGenerator<Buffer> {
  const { body } = await repository.loadSnapshot(snapshot);
  await repository.loadIndex();
  const node = await findFile(repository, body.tree, path);
  yield* readBlobs(repository, node.content ?? []);
}
