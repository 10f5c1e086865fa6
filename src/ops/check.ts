import { createHash } from 'node:crypto';
import { DamagedBlobError } from '../errors.ts';
import { packName } from '../repository/blob.ts';
import type { IndexedBlob, IndexFileContent } from '../repository/master-index.ts';
import { parsePackTable } from '../repository/pack-format.ts';
import { objectName } from '../repository/layout.ts';
import { isSnapshotId, NOT_A_SNAPSHOT, type Repository } from '../repository/repository.ts';

export interface CheckOptions {
  /** Download and verify every pack (1), a fraction of them (0 < f < 1), or none (0, the default). */
  readData?: number;
  onProgress?: (message: string) => void;
}

export interface CheckProblem {
  object: string;
  message: string;
  /** Ids of the snapshots whose data the problem touches. */
  snapshots: string[];
}

export interface CheckResult {
  snapshots: number;
  indexFiles: number;
  packs: number;
  blobs: number;
  packsRead: number;
  /**
   * Packs in storage that no index lists: left by interrupted backups, or listed by an index file
   * that was lost, and then their blobs are missing from the index (a later `repair index`
   * will index them again).
   */
  unreferencedPacks: number;
  unreferencedBytes: number;
  problems: CheckProblem[];
}

/**
 * Verifies the repository's structure (every snapshot's trees and blobs are indexed, every
 * indexed pack exists with the right size, every file matches its name) and, with `readData`,
 * decrypts and authenticates the blobs themselves.
 */
export async function check(repository: Repository, options: CheckOptions = {}): Promise<CheckResult> {
  const lock = await repository.readLock('check');
  try {
    return await new Checker(repository, options).run();
  } finally {
    await lock.release();
  }
}

class Checker {
  private readonly problems: CheckProblem[] = [];
  /** Which snapshots use each blob, to name the snapshots a damaged blob affects. */
  private readonly users = new Map<string, Set<string>>();
  private snapshotCount = 0;
  /** Packs the index lists that storage lacks or holds at another size. */
  private readonly unreadablePacks = new Set<string>();
  /** Blobs that failed authentication, by the pack holding them. */
  private readonly damagedBlobs = new Map<string, Set<string>>();

  constructor(
    private readonly repository: Repository,
    private readonly options: CheckOptions,
  ) {}

  private report(object: string, message: string, snapshots: Iterable<string> = []): void {
    this.problems.push({ object, message, snapshots: [...new Set(snapshots)].sort() });
  }

  async run(): Promise<CheckResult> {
    const backend = this.repository.backend;
    const progress = this.options.onProgress ?? (() => undefined);
    progress('checking index files');
    let indexFiles = 0;
    for await (const object of backend.list('index/')) {
      indexFiles++;
      const bytes = await backend.get(object.name);
      if (!nameMatches(object.name, bytes)) {
        this.report(object.name, 'index file content does not match its name (damaged)');
        continue;
      }
      let content: IndexFileContent;
      try {
        content = await this.repository.readIndexFile(object.name, bytes);
      } catch (error) {
        this.report(object.name, messageOf(error));
        continue;
      }
      this.repository.index.addIndexFile(object.name, content);
    }

    progress('checking packs');
    const stored = new Map<string, number>();
    for await (const object of backend.list('data/')) stored.set(object.name, object.size);
    for (const pack of this.repository.index.packIdList()) {
      const size = stored.get(packName(pack));
      const expected = this.repository.index.pack(pack)!.size;
      if (size === expected) continue;
      this.unreadablePacks.add(pack);
      if (size === undefined) this.report(packName(pack), 'pack listed in the index is missing');
      else this.report(packName(pack), `pack is ${size} bytes, the index says ${expected}`);
    }
    const indexedNames = new Set([...this.repository.index.packIdList()].map(packName));
    const unreferenced = [...stored].filter(([name]) => !indexedNames.has(name));

    progress('checking snapshots');
    await this.checkSnapshots();
    this.attributeMissingPacks();

    let packsRead = 0;
    const fraction = this.options.readData ?? 0;
    if (fraction > 0 && this.repository.canRead) {
      const packs = [...this.repository.index.packIdList()].filter(
        (pack) => stored.get(packName(pack)) === this.repository.index.pack(pack)!.size,
      );
      const chosen = fraction >= 1 ? packs : sample(packs, Math.max(1, Math.ceil(packs.length * fraction)));
      const blobsByPack = new Map<string, [string, IndexedBlob][]>();
      for (const [blob, entry] of this.repository.index.everyLocation()) {
        let blobs = blobsByPack.get(entry.pack);
        if (!blobs) blobsByPack.set(entry.pack, (blobs = []));
        blobs.push([blob, entry]);
      }
      for (const pack of chosen) {
        progress(`reading pack ${++packsRead}/${chosen.length}`);
        await this.readPack(pack, blobsByPack.get(pack) ?? []);
      }
      this.reportDamagedBlobs();
    }

    return {
      snapshots: this.snapshotCount,
      indexFiles,
      packs: this.repository.index.packCount,
      blobs: this.repository.index.blobCount,
      packsRead,
      unreferencedPacks: unreferenced.length,
      unreferencedBytes: unreferenced.reduce((sum, [, size]) => sum + size, 0),
      problems: this.problems,
    };
  }

  /**
   * Every snapshot file: damaged, untrusted (not signed by a current writer, nor endorsed) and
   * stray ones reported, those this client saw before and that have disappeared too; then, with
   * a full key, every trusted snapshot's trees walked.
   */
  private async checkSnapshots(): Promise<void> {
    const { snapshots, damaged, disappeared } = await this.repository.scanSnapshots();
    this.snapshotCount = snapshots.length + damaged.filter((snapshot) => isSnapshotId(snapshot.id)).length;
    for (const { id, problem } of damaged) {
      const name = objectName('snapshot', id);
      if (!isSnapshotId(id)) this.report(name, NOT_A_SNAPSHOT);
      else this.report(name, problem, [id]);
    }
    for (const { id, header } of disappeared) {
      this.report(
        objectName('snapshot', id),
        `snapshot of ${header.time} (${header.kind} ${header.name} from ${header.host}) was listed here before and has disappeared`,
        [id],
      );
    }
    if (!this.repository.canRead) return;
    const seenTrees = new Set<string>();
    for (const { id } of snapshots) {
      let tree: string;
      try {
        tree = (await this.repository.loadSnapshot(id)).body.tree;
      } catch (error) {
        this.report(objectName('snapshot', id), messageOf(error), [id]);
        continue;
      }
      await this.walkTree(tree, id, seenTrees);
    }
  }

  /** Records every blob the snapshot uses and reports the ones the index lacks. */
  private async walkTree(root: string, snapshot: string, seenTrees: Set<string>): Promise<void> {
    const stack = [root];
    while (stack.length > 0) {
      const treeId = stack.pop()!;
      this.use(treeId, snapshot);
      if (!this.repository.index.has(treeId)) {
        this.report(`tree ${treeId.slice(0, 16)}`, 'tree blob is not in the index', [snapshot]);
        continue;
      }
      const firstVisit = !seenTrees.has(treeId);
      seenTrees.add(treeId);
      let tree;
      try {
        tree = await this.repository.readTree(treeId);
      } catch (error) {
        this.report(`tree ${treeId.slice(0, 16)}`, messageOf(error), [snapshot]);
        continue;
      }
      for (const node of tree.nodes) {
        if (node.subtree) stack.push(node.subtree);
        for (const blob of node.content ?? []) {
          this.use(blob, snapshot);
          const entry = this.repository.index.get(blob);
          if (!entry) {
            if (firstVisit)
              this.report(`blob ${blob.slice(0, 16)}`, 'data blob is not in the index', [snapshot]);
          } else if (entry.base) {
            this.use(entry.base, snapshot);
            if (!this.repository.index.has(entry.base))
              this.report(`blob ${entry.base.slice(0, 16)}`, 'delta base blob is not in the index', [
                snapshot,
              ]);
          }
        }
      }
    }
  }

  private use(blob: string, snapshot: string): void {
    let users = this.users.get(blob);
    if (!users) this.users.set(blob, (users = new Set()));
    users.add(snapshot);
  }

  /** Names the snapshots behind problems found before trees were read (missing or resized packs). */
  private attributeMissingPacks(): void {
    for (const problem of this.problems) {
      if (!problem.object.startsWith('data/') || problem.snapshots.length > 0) continue;
      const pack = problem.object.slice(problem.object.lastIndexOf('/') + 1);
      const blobs = [];
      for (const [blob, entry] of this.repository.index.everyLocation())
        if (entry.pack === pack) blobs.push(blob);
      problem.snapshots = this.affectedBy(blobs);
    }
  }

  /** The snapshots that need one of these blobs and find no intact copy of it. */
  private affectedBy(blobs: Iterable<string>): string[] {
    const snapshots = new Set<string>();
    for (const blob of blobs) {
      if (this.hasIntactCopy(blob)) continue;
      for (const user of this.users.get(blob) ?? []) snapshots.add(user);
    }
    return [...snapshots].sort();
  }

  /** Whether a copy of the blob (and of its delta base) is in a pack not found missing, resized or damaged there. */
  private hasIntactCopy(blob: string, asBase = false): boolean {
    return this.repository.index
      .locations(blob)
      .some(
        (copy) =>
          !this.unreadablePacks.has(copy.pack) &&
          !this.damagedBlobs.get(copy.pack)?.has(blob) &&
          (copy.base === undefined || (!asBase && this.hasIntactCopy(copy.base, true))),
      );
  }

  /**
   * Authenticates every blob stored in the pack. A delta whose base fails is the base's pack's
   * damage, recorded there: each damaged pack is reported once, after all are read.
   */
  private async readPack(pack: string, blobs: readonly [string, IndexedBlob][]): Promise<void> {
    const name = packName(pack);
    const bytes = await this.repository.backend.get(name);
    const intact = nameMatches(name, bytes);
    let blobsIntact = true;
    for (const [blob, entry] of blobs) {
      try {
        await this.repository.decodeBlob(
          blob,
          entry,
          bytes.subarray(entry.offset, entry.offset + entry.length),
        );
      } catch (error) {
        if (!(error instanceof DamagedBlobError)) throw error;
        if (error.pack === pack) blobsIntact = false;
        let damaged = this.damagedBlobs.get(error.pack);
        if (!damaged) this.damagedBlobs.set(error.pack, (damaged = new Set()));
        damaged.add(error.blob);
      }
    }
    let tableReadable = true;
    try {
      parsePackTable(bytes, this.repository.packKey(pack), pack);
    } catch {
      tableReadable = false;
    }
    if (blobsIntact && (!intact || !tableReadable)) {
      this.report(
        name,
        `pack content does not match its name (damaged ${tableReadable ? 'header' : 'trailer'}; every blob still decrypts)`,
      );
    }
  }

  /** One problem per pack with blobs that failed authentication, unless it was reported missing or resized. */
  private reportDamagedBlobs(): void {
    for (const [pack, blobs] of this.damagedBlobs) {
      if (this.unreadablePacks.has(pack)) continue;
      const ids = [...blobs].map((blob) => blob.slice(0, 16)).join(', ');
      this.report(
        packName(pack),
        `${blobs.size === 1 ? '1 blob fails' : `${blobs.size} blobs fail`} authentication: ${ids}`,
        this.affectedBy(blobs),
      );
    }
  }
}

function nameMatches(name: string, bytes: Uint8Array): boolean {
  return createHash('sha256').update(bytes).digest('hex') === name.slice(name.lastIndexOf('/') + 1);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A uniform random sample of `count` items. */
function sample<T>(items: readonly T[], count: number): T[] {
  const copy = [...items];
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [copy[i], copy[j]] = [copy[j]!, copy[i]!];
  }
  return copy.slice(0, count);
}
