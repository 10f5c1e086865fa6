import {
  ConfigError,
  DamagedWalError,
  KeyError,
  SourceSnapshotNotFoundError,
  WalConflictError,
} from '../errors.ts';
import { BlobType } from '../repository/blob.ts';
import { BlobWriter } from '../repository/blob-writer.ts';
import { shortName, type Repository, type SnapshotFilter } from '../repository/repository.ts';
import type { SnapshotHeader, SnapshotInfo } from '../repository/snapshot.ts';
import { encodeTree, type TreeNode } from '../repository/tree.ts';
import { forEachLimited } from '../util/each-limited.ts';
import { readBlobs } from './read-content.ts';

export interface CopyOptions {
  /** Snapshot ids, unique prefixes or `latest`, among those `filter` selects; none: all of them. */
  snapshots?: string[];
  filter?: SnapshotFilter;
  /** Worker threads compressing and encrypting for the target. */
  threads?: number;
  onProgress?: (progress: CopyProgress) => void;
  /** Called as each snapshot is copied or found in the target already. */
  onSnapshot?: (snapshot: CopiedSnapshot) => void;
  /** Copy the source's WAL files too (the default), so that the target can serve point-in-time recovery. */
  wal?: boolean;
  /** Called as each WAL file is copied, found in the target already, or refused. */
  onWalProgress?: (done: number, total: number) => void;
}

export interface CopyProgress {
  /** The snapshot being copied, 1-based, out of `snapshots`. */
  snapshot: number;
  snapshots: number;
  bytesRead: number;
  bytesNew: number;
}

export interface CopiedSnapshot {
  /** The snapshot in the source repository. */
  source: string;
  /** The snapshot in the target: the new copy, or the one already there. */
  target: string;
  skipped: boolean;
  time: string;
  kind: string;
  name: string;
  /** Bytes of packs and index files this copy added to the target, as its header records (0 when skipped). */
  stored: number;
}

export interface CopyResult {
  snapshots: CopiedSnapshot[];
  snapshotsCopied: number;
  snapshotsSkipped: number;
  /** Blobs written to the target. */
  blobsCopied: number;
  /** Blobs the copied snapshots need that the target had already. */
  blobsSkipped: number;
  /** Plaintext bytes read from the source. */
  bytesRead: number;
  /** Plaintext bytes of the blobs written to the target. */
  bytesNew: number;
  /** Bytes of packs and index files added to the target. */
  stored: number;
  /** WAL files written to the target, and those it held already with the same content. */
  walFilesCopied: number;
  walFilesSkipped: number;
  /** Bytes of content of the WAL files copied, and bytes their objects take in the target. */
  walBytesCopied: number;
  walStored: number;
  /**
   * WAL files not copied: damaged or not trusted in the source (`source`), or held in the target
   * with other content or damaged there (`target`). Any of them makes the copy a failure.
   */
  walProblems: WalCopyProblem[];
  durationMs: number;
}

export interface WalCopyProblem {
  name: string;
  repository: 'source' | 'target';
  message: string;
}

/** WAL files in flight at once: each is up to ~16 MiB, held whole while it is read, checked and written. */
const WAL_COPIES = 4;

/**
 * Copies snapshots from `source` into `target`, with every blob they need that the target lacks,
 * and then (unless `wal` is false) every WAL file of the source (copyWal).
 * Blob ids are keyed by each repository's secret, so each blob's plaintext is read from the source
 * (deltas resolved), saved under the target's id by the target's writer, and trees are rewritten
 * with the target's ids; chunk boundaries stay the source's. Each copied snapshot is written after
 * its packs and index files are durable, so an interrupted copy leaves no partial snapshot, and a
 * snapshot whose origin is in the target already is skipped, so running it again is harmless.
 */
export async function copySnapshots(
  source: Repository,
  target: Repository,
  options: CopyOptions = {},
): Promise<CopyResult> {
  const started = Date.now();
  if (!source.canRead) {
    throw new KeyError('the source repository is open with a write-only key, which cannot read snapshots', {
      hint: 'Give the source a full key (its password or identity file); the target needs only a write-only key.',
    });
  }
  return source.withReadLock('copy from', () =>
    target.withLock('copy to', { exclusive: false }, async () => {
      const { snapshots: all, damaged } = await source.scanSnapshots();
      for (const snapshot of damaged)
        source.onWarning(`damaged snapshot ${shortName(snapshot.id)} is not copied: ${snapshot.problem}`);
      const filtered = options.filter && Object.keys(options.filter).length > 0;
      const selected = selectSnapshots(
        filtered ? await source.listSnapshots(options.filter) : all,
        options.snapshots ?? [],
        source.backend.location,
      );
      const inTarget = new Map<string, string>();
      for (const snapshot of await target.listSnapshots()) inTarget.set(originOf(snapshot), snapshot.id);
      // Indexes are loaded and workers started only once a snapshot needs copying: a run that
      // finds everything in the target already reads no more than the snapshot lists.
      let session: { writer: BlobWriter; copier: TreeCopier } | undefined;
      const start = async () => {
        await source.loadIndex();
        await target.loadIndex();
        // Nothing copied may depend on a target pack that is missing or truncated.
        await target.findMissingOrTruncatedPacks();
        const writer = new BlobWriter(
          target,
          options.threads === undefined ? {} : { threads: options.threads },
        );
        session = { writer, copier: new TreeCopier(source, target, writer) };
        return session;
      };
      try {
        const copied: CopiedSnapshot[] = [];
        for (const [position, snapshot] of selected.entries()) {
          const origin = originOf(snapshot);
          const existing = inTarget.get(origin);
          const { time, kind, name } = snapshot.header;
          if (existing) {
            const result = {
              source: snapshot.id,
              target: existing,
              skipped: true,
              time,
              kind,
              name,
              stored: 0,
            };
            copied.push(result);
            options.onSnapshot?.(result);
            continue;
          }
          const { writer, copier } = session ?? (await start());
          copier.onProgress = (bytesRead) =>
            options.onProgress?.({
              snapshot: position + 1,
              snapshots: selected.length,
              bytesRead,
              bytesNew: writer.stats.newRawBytes,
            });
          const storedBefore = writer.stats.storedBytes;
          const { body } = await source.loadSnapshot(snapshot.id);
          const tree = await copier.copyTree(body.tree);
          await writer.flush();
          const parentOrigin = parentOriginOf(snapshot.header.parent, all);
          const parent = parentOrigin === undefined ? undefined : inTarget.get(parentOrigin);
          const { parent: _sourceParent, ...kept } = snapshot.header;
          const header: SnapshotHeader = {
            ...kept,
            ...(parent ? { parent } : {}),
            stored: writer.stats.storedBytes - storedBefore,
            origin,
          };
          const saved = await target.saveSnapshot(header, { ...body, tree });
          inTarget.set(origin, saved.id);
          const result = {
            source: snapshot.id,
            target: saved.id,
            skipped: false,
            time,
            kind,
            name,
            stored: header.stored,
          };
          copied.push(result);
          options.onSnapshot?.(result);
        }
        const stored = copied.reduce((sum, snapshot) => sum + snapshot.stored, 0);
        const wal = options.wal === false ? undefined : await copyWal(source, target, options);
        return {
          snapshots: copied,
          snapshotsCopied: copied.filter((snapshot) => !snapshot.skipped).length,
          snapshotsSkipped: copied.filter((snapshot) => snapshot.skipped).length,
          blobsCopied: session?.writer.stats.newBlobs ?? 0,
          blobsSkipped: session?.copier.blobsSkipped ?? 0,
          bytesRead: session?.copier.bytesRead ?? 0,
          bytesNew: session?.writer.stats.newRawBytes ?? 0,
          stored,
          walFilesCopied: wal?.copied ?? 0,
          walFilesSkipped: wal?.skipped ?? 0,
          walBytesCopied: wal?.bytes ?? 0,
          walStored: wal?.stored ?? 0,
          walProblems: wal?.problems ?? [],
          durationMs: Date.now() - started,
        };
      } finally {
        await session?.writer.close();
      }
    }),
  );
}

/**
 * Every WAL file of the source, read and verified there as a fetch does (trusted writer, content
 * decrypted and checked against its mac), then pushed to the target through its own store: sealed
 * and signed with the target's keys, keeping when and from where it was first archived. A file the
 * target holds with the same content is skipped (the push finds it so); one that is damaged in
 * the source, or held in the target with other content, is a problem and the rest go on.
 */
async function copyWal(
  source: Repository,
  target: Repository,
  options: CopyOptions,
): Promise<{ copied: number; skipped: number; bytes: number; stored: number; problems: WalCopyProblem[] }> {
  const names = (await source.wal.list()).map(({ name }) => name);
  const found = { copied: 0, skipped: 0, bytes: 0, stored: 0, problems: [] as WalCopyProblem[] };
  let done = 0;
  await forEachLimited(names, WAL_COPIES, async (name) => {
    try {
      let verified;
      try {
        verified = await source.wal.verify(name, { content: true });
      } catch (error) {
        if (!(error instanceof DamagedWalError)) throw error;
        found.problems.push({ name, repository: 'source', message: error.message });
        return;
      }
      // Removed from the source (a forget or prune) since it was listed.
      if (!verified) return;
      const { header, content } = verified;
      try {
        const pushed = await target.wal.push(name, content, {
          pushed: { time: header.time, host: header.host },
        });
        if (pushed.stored) {
          found.copied++;
          found.bytes += content.length;
          found.stored += pushed.storedSize;
        } else found.skipped++;
      } catch (error) {
        if (!(error instanceof WalConflictError)) throw error;
        found.problems.push({ name, repository: 'target', message: error.message });
      }
    } finally {
      options.onWalProgress?.(++done, names.length);
    }
  });
  found.problems.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return found;
}

/** The snapshot a backup first wrote, of which this one may be a copy. */
function originOf(snapshot: SnapshotInfo): string {
  return snapshot.header.origin ?? snapshot.id;
}

function parentOriginOf(parent: string | undefined, all: readonly SnapshotInfo[]): string | undefined {
  const found = parent === undefined ? undefined : all.find((snapshot) => snapshot.id === parent);
  return found ? originOf(found) : undefined;
}

/** The snapshots `references` name (all when none), oldest first so that parents come before children. */
function selectSnapshots(
  candidates: SnapshotInfo[],
  references: readonly string[],
  location: string,
): SnapshotInfo[] {
  if (references.length === 0) return candidates;
  const chosen = new Set<SnapshotInfo>();
  for (const reference of references) {
    if (reference === 'latest') {
      const latest = candidates.at(-1);
      if (!latest) throw new SourceSnapshotNotFoundError(reference, location);
      chosen.add(latest);
      continue;
    }
    const found = candidates.filter((snapshot) => snapshot.id.startsWith(reference.toLowerCase()));
    if (found.length === 0) throw new SourceSnapshotNotFoundError(reference, location);
    if (found.length > 1) {
      throw new ConfigError(`snapshot id ${reference} is ambiguous in the source repository at ${location}`, {
        hint: 'Give more characters of the id.',
      });
    }
    chosen.add(found[0]!);
  }
  return candidates.filter((snapshot) => chosen.has(snapshot));
}

/** Copies trees and the blobs they name, remembering what it did for the next snapshot of the run. */
class TreeCopier {
  blobsSkipped = 0;
  bytesRead = 0;
  onProgress: ((bytesRead: number) => void) | undefined;
  /** Source blob id → target blob id, for every blob already copied or found in this run. */
  private readonly copied = new Map<string, string>();
  /** The two repositories share their blob-id key (one is a mirror of the other): ids carry over. */
  private readonly sameIds: boolean;

  constructor(
    private readonly source: Repository,
    private readonly target: Repository,
    private readonly writer: BlobWriter,
  ) {
    const probe = Buffer.alloc(0);
    this.sameIds = source.blobId(probe) === target.blobId(probe);
  }

  /** Copies the tree `id` of the source, and everything below it; returns its id in the target. */
  async copyTree(id: string): Promise<string> {
    const done = this.copied.get(id);
    if (done) return done;
    const tree = await this.source.readTree(id);
    await this.copyContent(tree.nodes.flatMap((node) => node.content ?? []));
    const nodes: TreeNode[] = [];
    for (const node of tree.nodes) {
      const rewritten = { ...node };
      if (node.content) rewritten.content = node.content.map((blob) => this.copied.get(blob)!);
      if (node.subtree) rewritten.subtree = await this.copyTree(node.subtree);
      nodes.push(rewritten);
    }
    // Even when the ids carry over, the tree is saved through the writer: the target may lack it.
    const saved = await this.writer.save(BlobType.tree, encodeTree({ nodes }));
    this.record(id, saved);
    return saved.id;
  }

  /** Copies the data blobs among `ids` that this run has not met yet, reading a few ahead. */
  private async copyContent(ids: readonly string[]): Promise<void> {
    const toRead: string[] = [];
    const queued = new Set<string>();
    for (const id of ids) {
      if (this.copied.has(id) || queued.has(id)) continue;
      if (this.sameIds && this.target.index.has(id)) {
        this.record(id, { id, isNew: false });
        continue;
      }
      queued.add(id);
      toRead.push(id);
    }
    let next = 0;
    for await (const data of readBlobs(this.source, toRead)) {
      this.bytesRead += data.length;
      this.record(toRead[next++]!, await this.writer.save(BlobType.data, data));
      this.onProgress?.(this.bytesRead);
    }
  }

  private record(sourceId: string, saved: { id: string; isNew: boolean }): void {
    this.copied.set(sourceId, saved.id);
    if (!saved.isNew) this.blobsSkipped++;
  }
}
