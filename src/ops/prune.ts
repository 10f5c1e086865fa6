import os from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { packName } from '../repository/blob.ts';
import { PackCopier } from '../repository/pack-copier.ts';
import { folderOf, objectId, walFileOf } from '../repository/layout.ts';
import { listLocks } from '../repository/locks.ts';
import { awaitedLater } from '../util/awaited-later.ts';
import { indexRecords, type IndexedBlob } from '../repository/master-index.ts';
import type { Repository } from '../repository/repository.ts';
import type { PrunePlan } from '../repository/signed-records.ts';
import type { SnapshotInfo } from '../repository/snapshot.ts';
import { ObjectLockedError, ObjectNotFoundError } from '../storage/backend.ts';
import { LockedError, PruneBlockedError, VerificationError } from '../errors.ts';

/**
 * Prune (docs/FORMAT.md, "Prune"): deletes the packs no snapshot needs and repacks those mostly
 * unused, in two phases so that backups never wait for it. The first phase plans: it finds what
 * every snapshot references and writes a signed plan naming the packs to delete or repack, then
 * the locks held at that moment. Writers that begin after the plan read it and do not
 * deduplicate onto those packs; the second phase waits until every lock the plan names is gone
 * (every writer that may have begun before it), finds again what the snapshots present then
 * reference, copies what is still needed out of the packs, and only then rewrites the index and
 * deletes. A plan left by a prune that was killed is finished by the next one.
 */
export interface PruneOptions {
  /** Unused bytes tolerated after the prune, as a share of the used bytes (restic's --max-unused); default 0.05. */
  maxUnused?: number;
  /** At most this many bytes of packs are repacked in one run; default no limit. */
  maxRepackBytes?: number;
  /** Only report what would be done. */
  dryRun?: boolean;
  /** Snapshots to count as removed already (what `forget --dry-run --prune` would remove). */
  assumeRemoved?: readonly string[];
  /** Wait for the writers a plan waits for (default); false leaves the plan for the next prune. */
  wait?: boolean;
  /** How often to look at the locks while waiting; default 2 s. */
  pollMs?: number;
  onProgress?: (message: string) => void;
}

export interface PruneResult {
  dryRun: boolean;
  /** `waiting`: the plan is written and waits for writers; the next prune finishes it. */
  outcome: 'done' | 'waiting';
  /** Plans of earlier prunes (killed, or run with wait false) finished by this one. */
  resumedPlans: number;
  snapshots: number;
  referencedBlobs: number;
  packs: {
    /** Packs stored when the plan was made. */
    before: number;
    deleted: number;
    repacked: number;
    /** Packs in no index file, left by writers that were killed, deleted. */
    orphansDeleted: number;
    /** Packs the plan named that stay: snapshots written since it need them, or the storage locks them. */
    spared: number;
  };
  bytes: {
    before: number;
    /** Bytes of the packs deleted (repacked ones included). */
    deleted: number;
    /** Bytes written by repacking (packs and index files). */
    written: number;
    /** Unused bytes in the packs that stay, as far as the plan knew. */
    unusedAfter: number;
  };
  /** Objects the storage keeps locked (Object Lock): deleted by a later prune once free. */
  locked: { object: string; retainUntil?: string }[];
  waitedMs: number;
}

const DEFAULT_MAX_UNUSED = 0.05;
/** Blobs read ahead while repacking. */
const READ_AHEAD = 4;

interface StoredCopy {
  copy: IndexedBlob;
  stored: Buffer;
}

export async function prune(repository: Repository, options: PruneOptions = {}): Promise<PruneResult> {
  repository.requireReader('prune');
  const lock = await repository.lock(false, 'prune');
  try {
    const others = (await listLocks(repository.backend, repository.metadataKey)).filter(
      (held) => held.name !== lock.name && !held.stale && held.info?.operation === 'prune',
    );
    if (others.length > 0) {
      const holder = others[0]!.info!;
      throw new LockedError(
        `another prune is running (pid ${holder.pid} on ${holder.host} since ${holder.created})`,
        { hint: 'Wait for it to finish; if that process is gone, run `strongbox unlock`.' },
      );
    }
    return await new Pruner(repository, lock.name, options).run();
  } finally {
    await lock.release();
  }
}

/** One bit per index slot: what the snapshots reference, whatever the repository's size. */
class SlotMarks {
  private bits: Uint8Array;

  constructor(size: number) {
    this.bits = new Uint8Array((size >>> 3) + 1);
  }

  has(slot: number): boolean {
    return (this.bits[slot >>> 3]! & (1 << (slot & 7))) !== 0;
  }

  /** Marks `slot`; false when it was marked already. */
  mark(slot: number): boolean {
    const byte = slot >>> 3;
    if (byte >= this.bits.length) {
      const grown = new Uint8Array(Math.max(this.bits.length * 2, byte + 1));
      grown.set(this.bits);
      this.bits = grown;
    }
    if ((this.bits[byte]! & (1 << (slot & 7))) !== 0) return false;
    this.bits[byte]! |= 1 << (slot & 7);
    return true;
  }
}

interface References {
  snapshots: SnapshotInfo[];
  marks: SlotMarks;
  /** Referenced blobs some referenced delta is stored against: they need a copy stored whole. */
  bases: SlotMarks;
  count: number;
}

interface PackUsage {
  used: number;
  unused: number;
}

class Pruner {
  private readonly result: PruneResult = {
    dryRun: false,
    outcome: 'done',
    resumedPlans: 0,
    snapshots: 0,
    referencedBlobs: 0,
    packs: { before: 0, deleted: 0, repacked: 0, orphansDeleted: 0, spared: 0 },
    bytes: { before: 0, deleted: 0, written: 0, unusedAfter: 0 },
    locked: [],
    waitedMs: 0,
  };

  constructor(
    private readonly repository: Repository,
    private readonly ownLock: string,
    private readonly options: PruneOptions,
  ) {
    this.result.dryRun = Boolean(options.dryRun);
  }

  private progress(message: string): void {
    this.options.onProgress?.(message);
  }

  async run(): Promise<PruneResult> {
    if (!this.options.dryRun) {
      const { trusted } = await this.repository.records.prunePlans();
      for (const { name, value } of trusted) {
        if (value.waitFor) {
          this.progress(`finishing the plan of an earlier prune (${value.created})`);
          if (!(await this.finish(name, value))) return this.result;
          this.result.resumedPlans++;
        } else {
          // Its maker died before knowing whom to wait for: it deletes nothing, so it just goes.
          await this.repository.records.delete(name);
        }
      }
    }
    const plan = await this.plan();
    if (this.options.dryRun || !plan) return this.result;
    const name = await this.repository.records.writePrunePlan(plan);
    this.repository.condemnPacks([...plan.delete, ...plan.repack]);
    // Listed only once the plan is durable: a writer whose lock is not listed here reads the plan.
    const waitFor = (await listLocks(this.repository.backend, this.repository.metadataKey))
      .filter((held) => held.name !== this.ownLock && !held.stale)
      .map((held) => held.name);
    const complete = { ...plan, waitFor };
    await this.repository.records.writePrunePlan(complete, name);
    await this.finish(name, complete);
    return this.result;
  }

  /** Phase one: what the snapshots reference, and which packs can go; undefined when none. */
  private async plan(): Promise<PrunePlan | undefined> {
    await this.repository.loadIndex();
    const references = await this.findReferences();
    const index = this.repository.index;
    this.result.snapshots = references.snapshots.length;
    this.result.referencedBlobs = references.count;
    const stored = await this.storedPacks();
    this.result.packs.before = stored.size;
    for (const size of stored.values()) this.result.bytes.before += size;
    const usage = this.packUsage(references);
    const remove: string[] = [];
    const candidates: { pack: string; usage: PackUsage; size: number }[] = [];
    let used = 0;
    let unused = 0;
    for (const [pack, packUsage] of usage) {
      const size = stored.get(pack);
      if (size === undefined) continue; // missing from the storage: `check` reports it
      if (packUsage.used === 0) {
        remove.push(pack);
        continue;
      }
      used += packUsage.used;
      unused += packUsage.unused;
      if (packUsage.unused > 0) candidates.push({ pack, usage: packUsage, size });
    }
    // As restic does: the emptiest packs first, until what stays unused is within the tolerance.
    candidates.sort((a, b) => b.usage.unused / b.size - a.usage.unused / a.size);
    const tolerated = (this.options.maxUnused ?? DEFAULT_MAX_UNUSED) * used;
    const repack: string[] = [];
    let repackBytes = 0;
    for (const candidate of candidates) {
      if (unused <= tolerated) break;
      if (repackBytes + candidate.size > (this.options.maxRepackBytes ?? Infinity)) continue;
      repack.push(candidate.pack);
      repackBytes += candidate.size;
      unused -= candidate.usage.unused;
    }
    const orphans = [...stored.keys()].filter((pack) => !index.pack(pack));
    this.result.bytes.unusedAfter = unused;
    this.progress(
      `${references.snapshots.length} snapshots reference ${references.count} blobs; ` +
        `${remove.length} packs unused, ${repack.length} to repack, ${orphans.length} in no index file`,
    );
    if (this.options.dryRun) {
      this.result.packs.deleted = remove.length + repack.length;
      this.result.packs.repacked = repack.length;
      this.result.packs.orphansDeleted = orphans.length;
      for (const pack of [...remove, ...repack, ...orphans]) this.result.bytes.deleted += stored.get(pack)!;
      return undefined;
    }
    if (remove.length + repack.length + orphans.length === 0) {
      await this.tidy();
      return undefined;
    }
    return {
      version: 1,
      created: new Date().toISOString(),
      host: os.hostname(),
      snapshots: references.snapshots.map((snapshot) => snapshot.id),
      delete: remove,
      repack,
      orphans,
    };
  }

  /**
   * Phase two: once every writer the plan waits for is gone, copies out of the plan's packs what
   * the snapshots present now still need, spares the packs that still hold something needed,
   * rewrites the index without the rest, and deletes them. Every step can be repeated: a prune
   * killed anywhere in it leaves the plan, which the next one finishes. False when the plan was
   * left waiting.
   */
  private async finish(name: string, plan: PrunePlan): Promise<boolean> {
    if (!(await this.waitForWriters(plan.waitFor ?? []))) {
      this.result.outcome = 'waiting';
      return false;
    }
    const repository = this.repository;
    await repository.loadIndex();
    const condemned = new Set([...plan.delete, ...plan.repack]);
    repository.condemnPacks(condemned);
    const references = await this.findReferences();
    this.result.snapshots = references.snapshots.length;
    this.result.referencedBlobs = references.count;
    this.spareUnusedNowUsed(references, condemned, new Set(plan.delete));
    await this.copyNeeded(references, condemned, plan.repack.length);
    this.spareWhatIsNeeded(references, condemned);
    const stored = await this.storedPacks();
    const locked = await this.rewriteIndex(condemned);
    for (const pack of locked) condemned.delete(pack);
    const orphans = plan.orphans.filter((pack) => !repository.index.pack(pack) && !condemned.has(pack));
    let deleted = 0;
    const repacked = new Set(plan.repack);
    for (const pack of [...condemned, ...orphans]) {
      const size = stored.get(pack);
      if (size === undefined) continue; // deleted by the run this one finishes
      if (!(await this.deleteObject(packName(pack)))) {
        this.result.packs.spared++;
        continue;
      }
      this.result.bytes.deleted += size;
      if (condemned.has(pack)) {
        this.result.packs.deleted++;
        if (repacked.has(pack)) this.result.packs.repacked++;
      } else this.result.packs.orphansDeleted++;
      if (++deleted % 64 === 0) this.progress(`deleted ${deleted} packs`);
    }
    await this.tidy();
    await repository.records.delete(name);
    return true;
  }

  /** Deletes what removal records left behind and merges the records; both can be repeated. */
  private async tidy(): Promise<void> {
    const removed = await this.repository.removedSnapshotIds();
    const present: string[] = [];
    for await (const object of this.repository.backend.list(folderOf('snapshot'))) {
      const id = objectId('snapshot', object.name);
      if (removed.has(id)) present.push(id);
    }
    for (const error of await this.repository.deleteRemovedSnapshotFiles(present)) this.noteLocked(error);
    // WAL a forget expired but could not delete (locked, or killed after its record).
    const removedWal = await this.repository.removedWalNames();
    const walLeft = (await this.repository.wal.list()).filter(({ name }) => removedWal.has(name));
    const walLocked = await this.repository.wal.remove(walLeft.map(({ name }) => name));
    for (const error of walLocked) this.noteLocked(error);
    await this.repository.compactRemovalRecords(
      new Set(walLocked.map((error) => walFileOf(error.objectName)!)),
    );
  }

  /** True once no lock of `names` is held any more (released, or stale: its holder is gone). */
  private async waitForWriters(names: readonly string[]): Promise<boolean> {
    const pending = new Set(names.filter((name) => name !== this.ownLock));
    const started = Date.now();
    for (;;) {
      const live = (await listLocks(this.repository.backend, this.repository.metadataKey)).filter(
        (held) => pending.has(held.name) && !held.stale,
      );
      if (live.length === 0) break;
      if (this.options.wait === false) return false;
      const first = live[0]!.info;
      this.progress(
        `waiting for ${live.length} writer${live.length > 1 ? 's' : ''} that began before the plan` +
          (first ? ` (${first.operation} by pid ${first.pid} on ${first.host} since ${first.created})` : ''),
      );
      await sleep(this.options.pollMs ?? 2000);
    }
    this.result.waitedMs += Date.now() - started;
    return true;
  }

  /** Every blob the trusted snapshots present reference, their trees' and delta bases included. */
  private async findReferences(): Promise<References> {
    const repository = this.repository;
    const listing = await repository.scanSnapshots();
    const assumed = new Set(this.options.assumeRemoved ?? []);
    const damaged = listing.damaged.filter((snapshot) => !assumed.has(snapshot.id));
    if (damaged.length > 0) throw new PruneBlockedError(damaged.map((snapshot) => snapshot.id));
    listing.snapshots = listing.snapshots.filter((snapshot) => !assumed.has(snapshot.id));
    const index = repository.index;
    const marks = new SlotMarks(index.slotCount);
    let count = 0;
    let done = 0;
    for (const snapshot of listing.snapshots) {
      const { body } = await repository.loadSnapshot(snapshot.id);
      const trees = [body.tree];
      while (trees.length > 0) {
        const tree = trees.pop()!;
        const slot = index.slotOf(tree);
        // Not indexed: the snapshot is damaged already, and nothing prune does changes that.
        if (slot === undefined || !marks.mark(slot)) continue;
        count++;
        for (const node of (await repository.readTree(tree)).nodes) {
          for (const id of node.content ?? []) {
            const blob = index.slotOf(id);
            if (blob !== undefined && marks.mark(blob)) count++;
          }
          if (node.subtree) trees.push(node.subtree);
        }
      }
      if (++done % 10 === 0) this.progress(`read the trees of ${done}/${listing.snapshots.length} snapshots`);
    }
    // A referenced delta needs its base; bases are stored whole, so one pass finds them all, and
    // a second catches a base that is also stored as a delta somewhere.
    const bases = new SlotMarks(index.slotCount);
    for (let pass = 0, added = true; added && pass < 4; pass++) {
      added = false;
      for (const [id, copy] of index.everyLocation()) {
        if (copy.base === undefined || !marks.has(index.slotOf(id)!)) continue;
        const base = index.slotOf(copy.base);
        if (base === undefined) continue;
        bases.mark(base);
        if (marks.mark(base)) {
          count++;
          added = true;
        }
      }
    }
    return { snapshots: listing.snapshots, marks, bases, count };
  }

  private packUsage(references: References): Map<string, PackUsage> {
    const index = this.repository.index;
    const usage = new Map<string, PackUsage>();
    for (const pack of index.packIdList()) usage.set(pack, { used: 0, unused: 0 });
    for (const [id, copy] of index.everyLocation()) {
      const packUsage = usage.get(copy.pack)!;
      if (references.marks.has(index.slotOf(id)!)) packUsage.used += copy.length;
      else packUsage.unused += copy.length;
    }
    return usage;
  }

  private async storedPacks(): Promise<Map<string, number>> {
    const stored = new Map<string, number>();
    for await (const object of this.repository.backend.list(folderOf('pack')))
      stored.set(objectId('pack', object.name), object.size);
    return stored;
  }

  /**
   * Copies into new packs every referenced blob whose only usable copies are in condemned packs,
   * in the form it was stored in (a delta stays a delta against the same base): a blob other
   * deltas need as their base is copied from a copy stored whole, so that it stays a base.
   */
  private async copyNeeded(
    references: References,
    condemned: Set<string>,
    repackCount: number,
  ): Promise<void> {
    const repository = this.repository;
    const index = repository.index;
    const needed: string[] = [];
    const seen = new SlotMarks(index.slotCount);
    for (const [id, copy] of index.everyLocation()) {
      if (!condemned.has(copy.pack)) continue;
      const slot = index.slotOf(id)!;
      if (!references.marks.has(slot) || !seen.mark(slot)) continue;
      if (!repository.hasReadableCopy(id, references.bases.has(slot))) needed.push(id);
    }
    if (needed.length === 0) return;
    // Deltas against the same base one after another: the base is read once.
    const baseOf = new Map(
      needed.map((id) => [id, index.locations(id).find((copy) => copy.base)?.base ?? '']),
    );
    needed.sort((a, b) => baseOf.get(a)!.localeCompare(baseOf.get(b)!));
    this.progress(`repacking ${needed.length} blobs out of ${repackCount} packs`);
    const copier = new PackCopier(repository);
    // A few reads ahead: storage latency, not the copying, is what a copy waits on.
    const reads = needed.map((id) => ({
      id,
      form: undefined as Promise<StoredCopy | undefined> | undefined,
    }));
    const start = (at: number) => {
      const read = reads[at];
      if (read && !read.form) read.form = awaitedLater(this.readUsableForm(read.id, references));
    };
    for (let at = 0; at < reads.length; at++) {
      for (let ahead = at; ahead < at + READ_AHEAD; ahead++) start(ahead);
      const found = await reads[at]!.form!;
      reads[at]!.form = Promise.resolve(undefined);
      if (found) await copier.add(reads[at]!.id, found.copy, found.stored);
      if ((at + 1) % 1000 === 0) this.progress(`repacked ${at + 1}/${needed.length} blobs`);
    }
    await copier.flush();
    this.result.bytes.written += copier.storedBytes;
  }

  /** The smallest stored form of `id` that reads back intact (whole copies only for a base). */
  private async readUsableForm(id: string, references: References): Promise<StoredCopy | undefined> {
    const index = this.repository.index;
    const asBase = references.bases.has(index.slotOf(id)!);
    const copies = index
      .locations(id)
      .filter((copy) => !asBase || copy.base === undefined)
      .sort((a, b) => a.length - b.length);
    for (const copy of copies) {
      try {
        return { copy, stored: await this.repository.readStoredForm(id, copy) };
      } catch (error) {
        // That copy is damaged: another may do; with none, its pack is spared below.
        if (!(error instanceof VerificationError)) throw error;
      }
    }
    return undefined;
  }

  /**
   * A pack the plan found wholly unused that a snapshot written since needs (a backup that began
   * before the plan deduplicated onto it, or had indexed its packs but not yet written its
   * snapshot) stays whole: copying its blobs out would rewrite that data for nothing.
   */
  private spareUnusedNowUsed(
    references: References,
    condemned: Set<string>,
    unused: ReadonlySet<string>,
  ): void {
    const index = this.repository.index;
    for (const [id, copy] of index.everyLocation()) {
      if (!unused.has(copy.pack) || !condemned.has(copy.pack)) continue;
      const slot = index.slotOf(id)!;
      if (!references.marks.has(slot)) continue;
      // Stored again elsewhere meanwhile (a backup that read the plan): the pack can go.
      if (this.repository.hasReadableCopy(id, references.bases.has(slot))) continue;
      condemned.delete(copy.pack);
      this.repository.acquitPacks([copy.pack]);
      this.result.packs.spared++;
    }
  }

  /**
   * The last word before anything is deleted: a condemned pack holding a copy of a referenced
   * blob that no other pack can serve (a snapshot written since the plan needs it, or a copy
   * could not be made) stays, and with it what it serves, until nothing more changes.
   */
  private spareWhatIsNeeded(references: References, condemned: Set<string>): void {
    const repository = this.repository;
    const index = repository.index;
    for (let changed = true; changed;) {
      changed = false;
      for (const [id, copy] of index.everyLocation()) {
        if (!condemned.has(copy.pack)) continue;
        const slot = index.slotOf(id)!;
        if (!references.marks.has(slot)) continue;
        if (repository.hasReadableCopy(id, references.bases.has(slot))) continue;
        condemned.delete(copy.pack);
        repository.acquitPacks([copy.pack]);
        this.result.packs.spared++;
        changed = true;
      }
    }
  }

  /**
   * Writes, for each index file listing a condemned pack, one without it (durable before any old
   * one goes), then deletes the old ones. Returns the condemned packs still listed by an index
   * file the storage would not delete (locked): they stay until a later run.
   */
  private async rewriteIndex(condemned: Set<string>): Promise<Set<string>> {
    const repository = this.repository;
    const files = new Set<string>();
    for (const pack of condemned)
      for (const file of repository.index.pack(pack)?.indexFiles ?? []) files.add(file);
    const rewritten: string[] = [];
    for (const file of files) {
      let bytes: Buffer;
      try {
        bytes = await repository.backend.get(file);
      } catch (error) {
        if (error instanceof ObjectNotFoundError) continue; // removed by the run this one finishes
        throw error;
      }
      const content = await repository.readIndexFile(file, bytes);
      const kept = content.packs.filter((pack) => !condemned.has(pack.id));
      if (kept.length > 0) {
        const written = await repository.writeIndex(indexRecords({ packs: kept }));
        this.result.bytes.written += written.size;
      }
      rewritten.push(file);
    }
    const stillListed = new Set<string>();
    for (const file of rewritten) {
      if (await this.deleteObject(file)) continue;
      for (const pack of condemned)
        if (repository.index.pack(pack)?.indexFiles.has(file)) stillListed.add(pack);
    }
    return stillListed;
  }

  /** Deletes an object; false when the storage keeps it locked, which is noted for the report. */
  private async deleteObject(name: string): Promise<boolean> {
    try {
      await this.repository.backend.delete(name);
      return true;
    } catch (error) {
      if (!(error instanceof ObjectLockedError)) throw error;
      this.noteLocked(error);
      return false;
    }
  }

  private noteLocked(error: ObjectLockedError): void {
    this.result.locked.push({
      object: error.objectName,
      ...(error.retainUntil ? { retainUntil: error.retainUntil.toISOString() } : {}),
    });
  }
}
