import { DamagedBlobError, VerificationError } from '../errors.ts';
import { packName, type PackBlobEntry } from '../repository/blob.ts';
import {
  locationKey,
  sameLocation,
  type IndexedBlob,
  type IndexedPackRecord,
} from '../repository/master-index.ts';
import { PackTable } from '../repository/pack-tables.ts';
import type { Repository } from '../repository/repository.ts';
import { forEachLimited } from '../util/each-limited.ts';
import { folderOf } from '../repository/layout.ts';

export interface RepairIndexOptions {
  /** Read and verify, but write and remove nothing: what the result says would be done. */
  dryRun?: boolean;
  /**
   * Read every blob and leave out each copy that fails authentication. Without it, only the
   * copies of blobs stored more than once are read (so forged duplicates are left out), and a
   * blob's only copy is indexed as its pack's table lists it.
   */
  readData?: boolean;
  onProgress?: (progress: RepairIndexProgress) => void;
}

export interface RepairIndexProgress {
  step: 'reading pack tables' | 'reading blobs' | 'writing index files' | 'removing old index files';
  done: number;
  total: number;
}

export interface RepairIndexResult {
  dryRun: boolean;
  /** Packs in storage. */
  packsStored: number;
  /** Packs the new index lists, and the blob copies it lists in them. */
  packs: number;
  entries: number;
  /** Entries the index files it replaces listed (some may have named the same copy). */
  previousEntries: number;
  /**
   * Packs whose table cannot be authenticated (not written for this repository, or damaged):
   * left out, but for the blobs old index files listed there that read back intact by their ids.
   */
  unauthenticated: { pack: string; size: number; keptBlobs: number }[];
  /** Copies left out because their blob fails authentication (a forged or damaged copy). */
  copiesLeftOut: { blob: string; pack: string }[];
  /** Packs with an authenticated table none of whose copies was kept. */
  packsLeftOut: string[];
  indexFilesWritten: number;
  indexFilesRemoved: number;
}

type CopyOutcome = 'intact' | 'fails' | 'undecided';

/** Blob entries an index file written by the repair lists at most: about 2 MB of JSON before zstd. */
const ENTRIES_PER_INDEX_FILE = 8192;

/**
 * Rebuilds the index from the packs' own tables (docs/FORMAT.md, "Repairing the index"): every
 * pack's table is read by range and authenticated; the copies of blobs stored more than once (all
 * copies with `readData`) are read, and those that fail authentication are left out; new index
 * files are written in batches, and only once all of them are durable are the index files that
 * were there before removed. A kill at any point leaves the old index files, or the old and the
 * new: each is a whole index. Memory: the index in memory, as any reader holds it, plus a byte
 * per blob and the tables kept by the session's bounded cache.
 */
export async function repairIndex(
  repository: Repository,
  options: RepairIndexOptions = {},
): Promise<RepairIndexResult> {
  repository.requireReader('rebuild the index from the packs');
  return repository.withLock('repair index', { exclusive: true }, () =>
    new IndexRepair(repository, options).run(),
  );
}

class IndexRepair {
  /** How many authenticated tables list each blob, by index slot, stopping at 255. */
  private tableListings = new Uint8Array(1024);
  /** Copies found failing authentication, by locationKey. */
  private readonly failed = new Set<string>();
  private readonly result: RepairIndexResult;
  private readonly progress: (progress: RepairIndexProgress) => void;

  constructor(
    private readonly repository: Repository,
    private readonly options: RepairIndexOptions,
  ) {
    this.progress = options.onProgress ?? (() => undefined);
    this.result = {
      dryRun: options.dryRun ?? false,
      packsStored: 0,
      packs: 0,
      entries: 0,
      previousEntries: 0,
      unauthenticated: [],
      copiesLeftOut: [],
      packsLeftOut: [],
      indexFilesWritten: 0,
      indexFilesRemoved: 0,
    };
  }

  async run(): Promise<RepairIndexResult> {
    const { backend, index } = this.repository;
    const previousFiles: string[] = [];
    for await (const object of backend.list(folderOf('index'))) previousFiles.push(object.name);
    // The old listings: where readers looked so far, with the resemblance sketches tables lack.
    await this.repository.loadIndex();
    for (const _ of index.everyLocation()) this.result.previousEntries++;

    const stored: [string, number][] = [];
    for await (const object of backend.list(folderOf('pack')))
      stored.push([object.name.slice(object.name.lastIndexOf('/') + 1), object.size]);
    stored.sort(([a], [b]) => a.localeCompare(b));
    this.result.packsStored = stored.length;

    const withTables: string[] = [];
    const unauthenticated = new Map<string, number>();
    let tablesRead = 0;
    await forEachLimited(stored, backend.concurrency, async ([pack, size]) => {
      this.progress({ step: 'reading pack tables', done: tablesRead++, total: stored.length });
      const table = await this.repository.packTable(pack, size);
      if (table === 'unauthenticated') unauthenticated.set(pack, size);
      if (!(table instanceof PackTable)) return;
      withTables.push(pack);
      // Into the session's index too (no file): bases of deltas read through it while verifying.
      index.addPack({ id: pack, size: table.size, keys: table.stanzas, blobs: [...table.entries] });
      for (const entry of table.entries) this.countListing(entry.id);
    });
    withTables.sort();

    const salvaged = await this.salvage(unauthenticated);
    await this.verifyCopies(withTables);

    const batch: IndexedPackRecord[] = [];
    let batchEntries = 0;
    const flush = async () => {
      if (batch.length === 0) return;
      const records = batch.splice(0);
      batchEntries = 0;
      if (!this.result.dryRun) await this.repository.writeIndex(records);
      this.result.indexFilesWritten++;
    };
    let written = 0;
    for (const pack of withTables) {
      this.progress({ step: 'writing index files', done: written++, total: withTables.length });
      const record = await this.recordOf(pack);
      if (!record) continue;
      batch.push(record);
      batchEntries += record.blobs.length;
      if (batchEntries >= ENTRIES_PER_INDEX_FILE) await flush();
    }
    for (const record of salvaged) {
      batch.push(record);
      this.count(record);
    }
    await flush();

    // Only now, every new index file durable: the old ones go.
    if (!this.result.dryRun) {
      for (const [removed, name] of previousFiles.entries()) {
        this.progress({ step: 'removing old index files', done: removed, total: previousFiles.length });
        await backend.delete(name);
        this.result.indexFilesRemoved++;
      }
    }
    return this.result;
  }

  private countListing(id: string): void {
    const slot = this.repository.index.slotOf(id)!;
    if (slot >= this.tableListings.length) {
      const grown = new Uint8Array(Math.max(this.tableListings.length * 2, slot + 1));
      grown.set(this.tableListings);
      this.tableListings = grown;
    }
    if (this.tableListings[slot]! < 255) this.tableListings[slot]!++;
  }

  private storedMoreThanOnce(id: string): boolean {
    return (this.tableListings[this.repository.index.slotOf(id)!] ?? 0) > 1;
  }

  /**
   * Reads the copies to verify in each pack with an authenticated table: those of blobs stored
   * more than once, or every copy with `readData`. A copy whose blob fails authentication is
   * left out; one that cannot be decided (a delta whose base reads nowhere) is kept.
   */
  private async verifyCopies(packs: readonly string[]): Promise<void> {
    let done = 0;
    await forEachLimited(packs, this.repository.backend.concurrency, async (pack) => {
      this.progress({ step: 'reading blobs', done: done++, total: packs.length });
      const table = await this.tableOf(pack);
      const toRead = table.entries.filter(
        (entry) => this.options.readData || this.storedMoreThanOnce(entry.id),
      );
      for (const [entry, outcome] of await this.readCopies(pack, table.size, toRead, [table.dataKey])) {
        if (outcome !== 'fails') continue;
        this.failed.add(locationKey(entry.id, { ...entry, pack }));
        this.result.copiesLeftOut.push({ blob: entry.id, pack });
      }
    });
  }

  /**
   * What reading each copy shows: read by range, or the pack whole when most of it is wanted. A
   * delta whose base reads nowhere is undecided.
   */
  private async readCopies(
    pack: string,
    size: number,
    entries: readonly PackBlobEntry[],
    keys: readonly Buffer[],
  ): Promise<[PackBlobEntry, CopyOutcome][]> {
    if (entries.length === 0) return [];
    const { backend } = this.repository;
    const name = packName(pack);
    const wanted = entries.reduce((sum, entry) => sum + entry.length, 0);
    const bytes = this.options.readData || wanted * 2 > size ? await backend.get(name) : undefined;
    const outcomes: [PackBlobEntry, CopyOutcome][] = [];
    for (const entry of entries) {
      const sealed = bytes
        ? bytes.subarray(entry.offset, entry.offset + entry.length)
        : await backend.getRange(name, entry.offset, entry.length);
      try {
        await this.repository.decodeBlob(entry.id, { ...entry, pack }, sealed, keys);
        outcomes.push([entry, 'intact']);
      } catch (error) {
        if (!(error instanceof VerificationError)) throw error;
        outcomes.push([
          entry,
          error instanceof DamagedBlobError && error.pack === pack ? 'fails' : 'undecided',
        ]);
      }
    }
    return outcomes;
  }

  /**
   * The blobs old index files listed in packs whose table cannot be authenticated (a damaged
   * trailer, say) that read back intact by their ids, one record per listing whose data key
   * opens them: a damaged table must not cost data that still reads.
   */
  private async salvage(unauthenticated: ReadonlyMap<string, number>): Promise<IndexedPackRecord[]> {
    const { index } = this.repository;
    const listed = new Map<string, PackBlobEntry[]>();
    if (unauthenticated.size > 0) {
      for (const [id, copy] of index.everyLocation()) {
        if (!unauthenticated.has(copy.pack)) continue;
        const { pack, sketch: _sketch, ...entry } = copy;
        let entries = listed.get(pack);
        if (!entries) listed.set(pack, (entries = []));
        if (!entries.some((other) => sameLocation({ ...other, pack }, copy))) entries.push({ ...entry, id });
      }
    }
    const records: IndexedPackRecord[] = [];
    for (const [pack, size] of unauthenticated) {
      let remaining = listed.get(pack) ?? [];
      let kept = 0;
      for (const listing of index.pack(pack)?.listings ?? []) {
        const key = remaining.length > 0 ? this.repository.unwrapDataKey(listing.keys) : undefined;
        if (!key) continue;
        const outcomes = await this.readCopies(pack, size, remaining, [key]);
        // Only what reads back intact: a damaged table's word is not taken for the rest.
        const intact = outcomes.filter(([, outcome]) => outcome === 'intact').map(([entry]) => entry);
        if (intact.length === 0) continue;
        records.push({
          id: pack,
          size,
          keys: listing.keys,
          blobs: intact,
          sketches: this.sketchesOf(pack, intact),
        });
        kept += intact.length;
        remaining = remaining.filter((entry) => !intact.includes(entry));
      }
      this.result.unauthenticated.push({ pack, size, keptBlobs: kept });
    }
    return records;
  }

  /** The index record of a pack with an authenticated table: its entries but the copies left out. */
  private async recordOf(pack: string): Promise<IndexedPackRecord | undefined> {
    const table = await this.tableOf(pack);
    const blobs = table.entries.filter(
      (entry) => !this.failed.has(locationKey(entry.id, { ...entry, pack })),
    );
    if (blobs.length === 0 && table.entries.length > 0) {
      this.result.packsLeftOut.push(pack);
      return undefined;
    }
    const record = {
      id: pack,
      size: table.size,
      keys: table.stanzas,
      blobs,
      sketches: this.sketchesOf(pack, blobs),
    };
    this.count(record);
    return record;
  }

  private count(record: IndexedPackRecord): void {
    this.result.packs++;
    this.result.entries += record.blobs.length;
  }

  /** The resemblance sketches old index files gave these copies: tables do not hold them. */
  private sketchesOf(pack: string, blobs: readonly PackBlobEntry[]): Map<string, number[]> {
    const sketches = new Map<string, number[]>();
    for (const blob of blobs) {
      const copy: IndexedBlob = { ...blob, pack };
      const sketch = this.repository.index
        .locations(blob.id)
        .find((other) => sameLocation(other, copy))?.sketch;
      if (sketch && !blob.base) sketches.set(blob.id, sketch);
    }
    return sketches;
  }

  private async tableOf(pack: string): Promise<PackTable> {
    const table = await this.repository.packTable(pack);
    // Authenticated once this session: a second read of the same bytes authenticates again.
    if (!(table instanceof PackTable))
      throw new VerificationError(`the table of pack ${pack.slice(0, 16)} no longer reads`);
    return table;
  }
}
