import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { DamagedBlobError, DamagedWalError, ExitCode, StrongboxError, VerificationError } from '../errors.ts';
import { ObjectNotFoundError } from '../storage/backend.ts';
import { packName } from '../repository/blob.ts';
import { folderOf, objectName } from '../repository/layout.ts';
import { locationKey, type IndexedBlob, type IndexFileContent } from '../repository/master-index.ts';
import { PackTable, type PackTableFailure } from '../repository/pack-tables.ts';
import { isSnapshotId, NOT_A_SNAPSHOT, type Repository } from '../repository/repository.ts';
import { decodeTree, type Tree } from '../repository/tree.ts';
import { forEachLimited } from '../util/each-limited.ts';
import { count } from '../util/plural.ts';

export interface CheckOptions {
  /** Download and verify every pack (1), a fraction of them (0 < f < 1), or none (0, the default). */
  readData?: number;
  onProgress?: (message: string) => void;
  /**
   * Record the outcome in the repository as a check result (full keys; docs/FORMAT.md,
   * "Results"), whatever it is: true unless false, or unless the repository is read without a
   * lock (`readLocking.skip`, a repository not to be written).
   */
  record?: boolean;
}

/** The checks `check` runs; which of them can run depends on the key and the options. */
export type CheckName =
  /** Every index file decrypts and matches its name. */
  | 'index-files'
  /** Every pack an index file lists is stored, at a size it is listed with. */
  | 'pack-sizes'
  /** Every snapshot file matches its name. */
  | 'snapshot-files'
  /** Every snapshot's body and trees read back, and every blob they use is indexed. */
  | 'snapshot-contents'
  /** Every pack's own table authenticates and agrees with the index entries that name the pack. */
  | 'pack-tables'
  /** Every blob (or those of a sample of packs) decrypts and matches its id. */
  | 'blob-data'
  /** Every WAL object is signed by a trusted writer, and its header opens, names it and bounds its frames. */
  | 'wal-files'
  /** Every WAL file's content (or a sample's) decrypts and matches its header's mac. */
  | 'wal-data';

/** What a write-only key cannot check: everything sealed to the full keys' identities. */
const NEEDS_FULL_KEY: readonly CheckName[] = ['snapshot-contents', 'pack-tables', 'blob-data', 'wal-data'];

/** WAL objects downloaded at once: up to ~16 MiB each, and a few times that while one decrypts. */
const WAL_READS = 4;

/** What is wrong with a pack an index file lists, beyond its being missing or of another size. */
export type PackProblemCause =
  /** Index entries (or listings of the pack) say what the pack's own table does not. */
  | 'index-disagrees'
  /** No data key this repository's identities unwrap opens the pack's table. */
  | 'unauthenticated-table'
  /** Blobs in it fail authentication. */
  | 'blobs-fail-authentication';

/** Why a pack no index file lists is in storage. */
export type UnindexedPackCause =
  /** Its table authenticates; each blob in it is indexed in another pack or used by no snapshot. */
  | 'interrupted-backup'
  /** Its table authenticates and it holds blobs no index file lists that a snapshot uses (or may use). */
  | 'lost-index-file'
  /** No data key this repository's identities unwrap opens its table: not written for it, or damaged. */
  | 'unauthenticated-table'
  /** Its table authenticates but its blobs do not (with `readData`): forged with a writer's key, or damaged. */
  | 'blobs-fail-authentication'
  /** A write-only key cannot read pack tables. */
  | 'not-examined';

export interface CheckProblem {
  object: string;
  message: string;
  /** Ids of the snapshots whose data the problem touches. */
  snapshots: string[];
  /** For a problem with a pack's content: what is wrong with it. */
  cause?: PackProblemCause;
  /** For a WAL object that is damaged, moved or not trusted: the WAL file's name. */
  walFile?: string;
}

export interface UnindexedPack {
  pack: string;
  size: number;
  cause: UnindexedPackCause;
}

export interface CheckResult {
  snapshots: number;
  indexFiles: number;
  packs: number;
  blobs: number;
  packsRead: number;
  /** WAL objects checked (wal-files), and those whose content was decrypted too (wal-data). */
  walFiles: number;
  walFilesRead: number;
  /** The checks that ran. */
  checks: CheckName[];
  /** What was not checked, and why: a write-only key reads no snapshot contents, pack tables or data. */
  skipped?: { snapshots: number; checks: CheckName[]; reason: 'write-only key' };
  /** Packs in storage that no index lists (`unindexedPacks` says why each is there). */
  unreferencedPacks: number;
  unreferencedBytes: number;
  unindexedPacks: UnindexedPack[];
  problems: CheckProblem[];
}

/**
 * Verifies the repository's structure (every snapshot's trees and blobs are indexed, every
 * indexed pack exists with the right size, every file matches its name) and, with `readData`,
 * decrypts and authenticates the blobs themselves.
 */
export async function check(repository: Repository, options: CheckOptions = {}): Promise<CheckResult> {
  const started = new Date();
  let result: CheckResult;
  try {
    result = await repository.withReadLock('check', () => new Checker(repository, options).run());
  } catch (error) {
    await recordCheck(repository, options, started, { error });
    throw error;
  }
  await recordCheck(repository, options, started, { result });
  return result;
}

/** The check result record, when one is to be written; a failure to write it is only a warning. */
async function recordCheck(
  repository: Repository,
  options: CheckOptions,
  started: Date,
  outcome: { result: CheckResult } | { error: unknown },
): Promise<void> {
  if (options.record === false || !repository.canRead || repository.readLocking.skip) return;
  const found = 'result' in outcome ? outcome.result : undefined;
  const problems = found?.problems.length ?? 0;
  const failure =
    'error' in outcome
      ? failureOf(outcome.error)
      : problems > 0
        ? { exitCode: ExitCode.verification, message: `check found ${count(problems, 'problem')}` }
        : undefined;
  try {
    await repository.recordResult('check', {
      started,
      finished: new Date(),
      host: hostname(),
      result: failure ? 'failure' : 'success',
      exitCode: failure?.exitCode ?? ExitCode.ok,
      ...(failure ? { message: failure.message } : {}),
      readData: options.readData ?? 0,
      problems,
      snapshots: found?.snapshots ?? 0,
      packs: found?.packs ?? 0,
      packsRead: found?.packsRead ?? 0,
    });
  } catch (recordError) {
    repository.onWarning(
      `the check's result was not recorded in the repository: ${recordError instanceof Error ? recordError.message : String(recordError)}`,
    );
  }
}

function failureOf(error: unknown): { exitCode: number; message: string } {
  if (error instanceof StrongboxError) return { exitCode: error.exitCode, message: error.message };
  return { exitCode: ExitCode.general, message: error instanceof Error ? error.message : String(error) };
}

/** The index's listings of one pack's blobs. */
type PackBlobs = [string, IndexedBlob][];

class Checker {
  private readonly problems: CheckProblem[] = [];
  /** Which snapshots use each blob, to name the snapshots a damaged blob affects. */
  private readonly users = new Map<string, Set<string>>();
  private snapshotCount = 0;
  private skippedSnapshots = 0;
  /** The tables of the packs no index file lists, and the blobs in them no index lists, by id. */
  private readonly unindexedTables = new Map<string, PackTable | PackTableFailure>();
  private readonly unindexedBlobs = new Map<string, IndexedBlob>();
  /** A tree found nowhere, or that could not be read: which blobs snapshots use is not all known. */
  private treesMissed = false;
  /** Packs the index lists that storage lacks or holds at another size. */
  private readonly unreadablePacks = new Set<string>();
  /** Blobs that failed authentication, by the pack holding them. */
  private readonly damagedBlobs = new Map<string, Set<string>>();
  /** Listings a pack's own table contradicts (by locationKey), and those packs with what disagreed. */
  private readonly disagreeingCopies = new Set<string>();
  private readonly disagreements = new Map<
    string,
    { blobs: Set<string>; entries: number; listings: number }
  >();
  /** Indexed packs whose table cannot be authenticated, with their listed blobs. */
  private readonly unauthenticatedTables = new Map<string, Set<string>>();

  constructor(
    private readonly repository: Repository,
    private readonly options: CheckOptions,
  ) {}

  private report(
    object: string,
    message: string,
    snapshots: Iterable<string> = [],
    cause?: PackProblemCause,
  ): void {
    this.problems.push({
      object,
      message,
      snapshots: [...new Set(snapshots)].sort(),
      ...(cause ? { cause } : {}),
    });
  }

  async run(): Promise<CheckResult> {
    const backend = this.repository.backend;
    const index = this.repository.index;
    const progress = this.options.onProgress ?? (() => undefined);
    const canRead = this.repository.canRead;
    progress('checking index files');
    let indexFiles = 0;
    const seenIndexFiles = new Set<string>();
    // A prune replacing index files writes the new ones before deleting the old: one gone by the
    // time it is read means listing again finds its replacement.
    for (let vanished = true; vanished;) {
      vanished = false;
      for await (const object of backend.list(folderOf('index'))) {
        if (seenIndexFiles.has(object.name)) continue;
        let bytes: Buffer;
        try {
          bytes = await backend.get(object.name);
        } catch (error) {
          if (!(error instanceof ObjectNotFoundError)) throw error;
          vanished = true;
          continue;
        }
        seenIndexFiles.add(object.name);
        indexFiles++;
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
        index.addIndexFile(object.name, content);
      }
    }

    progress('checking packs');
    // Packs a pending prune deletes may go while this runs: their going is no damage, and what
    // the snapshots need from them the prune copies elsewhere first.
    const leaving = this.repository.pendingPrunePacks;
    const stored = new Map<string, number>();
    for await (const object of backend.list(folderOf('pack'))) stored.set(object.name, object.size);
    for (const pack of index.packIdList()) {
      const size = stored.get(packName(pack));
      const listed = index.pack(pack)!.listings.map((listing) => listing.size);
      if (listed.includes(size!)) continue;
      if (size === undefined && leaving.has(pack)) continue;
      this.unreadablePacks.add(pack);
      if (size === undefined) this.report(packName(pack), 'pack listed in the index is missing');
      else this.report(packName(pack), `pack is ${size} bytes, the index says ${listed.join(' or ')}`);
    }
    const indexedNames = new Set([...index.packIdList()].map(packName));
    const unreferenced = [...stored].filter(([name]) => !indexedNames.has(name));

    if (canRead) {
      progress('reading the tables of packs in no index file');
      await this.readUnindexedTables(unreferenced);
    }
    progress('checking snapshots');
    await this.checkSnapshots();
    this.attributeMissingPacks();

    const checks: CheckName[] = ['index-files', 'pack-sizes', 'snapshot-files'];
    let packsRead = 0;
    let unindexedPacks: UnindexedPack[];
    const fraction = this.options.readData ?? 0;
    if (canRead) {
      checks.push('snapshot-contents', 'pack-tables');
      if (fraction > 0) checks.push('blob-data');
      const packs = [...index.packIdList()].filter(
        (pack) => !this.unreadablePacks.has(pack) && !leaving.has(pack),
      );
      const chosen = share(packs, fraction);
      const blobsByPack = new Map<string, PackBlobs>();
      for (const [blob, entry] of index.everyLocation()) {
        let blobs = blobsByPack.get(entry.pack);
        if (!blobs) blobsByPack.set(entry.pack, (blobs = []));
        blobs.push([blob, entry]);
      }
      // Tables by range for the packs not read whole; a pack read whole brings its own.
      const byRange = packs.filter((pack) => !chosen.has(pack));
      let tablesRead = 0;
      await forEachLimited(byRange, backend.concurrency, async (pack) => {
        progress(`reading pack tables ${++tablesRead}/${byRange.length}`);
        this.compareWithTable(pack, await this.repository.packTable(pack), blobsByPack.get(pack) ?? []);
      });
      for (const pack of chosen) {
        progress(`reading pack ${++packsRead}/${chosen.size}`);
        await this.readPack(pack, blobsByPack.get(pack) ?? []);
      }
      progress('examining packs in no index file');
      unindexedPacks = [];
      for (const [name, size] of unreferenced) {
        const cause = await this.whyUnindexed(name, fraction > 0);
        if (cause) unindexedPacks.push({ pack: name.slice(name.lastIndexOf('/') + 1), size, cause });
      }
      this.reportDamagedBlobs();
      this.reportTableProblems();
    } else {
      unindexedPacks = unreferenced.map(([name, size]) => ({
        pack: name.slice(name.lastIndexOf('/') + 1),
        size,
        cause: 'not-examined' as const,
      }));
    }

    const wal = await this.checkWal(canRead ? fraction : 0);
    checks.push('wal-files');
    if (canRead && fraction > 0) checks.push('wal-data');

    return {
      snapshots: this.snapshotCount,
      indexFiles,
      packs: index.packCount,
      blobs: index.blobCount,
      packsRead,
      walFiles: wal.files,
      walFilesRead: wal.read,
      checks,
      ...(canRead
        ? {}
        : {
            skipped: {
              snapshots: this.skippedSnapshots,
              checks: [...NEEDS_FULL_KEY],
              reason: 'write-only key' as const,
            },
          }),
      unreferencedPacks: unreferenced.length,
      unreferencedBytes: unreferenced.reduce((sum, [, size]) => sum + size, 0),
      unindexedPacks,
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
    if (!this.repository.canRead) {
      this.skippedSnapshots = snapshots.length;
      return;
    }
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

  /**
   * Every WAL object, downloaded whole and judged as a fetch judges it (wal-store.ts); with
   * `fraction` > 0, the content of that part of them decrypted and checked against its mac.
   * An object gone since it was listed was removed by a forget or prune: no damage.
   */
  private async checkWal(fraction: number): Promise<{ files: number; read: number }> {
    const progress = this.options.onProgress ?? (() => undefined);
    const names = (await this.repository.wal.list()).map(({ name }) => name);
    const withContent = share(names, fraction);
    const damaged: [string, string][] = [];
    let files = 0;
    let read = 0;
    let done = 0;
    await forEachLimited(names, WAL_READS, async (name) => {
      progress(`reading WAL files ${++done}/${names.length}`);
      const content = withContent.has(name);
      try {
        const verified = content
          ? await this.repository.wal.verify(name, { content: true })
          : await this.repository.wal.verify(name, { content: false });
        if (!verified) return;
      } catch (error) {
        if (!(error instanceof DamagedWalError)) throw error;
        damaged.push([name, error.problem]);
      }
      files++;
      if (content) read++;
    });
    // In name order, whichever read finished first.
    damaged.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    for (const [walFile, message] of damaged)
      this.problems.push({ object: objectName('wal', walFile), message, snapshots: [], walFile });
    return { files, read };
  }

  /** Records every blob the snapshot uses and reports the ones the index lacks. */
  private async walkTree(root: string, snapshot: string, seenTrees: Set<string>): Promise<void> {
    const index = this.repository.index;
    const stack = [root];
    while (stack.length > 0) {
      const treeId = stack.pop()!;
      this.use(treeId, snapshot);
      const indexed = index.has(treeId);
      if (!indexed) this.report(`tree ${treeId.slice(0, 16)}`, 'tree blob is not in the index', [snapshot]);
      const firstVisit = !seenTrees.has(treeId);
      seenTrees.add(treeId);
      let tree;
      try {
        // A tree in a pack no index file lists (its index file lost) is read from there, so that
        // what the snapshot uses below it is known.
        tree = indexed ? await this.repository.readTree(treeId) : await this.readUnindexedTree(treeId);
        if (!tree) {
          this.treesMissed = true;
          continue;
        }
      } catch (error) {
        this.treesMissed = true;
        this.report(`tree ${treeId.slice(0, 16)}`, messageOf(error), [snapshot]);
        continue;
      }
      for (const node of tree.nodes) {
        if (node.subtree) stack.push(node.subtree);
        for (const blob of node.content ?? []) {
          this.use(blob, snapshot);
          const copies = index.locations(blob);
          if (copies.length === 0) {
            if (firstVisit)
              this.report(`blob ${blob.slice(0, 16)}`, 'data blob is not in the index', [snapshot]);
            continue;
          }
          const bases = copies.flatMap((copy) => (copy.base ? [copy.base] : []));
          for (const base of bases) this.use(base, snapshot);
          // Every copy a delta, and no base indexed: nothing can rebuild the blob.
          if (bases.length === copies.length && !bases.some((base) => index.has(base)))
            this.report(`blob ${bases[0]!.slice(0, 16)}`, 'delta base blob is not in the index', [snapshot]);
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
      if (!problem.object.startsWith(folderOf('pack')) || problem.snapshots.length > 0) continue;
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

  /**
   * Whether a copy of the blob (and of its delta base) is in a pack not found missing, resized or
   * damaged there, in a listing its pack's table does not contradict, in a pack whose table
   * authenticates.
   */
  private hasIntactCopy(blob: string, asBase = false): boolean {
    return this.repository.index
      .locations(blob)
      .some(
        (copy) =>
          !this.unreadablePacks.has(copy.pack) &&
          !this.unauthenticatedTables.has(copy.pack) &&
          !this.damagedBlobs.get(copy.pack)?.has(blob) &&
          !this.disagreeingCopies.has(locationKey(blob, copy)) &&
          (copy.base === undefined || (!asBase && this.hasIntactCopy(copy.base, true))),
      );
  }

  /**
   * Holds what the index says of a pack against the pack's own table: each entry naming the pack,
   * and each listing of the pack as a whole (its size, and the data key its stanzas unwrap to).
   */
  private compareWithTable(pack: string, table: PackTable | PackTableFailure, blobs: PackBlobs): void {
    if (table === 'missing') return;
    if (table === 'unauthenticated') {
      this.unauthenticatedTables.set(pack, new Set(blobs.map(([blob]) => blob)));
      return;
    }
    const disagreeing = new Set<string>();
    let entries = 0;
    for (const [blob, entry] of blobs) {
      if (table.agrees(blob, entry)) continue;
      entries++;
      disagreeing.add(blob);
      this.disagreeingCopies.add(locationKey(blob, entry));
    }
    const listings = this.repository.index
      .pack(pack)!
      .listings.filter(
        (listing) =>
          listing.size !== table.size || !this.repository.unwrapDataKey(listing.keys)?.equals(table.dataKey),
      ).length;
    if (entries > 0 || listings > 0) this.disagreements.set(pack, { blobs: disagreeing, entries, listings });
  }

  /**
   * Authenticates every blob stored in the pack, after its table. A delta whose base fails is the
   * base's pack's damage, recorded there: each damaged pack is reported once, after all are read.
   */
  private async readPack(pack: string, blobs: PackBlobs): Promise<void> {
    const name = packName(pack);
    const bytes = await this.repository.backend.get(name);
    const intact = nameMatches(name, bytes);
    const table = this.repository.packTableOf(pack, bytes);
    this.compareWithTable(pack, table, blobs);
    let blobsIntact = true;
    for (const [blob, entry] of blobs) {
      // What the table contradicts is not in this pack: there is nothing of it to read.
      if (this.disagreeingCopies.has(locationKey(blob, entry))) continue;
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
    const tableReadable = table instanceof PackTable;
    if (blobsIntact && (!intact || !tableReadable)) {
      // Reported here, with what still reads, rather than as a table that does not authenticate.
      this.unauthenticatedTables.delete(pack);
      this.report(
        name,
        `pack content does not match its name (damaged ${tableReadable ? 'header' : 'trailer'}; every blob still decrypts)`,
      );
    }
  }

  private async readUnindexedTables(unreferenced: readonly [string, number][]): Promise<void> {
    await forEachLimited(unreferenced, this.repository.backend.concurrency, async ([name, size]) => {
      const pack = name.slice(name.lastIndexOf('/') + 1);
      const table = await this.repository.packTable(pack, size);
      this.unindexedTables.set(pack, table);
      if (!(table instanceof PackTable)) return;
      for (const entry of table.entries)
        if (!this.repository.index.has(entry.id)) this.unindexedBlobs.set(entry.id, { ...entry, pack });
    });
  }

  /** A tree no index lists, from a pack no index lists; undefined when there is none. */
  private async readUnindexedTree(id: string): Promise<Tree | undefined> {
    const copy = this.unindexedBlobs.get(id);
    const table = copy && this.unindexedTables.get(copy.pack);
    if (!copy || !(table instanceof PackTable)) return undefined;
    const sealed = await this.repository.backend.getRange(packName(copy.pack), copy.offset, copy.length);
    return decodeTree(await this.repository.decodeBlob(id, copy, sealed, [table.dataKey]), id);
  }

  /**
   * Why a pack no index file lists is in storage: its table tells whether a writer of this
   * repository made it, its blobs whether another pack or no snapshot holds them, and (with
   * `readData`) reading them whether they are what their ids say.
   */
  private async whyUnindexed(name: string, readData: boolean): Promise<UnindexedPackCause | undefined> {
    const pack = name.slice(name.lastIndexOf('/') + 1);
    const table = this.unindexedTables.get(pack);
    if (table === undefined || table === 'missing') return undefined;
    if (table === 'unauthenticated') return 'unauthenticated-table';
    const index = this.repository.index;
    // A blob no index lists that a snapshot uses, or may use below a tree that could not be read.
    const used = (id: string) => this.users.has(id) || this.treesMissed;
    if (table.entries.some((entry) => !index.has(entry.id) && used(entry.id))) return 'lost-index-file';
    if (!readData) return 'interrupted-backup';
    let bytes: Buffer;
    try {
      bytes = await this.repository.backend.get(name);
    } catch (error) {
      // Deleted since it was listed: a prune removing what a killed writer left.
      if (error instanceof ObjectNotFoundError) return 'interrupted-backup';
      throw error;
    }
    for (const entry of table.entries) {
      try {
        await this.repository.decodeBlob(
          entry.id,
          { ...entry, pack },
          bytes.subarray(entry.offset, entry.offset + entry.length),
          [table.dataKey],
        );
      } catch (error) {
        // A delta whose base is no longer indexed proves nothing either way.
        if (error instanceof DamagedBlobError && error.pack === pack) return 'blobs-fail-authentication';
        if (!(error instanceof VerificationError)) throw error;
      }
    }
    return 'interrupted-backup';
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
        'blobs-fail-authentication',
      );
    }
  }

  /** One problem per pack whose table contradicts the index, or cannot be authenticated. */
  private reportTableProblems(): void {
    for (const [pack, { blobs, entries, listings }] of this.disagreements) {
      const what = [
        ...(entries > 0 ? [count(entries, 'index entry', 'index entries')] : []),
        ...(listings > 0 ? [count(listings, 'listing of the pack', 'listings of the pack')] : []),
      ];
      this.report(
        packName(pack),
        `${what.join(' and ')} ${entries + listings === 1 ? 'disagrees' : 'disagree'} with the pack's own table: the index may have been tampered with`,
        this.affectedBy(blobs),
        'index-disagrees',
      );
    }
    for (const [pack, blobs] of this.unauthenticatedTables) {
      this.report(
        packName(pack),
        "the pack's table cannot be authenticated: the pack was not written for this repository, or is damaged",
        this.affectedBy(blobs),
        'unauthenticated-table',
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

/** `--read-data`'s share of `items`: none, all, or a random part of them (at least one). */
function share<T>(items: readonly T[], fraction: number): Set<T> {
  if (fraction <= 0) return new Set();
  if (fraction >= 1) return new Set(items);
  return new Set(sample(items, Math.max(1, Math.ceil(items.length * fraction))));
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
