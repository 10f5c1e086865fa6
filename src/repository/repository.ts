import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { AuthenticationFailure, open } from '../crypto/aead.ts';
import { unwrapKey } from '../crypto/key-wrap.ts';
import { decodeDelta } from '../compression/delta.ts';
import { zstdDecompress } from '../compression/zstd.ts';
import {
  ConfigError,
  DamagedBlobError,
  InterruptedError,
  KeyError,
  SnapshotKindError,
  VerificationError,
} from '../errors.ts';
import { AccessDeniedError, ObjectNotFoundError, type StorageBackend } from '../storage/backend.ts';
import { Compression, packName } from './blob.ts';
import {
  CONFIG_NAME,
  createConfig,
  openIdentities,
  parseConfig,
  rotateConfig,
  verifyConfig,
  type ReaderIdentities,
  type RepositoryConfig,
  type RepositoryOptions,
} from './config.ts';
import {
  createKeySlot,
  encodeIdentityFile,
  encodeKeySlot,
  openKeySlot,
  type KeyKind,
  type KeyMaterial,
  type KeySlot,
} from './keys.ts';
import { acquireLock, type Lock } from './locks.ts';
import {
  locationKey,
  MasterIndex,
  serializeIndex,
  type IndexFileContent,
  type IndexedBlob,
  type IndexedPackRecord,
  type PackListing,
} from './master-index.ts';
import { blobAad } from './pack-format.ts';
import { PackTable, PackTables, type PackTableFailure } from './pack-tables.ts';
import { blobId, deriveWriterKeys, type WriterKeys } from './secrets.ts';
import { openJson, sealJson } from './sealed-file.ts';
import {
  decodeSnapshotBody,
  decodeSnapshotHeader,
  encodeSnapshot,
  MalformedSnapshot,
  type SnapshotBody,
  type SnapshotHeader,
  type SnapshotInfo,
} from './snapshot.ts';
import { decodeTree, type Tree } from './tree.ts';
import { interruptBegun } from '../util/interrupt.ts';

/** How to unlock a repository: a passphrase that opens one of its key slots, or an identity file's material. */
export type KeySource = { passphrase: string } | { identity: KeyMaterial };

export interface KeyListing {
  id: string;
  kind: KeyKind;
  created: string;
  host: string;
  username: string;
  current: boolean;
}

export interface SnapshotFilter {
  kind?: string;
  name?: string;
  host?: string;
  /** Every one of these tags must be present. */
  tags?: string[];
  /** Only snapshots taken at or before this time. */
  before?: Date;
}

/** A file under snapshots/ that is not an intact snapshot. */
export interface DamagedSnapshot {
  /** Its name under snapshots/: a snapshot id, or whatever a stray file is called. */
  id: string;
  problem: string;
  /** The header, when it is intact and only the rest of the file is not. */
  header?: SnapshotHeader;
}

export interface SnapshotListing {
  snapshots: SnapshotInfo[];
  damaged: DamagedSnapshot[];
}

const SNAPSHOT_ID = /^[0-9a-f]{64}$/;
export const NOT_A_SNAPSHOT = 'not a snapshot: a stray file, whose name is not a snapshot id';

/** How operations that only read take their lock (Repository.readLock). */
export interface ReadLocking {
  /** Take none (`--no-lock`): for a repository this process cannot, or should not, write. */
  skip?: boolean;
  /** Told when the storage refused the lock's write and the operation goes on without one. */
  onUnlocked?: (refused: AccessDeniedError) => void;
}

/** What an operation holds while it runs: released when it ends, whether or not a lock was written. */
export interface HeldLock {
  release(): Promise<void>;
}

const NO_LOCK: HeldLock = { release: () => Promise.resolve() };

export class Repository {
  readonly index = new MasterIndex();
  readLocking: ReadLocking = {};
  /** Where the repository reports what it works around (a damaged snapshot skipped); set by the caller. */
  onWarning: (message: string) => void = () => undefined;
  private readonly loadedIndexFiles = new Set<string>();
  private readonly writerKeys: WriterKeys;
  private readonly reader: ReaderIdentities | undefined;
  private readonly packKeys = new Map<string, Buffer>();
  private readonly damagedPacks = new Set<string>();
  /** Packs whose table this session could not authenticate: not written for this repository, or damaged. */
  private readonly unauthenticatedTables = new Set<string>();
  /** Listings a pack's own table contradicts, by locationKey(). */
  private readonly disagreeingCopies = new Set<string>();
  /** Packs a warning was given for: one each. */
  private readonly warnedPacks = new Set<string>();
  private recipientKeys: Buffer[];
  /** The pack tables read so far; full keys only. */
  private readonly packTables: PackTables | undefined;

  private constructor(
    readonly backend: StorageBackend,
    private configValue: RepositoryConfig,
    private material: KeyMaterial,
    /** The key slot this session was opened with; undefined for an identity file. */
    private keyName: string | undefined,
  ) {
    this.writerKeys = deriveWriterKeys(material.writerSecret);
    if (material.kind === 'full') {
      this.reader = openIdentities(configValue, material.readerSecret);
    } else {
      verifyConfig(configValue, material.adminPublicKey);
    }
    this.recipientKeys = configValue.recipients.map((recipient) => Buffer.from(recipient, 'base64'));
    const reader = this.reader;
    this.packTables = reader ? new PackTables(backend, () => reader.identities) : undefined;
  }

  /** Creates a repository in an empty location, with one full key for `passphrase`. */
  static async init(
    backend: StorageBackend,
    passphrase: string,
    options: RepositoryOptions = {},
  ): Promise<Repository> {
    if (await backend.stat(CONFIG_NAME)) {
      throw new ConfigError(`${backend.location} is already a strongbox repository`, {
        hint: 'Use it as it is, or choose an empty location.',
      });
    }
    for await (const object of backend.list('')) {
      throw new ConfigError(`${backend.location} is not empty (it holds ${object.name})`, {
        hint: 'Choose an empty or new location for the repository.',
      });
    }
    const writerSecret = randomBytes(32);
    const readerSecret = randomBytes(32);
    const config = createConfig(readerSecret, options);
    const material: KeyMaterial = { kind: 'full', repository: config.id, writerSecret, readerSecret };
    const slot = encodeKeySlot(await createKeySlot(material, passphrase));
    await backend.put(slot.name, slot.bytes);
    // The config goes last: its presence is what makes the location a repository.
    await backend.put(CONFIG_NAME, Buffer.from(JSON.stringify(config, null, 2) + '\n'));
    return new Repository(backend, config, material, slot.name);
  }

  static async open(backend: StorageBackend, key: KeySource): Promise<Repository> {
    let configBytes: Buffer;
    try {
      configBytes = await backend.get(CONFIG_NAME);
    } catch (error) {
      if (error instanceof ObjectNotFoundError) {
        throw new ConfigError(`there is no strongbox repository at ${backend.location}`, {
          hint: 'Check --repo / STRONGBOX_REPO, or create one with `strongbox init`.',
        });
      }
      throw error;
    }
    const config = parseConfig(configBytes);
    if ('identity' in key) {
      if (key.identity.repository !== config.id) {
        throw new KeyError('the identity file belongs to another repository', {
          hint: 'Use the identity file made for this repository.',
        });
      }
      return new Repository(backend, config, key.identity, undefined);
    }
    for await (const { name, slot } of readKeySlots(backend)) {
      const material = await openKeySlot(slot, key.passphrase);
      if (material && material.repository === config.id)
        return new Repository(backend, config, material, name);
    }
    throw new KeyError(`wrong password: no key of the repository at ${backend.location} opens with it`, {
      hint: 'Check STRONGBOX_PASSWORD, --password-file or --password-command.',
    });
  }

  get config(): RepositoryConfig {
    return this.configValue;
  }

  get keyKind(): KeyKind {
    return this.material.kind;
  }

  get canRead(): boolean {
    return this.reader !== undefined;
  }

  get recipients(): readonly Buffer[] {
    return this.recipientKeys;
  }

  get gear(): Int32Array {
    return this.writerKeys.gear;
  }

  get metadataKey(): Buffer {
    return this.writerKeys.metadataKey;
  }

  blobId(data: Uint8Array): string {
    return blobId(this.writerKeys.blobIdKey, data).toString('hex');
  }

  requireReader(action: string): ReaderIdentities {
    if (!this.reader) {
      throw new KeyError(`a write-only key cannot ${action}`, {
        hint: 'Use a full key (its password or identity file) for this.',
      });
    }
    return this.reader;
  }

  lock(exclusive: boolean, operation: string): Promise<Lock> {
    return acquireLock(this.backend, this.writerKeys.metadataKey, { exclusive, operation });
  }

  /**
   * A shared lock for an operation that only reads (restore, verify, check). Reading needs no
   * lock to be correct; it only keeps maintenance from removing data under the reader. So, as
   * restic does, a repository that cannot be written (a read-only mount, read-only credentials:
   * disaster recovery from a copy) is read without one, and `readLocking.skip` takes none.
   */
  async readLock(operation: string): Promise<HeldLock> {
    if (this.readLocking.skip) return NO_LOCK;
    try {
      return await this.lock(false, operation);
    } catch (error) {
      if (!(error instanceof AccessDeniedError)) throw error;
      this.readLocking.onUnlocked?.(error);
      return NO_LOCK;
    }
  }

  // ---- index

  /**
   * Brings the in-memory index up to date. Index files never change once written, so only those
   * not loaded yet are read: operations can call this freely without reading the index twice.
   * A damaged index file is skipped with a warning: its packs are then unknown, so a backup
   * stores their blobs again and only reads that need them fail.
   */
  async loadIndex(): Promise<void> {
    for await (const object of this.backend.list('index/')) {
      if (this.loadedIndexFiles.has(object.name)) continue;
      this.loadedIndexFiles.add(object.name);
      let content: IndexFileContent;
      try {
        content = this.readIndexFile(object.name, await this.backend.get(object.name));
      } catch (error) {
        if (!(error instanceof VerificationError)) throw error;
        this.onWarning(`skipped index file ${object.name}: it is damaged; run \`strongbox check\``);
        continue;
      }
      this.index.addIndexFile(object.name, content);
    }
  }

  readIndexFile(name: string, bytes: Buffer): IndexFileContent {
    try {
      return openJson<IndexFileContent>('SBIX', this.writerKeys.metadataKey, bytes);
    } catch (cause) {
      throw new VerificationError(`index file ${name} is damaged`, {
        cause,
        hint: 'Run `strongbox check` to see which snapshots it affects.',
      });
    }
  }

  /** Writes an index file for packs that are already durable; returns its name and size. */
  async writeIndex(records: readonly IndexedPackRecord[]): Promise<{ name: string; size: number }> {
    const bytes = sealJson('SBIX', this.writerKeys.metadataKey, serializeIndex(records));
    const name = `index/${createHash('sha256').update(bytes).digest('hex')}`;
    await this.backend.put(name, bytes);
    this.loadedIndexFiles.add(name);
    for (const record of records) this.index.addPack(record, name);
    return { name, size: bytes.length };
  }

  // ---- blobs

  /**
   * The length of a blob's plaintext, from the index; from the blob itself when index files
   * disagree on it (one of them was tampered with).
   */
  async blobLength(id: string): Promise<number> {
    const copies = this.index.locations(id);
    if (copies.length === 0) throw notIndexed(id);
    if (copies.every((copy) => copy.rawLength === copies[0]!.rawLength)) return copies[0]!.rawLength;
    return (await this.readBlob(id)).length;
  }

  /**
   * Reads, decrypts, decompresses and authenticates one blob, from the first of its stored copies
   * that reads back intact. With a full key, a copy is read only where its pack's own table agrees
   * with its index entry (the table is read once, before the first blob of the pack); a copy in a
   * pack whose table cannot be authenticated is tried last, vouched for by its blob id alone.
   * What is found wrong on the way is remembered (for `hasReadableCopy`) and, when another copy
   * serves, named in a warning, once for each pack.
   */
  async readBlob(id: string): Promise<Buffer> {
    const copies = this.index.locations(id);
    if (copies.length === 0) throw notIndexed(id);
    // Copies in packs known to be damaged go last: another copy may be whole.
    copies.sort((a, b) => Number(this.damagedPacks.has(a.pack)) - Number(this.damagedPacks.has(b.pack)));
    const failures: VerificationError[] = [];
    const unverified: IndexedBlob[] = [];
    for (const copy of copies) {
      const refusal = await this.checkAgainstTable(id, copy);
      if (refusal === 'unverified') unverified.push(copy);
      else if (refusal) failures.push(refusal);
      else {
        const plain = await this.tryCopy(id, copy, failures);
        if (plain) return this.readAfter(failures, plain);
      }
    }
    for (const copy of unverified) {
      const plain = await this.tryCopy(id, copy, failures);
      if (!plain) continue;
      this.warnOnce(
        copy.pack,
        `pack ${copy.pack.slice(0, 16)}: its table cannot be authenticated (damaged, or not written for this repository); its blobs are read on the strength of their ids alone`,
      );
      return this.readAfter(failures, plain);
    }
    throw failures[0]!;
  }

  /** The plaintext, once the copies that failed before it are named in warnings. */
  private readAfter(failures: readonly VerificationError[], plain: Buffer): Buffer {
    for (const failure of failures) {
      if (failure instanceof DamagedBlobError)
        this.warnOnce(failure.pack, `${failure.message}; another copy was read instead`);
    }
    return plain;
  }

  /** One copy's plaintext, or undefined (the failure added to `failures`) when it cannot be read. */
  private async tryCopy(
    id: string,
    copy: IndexedBlob,
    failures: VerificationError[],
  ): Promise<Buffer | undefined> {
    try {
      return await this.decodeBlob(id, copy, await this.readStored(id, copy));
    } catch (error) {
      // A damaged copy, or a delta whose base cannot be read: the next copy may do.
      if (!(error instanceof VerificationError)) throw error;
      if (error instanceof DamagedBlobError) this.damagedPacks.add(error.pack);
      failures.push(error);
      return undefined;
    }
  }

  /**
   * Holds a copy's index entry against its pack's own table: undefined when they agree, the
   * refusal when the table says otherwise or the pack is missing, 'unverified' when the table
   * cannot be authenticated (or, with a write-only key, read at all).
   */
  private async checkAgainstTable(
    id: string,
    copy: IndexedBlob,
  ): Promise<VerificationError | 'unverified' | undefined> {
    if (!this.packTables) return 'unverified';
    const table = await this.packTable(copy.pack);
    if (table === 'missing') {
      this.damagedPacks.add(copy.pack);
      return new DamagedBlobError(id, copy.pack, 'its pack is missing');
    }
    if (table === 'unauthenticated') {
      this.unauthenticatedTables.add(copy.pack);
      return 'unverified';
    }
    if (table.agrees(id, copy)) return undefined;
    this.disagreeingCopies.add(locationKey(id, copy));
    this.warnOnce(
      copy.pack,
      `pack ${copy.pack.slice(0, 16)}: index entries disagree with the pack's own table (the index may have been tampered with); other copies are read instead`,
    );
    return new VerificationError(
      `blob ${id.slice(0, 16)}: its index entry disagrees with the table of pack ${copy.pack.slice(0, 16)}`,
      { hint: 'Run `strongbox check`; `strongbox repair index` rebuilds the index from the packs.' },
    );
  }

  private warnOnce(pack: string, message: string): void {
    if (this.warnedPacks.has(pack)) return;
    this.warnedPacks.add(pack);
    this.onWarning(message);
  }

  /** A copy's stored bytes; a missing or truncated pack is damage, not a storage failure. */
  private async readStored(id: string, copy: IndexedBlob): Promise<Buffer> {
    const name = packName(copy.pack);
    try {
      return await this.backend.getRange(name, copy.offset, copy.length);
    } catch (error) {
      if (error instanceof ObjectNotFoundError)
        throw new DamagedBlobError(id, copy.pack, 'its pack is missing', error);
      // Asked only after a failed read: a connection that failed may fail this too, and then
      // the first failure is the one to report.
      const stored = await this.backend.stat(name).catch(() => undefined);
      if (stored && stored.size < copy.offset + copy.length)
        throw new DamagedBlobError(id, copy.pack, `its pack is truncated (${stored.size} bytes)`, error);
      throw error;
    }
  }

  /**
   * The pack's own table, authenticated, or why there is none (read once a session). `storedSize`
   * (from a listing of the storage) serves for a pack no index file lists.
   */
  async packTable(pack: string, storedSize?: number): Promise<PackTable | PackTableFailure> {
    this.requireReader('read pack tables');
    return this.adoptTable(await this.packTables!.get(pack, this.listingsOf(pack, storedSize)));
  }

  /** The table of a pack read whole (check --read-data), as `packTable` gives it. */
  packTableOf(pack: string, bytes: Buffer): PackTable | PackTableFailure {
    this.requireReader('read pack tables');
    return this.adoptTable(this.packTables!.fromBytes(pack, bytes, this.listingsOf(pack)));
  }

  private listingsOf(pack: string, storedSize?: number): PackListing[] {
    const listings = this.index.pack(pack)?.listings ?? [];
    if (storedSize === undefined || listings.some((listing) => listing.size === storedSize)) return listings;
    return [...listings, { size: storedSize, keys: Buffer.alloc(0) }];
  }

  private adoptTable(table: PackTable | PackTableFailure): PackTable | PackTableFailure {
    if (table instanceof PackTable) this.packKeys.set(table.pack, table.dataKey);
    return table;
  }

  /** The data key `stanzas` wrap for this key's identities, if they wrap one for it. */
  unwrapDataKey(stanzas: Buffer): Buffer | undefined {
    const reader = this.requireReader('read backed-up data');
    try {
      return unwrapKey(stanzas, reader.identities);
    } catch (error) {
      if (error instanceof AuthenticationFailure) return undefined;
      throw error;
    }
  }

  /**
   * Turns one copy's stored bytes into the blob's plaintext, checking it against its id; with
   * `keys`, opening it only with those data keys.
   */
  async decodeBlob(
    id: string,
    copy: IndexedBlob,
    sealed: Uint8Array,
    keys?: readonly Buffer[],
  ): Promise<Buffer> {
    const damaged = (cause?: unknown) =>
      new DamagedBlobError(id, copy.pack, 'it fails authentication', cause);
    const candidates = keys ?? this.dataKeys(copy.pack);
    let plain: Buffer | undefined;
    try {
      const aad = blobAad(copy.type, Buffer.from(id, 'hex'));
      for (const key of candidates) {
        plain = openOrUndefined(key, sealed, aad);
        if (plain) break;
      }
      if (!plain) throw new AuthenticationFailure();
      if (copy.compression === Compression.zstd) plain = zstdDecompress(plain);
    } catch (cause) {
      throw damaged(cause);
    }
    if (copy.base) {
      const base = await this.readBlob(copy.base);
      try {
        plain = decodeDelta(base, plain);
      } catch (cause) {
        throw damaged(cause);
      }
    }
    const actual = Buffer.from(this.blobId(plain), 'hex');
    if (plain.length !== copy.rawLength || !timingSafeEqual(actual, Buffer.from(id, 'hex'))) throw damaged();
    return plain;
  }

  /**
   * Whether some copy of the blob lies in a pack not known to be damaged, whose table was not
   * found unauthenticated, in a listing its pack's table does not contradict, with its delta base
   * likewise: what a writer may deduplicate onto, or take as a delta base.
   */
  hasReadableCopy(id: string, asBase = false): boolean {
    if (this.index.whyUnreadable(id) !== undefined) return false;
    const nothingFound =
      this.damagedPacks.size === 0 &&
      this.unauthenticatedTables.size === 0 &&
      this.disagreeingCopies.size === 0;
    if (nothingFound && !asBase) return true;
    // A base is read whole (reads never follow chains), so only its whole copies count.
    return this.index
      .locations(id)
      .some(
        (copy) =>
          this.mayUse(id, copy) &&
          (copy.base === undefined || (!asBase && this.hasReadableCopy(copy.base, true))),
      );
  }

  private mayUse(id: string, copy: IndexedBlob): boolean {
    return (
      !this.damagedPacks.has(copy.pack) &&
      !this.unauthenticatedTables.has(copy.pack) &&
      !this.disagreeingCopies.has(locationKey(id, copy))
    );
  }

  /** Packs found damaged by this session: missing, truncated, or holding a blob that failed to read. */
  get knownDamagedPacks(): ReadonlySet<string> {
    return this.damagedPacks;
  }

  /**
   * Lists the stored packs and remembers those the index lists that are missing or of another
   * size: one listing, and blobs in them are then neither deduplicated onto nor used as bases.
   */
  async findMissingOrTruncatedPacks(): Promise<void> {
    const stored = new Map<string, number>();
    for await (const object of this.backend.list('data/')) stored.set(object.name, object.size);
    for (const pack of this.index.packIdList()) {
      const size = stored.get(packName(pack));
      if (!this.index.pack(pack)!.listings.some((listing) => listing.size === size))
        this.damagedPacks.add(pack);
    }
  }

  /**
   * The data keys that may open the pack's blobs: the one its table was sealed with once the table
   * is read, else every key the pack's listings unwrap to (one, unless index files disagree).
   */
  private dataKeys(pack: string): Buffer[] {
    const known = this.packKeys.get(pack);
    if (known) return [known];
    const reader = this.requireReader('read backed-up data');
    const keys: Buffer[] = [];
    for (const listing of this.index.pack(pack)?.listings ?? []) {
      try {
        keys.push(unwrapKey(listing.keys, reader.identities));
      } catch (cause) {
        if (!(cause instanceof AuthenticationFailure)) throw cause;
      }
    }
    if (keys.length === 0)
      throw new VerificationError(`the key of pack ${pack.slice(0, 16)} cannot be unwrapped`, {
        hint: 'The index entry is damaged, or the pack was written for another repository.',
      });
    return keys;
  }

  async readTree(id: string): Promise<Tree> {
    return decodeTree(await this.readBlob(id));
  }

  // ---- snapshots

  async saveSnapshot(header: SnapshotHeader, body: SnapshotBody): Promise<{ id: string; size: number }> {
    // `pg_dump | strongbox backup stdin` and Ctrl-C: the stream ends because pg_dump died.
    if (interruptBegun()) throw new InterruptedError('interrupted: the snapshot was not written');
    const { id, bytes } = encodeSnapshot(header, body, this.writerKeys.metadataKey, this.recipientKeys);
    await this.backend.put(`snapshots/${id}`, bytes);
    return { id, size: bytes.length };
  }

  /** Every intact snapshot's header, oldest first. */
  async listSnapshots(filter: SnapshotFilter = {}): Promise<SnapshotInfo[]> {
    return (await this.scanSnapshots(filter)).snapshots;
  }

  /**
   * Every snapshot file: the intact ones, oldest first, and apart from them the damaged ones and
   * stray files, so that one bad file does not hide the others. A damaged snapshot whose header
   * cannot be read might match any filter, so it is always among `damaged`.
   */
  async scanSnapshots(filter: SnapshotFilter = {}): Promise<SnapshotListing> {
    const snapshots: SnapshotInfo[] = [];
    const damaged: DamagedSnapshot[] = [];
    for await (const object of this.backend.list('snapshots/')) {
      const id = object.name.slice('snapshots/'.length);
      if (!isSnapshotId(id)) {
        damaged.push({ id, problem: NOT_A_SNAPSHOT });
        continue;
      }
      const bytes = await this.backend.get(object.name);
      let header: SnapshotHeader;
      try {
        header = this.decodeHeader(id, bytes);
      } catch (error) {
        damaged.push({ id, problem: problemOf(error) });
        continue;
      }
      if (!matches(header, filter)) continue;
      if (createHash('sha256').update(bytes).digest('hex') !== id)
        damaged.push({ id, problem: 'its content does not match its name', header });
      else snapshots.push({ id, header });
    }
    snapshots.sort((a, b) => a.header.time.localeCompare(b.header.time) || a.id.localeCompare(b.id));
    damaged.sort((a, b) => a.id.localeCompare(b.id));
    return { snapshots, damaged };
  }

  private decodeHeader(id: string, bytes: Buffer): SnapshotHeader {
    try {
      return decodeSnapshotHeader(bytes, this.writerKeys.metadataKey);
    } catch (cause) {
      throw new VerificationError(`snapshot ${id.slice(0, 8)} is damaged`, {
        cause,
        hint: 'Run `strongbox check`.',
      });
    }
  }

  async loadSnapshot(id: string): Promise<SnapshotInfo & { body: SnapshotBody }> {
    const reader = this.requireReader('read snapshot contents');
    const bytes = await this.backend.get(`snapshots/${id}`);
    const header = this.decodeHeader(id, bytes);
    if (createHash('sha256').update(bytes).digest('hex') !== id) {
      throw new VerificationError(`snapshot ${id.slice(0, 8)} does not match its name`, {
        hint: 'Run `strongbox check`.',
      });
    }
    try {
      return { id, header, body: decodeSnapshotBody(bytes, reader.identities) };
    } catch (cause) {
      throw new VerificationError(`snapshot ${id.slice(0, 8)} is damaged`, {
        cause,
        hint: 'Run `strongbox check`.',
      });
    }
  }

  /**
   * Resolves `latest` (the newest intact snapshot `filter` selects, with a warning for each
   * damaged one that might have been newer), a full id or a unique id prefix to a snapshot. An id
   * names one snapshot whatever the filters: one they would not select is refused, saying why,
   * rather than reported missing, and an id of a damaged snapshot is a VerificationError.
   */
  async findSnapshot(reference: string, filter: SnapshotFilter = {}): Promise<SnapshotInfo> {
    if (reference === 'latest') {
      const { snapshots, damaged } = await this.scanSnapshots(filter);
      const latest = snapshots.at(-1);
      for (const skipped of damaged) {
        if (!skipped.header || !latest || skipped.header.time > latest.header.time)
          this.onWarning(`skipped damaged snapshot ${shortName(skipped.id)}: ${skipped.problem}`);
      }
      if (!latest)
        throw new ConfigError('there is no snapshot to use', {
          hint: 'Check the filters, or run `strongbox snapshots`.',
        });
      return latest;
    }
    const { snapshots, damaged } = await this.scanSnapshots();
    const prefix = reference.toLowerCase();
    const found = snapshots.filter((snapshot) => snapshot.id.startsWith(prefix));
    const foundDamaged = damaged.filter((snapshot) => snapshot.id.startsWith(prefix));
    if (found.length + foundDamaged.length > 1)
      throw new ConfigError(`snapshot id ${reference} is ambiguous`, {
        hint: 'Give more characters of the id.',
      });
    if (foundDamaged.length === 1) {
      const { id, problem } = foundDamaged[0]!;
      throw new VerificationError(`snapshot ${shortName(id)} is damaged: ${problem}`, {
        hint: 'Restore another snapshot; `strongbox check` lists what is damaged.',
      });
    }
    if (found.length === 0)
      throw new ConfigError(`no snapshot ${reference}`, { hint: 'Run `strongbox snapshots` to list them.' });
    const snapshot = found[0]!;
    const { header } = snapshot;
    if (filter.kind && header.kind !== filter.kind)
      throw new SnapshotKindError(snapshot.id, header.kind, header.name, filter.kind);
    if (!matches(header, filter))
      throw new ConfigError(`snapshot ${snapshot.id.slice(0, 8)} is not one the filters select`, {
        hint: 'Leave out the filters (--tag, --host, --name, --at…) when naming a snapshot by id.',
      });
    return snapshot;
  }

  // ---- keys

  async listKeys(): Promise<KeyListing[]> {
    const keys: KeyListing[] = [];
    for await (const { name, slot } of readKeySlots(this.backend, this.onWarning)) {
      keys.push({
        id: name.slice('keys/'.length),
        kind: slot.kind,
        created: slot.created,
        host: slot.host,
        username: slot.username,
        current: name === this.keyName,
      });
    }
    return keys.sort((a, b) => a.created.localeCompare(b.created));
  }

  /** Material for a new key of `kind`: only full keys may hand out keys. */
  private materialFor(kind: KeyKind): KeyMaterial {
    const material = this.material;
    if (material.kind !== 'full')
      throw new KeyError('a write-only key cannot create keys', { hint: 'Use a full key.' });
    if (kind === 'full') return material;
    const adminPublicKey = Buffer.from(this.configValue.adminPublicKey, 'base64');
    return {
      kind: 'write-only',
      repository: material.repository,
      writerSecret: material.writerSecret,
      adminPublicKey,
    };
  }

  async addKey(passphrase: string, kind: KeyKind): Promise<string> {
    const slot = encodeKeySlot(await createKeySlot(this.materialFor(kind), passphrase));
    await this.backend.put(slot.name, slot.bytes);
    return slot.name.slice('keys/'.length);
  }

  /** The contents of an identity file for a new key of `kind`; the caller writes it with mode 0600. */
  exportIdentity(kind: KeyKind): string {
    return encodeIdentityFile(this.materialFor(kind));
  }

  async removeKey(id: string): Promise<void> {
    this.requireReader('remove keys');
    const matching = (await this.listKeys()).filter((key) => key.id.startsWith(id));
    if (matching.length !== 1) {
      throw new ConfigError(matching.length ? `key id ${id} is ambiguous` : `no key ${id}`, {
        hint: 'Run `strongbox key list`.',
      });
    }
    if (matching[0]!.current) {
      throw new ConfigError('cannot remove the key in use', {
        hint: 'Open the repository with another key to remove this one.',
      });
    }
    await this.backend.delete(`keys/${matching[0]!.id}`);
  }

  /** Replaces the current key slot with one for `passphrase`; the new slot is written before the old one goes. */
  async changePassphrase(passphrase: string): Promise<string> {
    if (!this.keyName)
      throw new ConfigError('this session was opened with an identity file, which has no password');
    const slot = encodeKeySlot(await createKeySlot(this.material, passphrase));
    await this.backend.put(slot.name, slot.bytes);
    await this.backend.delete(this.keyName);
    this.keyName = slot.name;
    return slot.name.slice('keys/'.length);
  }

  /**
   * Adds a new identity for new data under a new reader secret. The current key is rewritten to
   * hold it; other full keys would still hold the old reader secret, so they are removed and must
   * be added again. Write-only keys keep working. Returns the ids of the removed keys.
   */
  async rotate(
    passphrase: string | undefined,
  ): Promise<{ keyId: string | undefined; removed: string[]; identityFile?: string }> {
    const reader = this.requireReader('rotate keys');
    if (this.material.kind !== 'full') throw new KeyError('a write-only key cannot rotate keys');
    const readerSecret = randomBytes(32);
    const material: KeyMaterial = { ...this.material, readerSecret };
    const config = rotateConfig(this.configValue, reader, readerSecret);
    const keysBefore = await this.listKeys();
    let keyName: string | undefined;
    if (this.keyName && passphrase !== undefined) {
      const slot = encodeKeySlot(await createKeySlot(material, passphrase));
      await this.backend.put(slot.name, slot.bytes);
      keyName = slot.name;
    }
    await this.backend.put(CONFIG_NAME, Buffer.from(JSON.stringify(config, null, 2) + '\n'));
    const removed = keysBefore.filter((key) => key.kind === 'full').map((key) => key.id);
    for (const id of removed) await this.backend.delete(`keys/${id}`);
    this.configValue = config;
    this.material = material;
    this.keyName = keyName;
    this.recipientKeys = config.recipients.map((recipient) => Buffer.from(recipient, 'base64'));
    return {
      keyId: keyName?.slice('keys/'.length),
      removed,
      ...(keyName ? {} : { identityFile: encodeIdentityFile(material) }),
    };
  }

  async close(): Promise<void> {
    await this.backend.close();
  }
}

function matches(header: SnapshotHeader, filter: SnapshotFilter): boolean {
  if (filter.kind && header.kind !== filter.kind) return false;
  if (filter.name && header.name !== filter.name) return false;
  if (filter.host && header.host !== filter.host) return false;
  if (filter.tags && !filter.tags.every((tag) => header.tags.includes(tag))) return false;
  if (filter.before && Date.parse(header.time) > filter.before.getTime()) return false;
  return true;
}

export function isSnapshotId(name: string): boolean {
  return SNAPSHOT_ID.test(name);
}

/**
 * The key slots under keys/. A file there that is not one (a stray file, a damaged slot) is
 * skipped: it must not keep the repository from opening with the slots that are intact.
 */
async function* readKeySlots(
  backend: StorageBackend,
  onWarning: (message: string) => void = () => undefined,
): AsyncGenerator<{ name: string; slot: KeySlot }> {
  for await (const object of backend.list('keys/')) {
    let slot: Partial<KeySlot> | undefined;
    try {
      slot = JSON.parse((await backend.get(object.name)).toString('utf8')) as Partial<KeySlot>;
    } catch (error) {
      if (!(error instanceof SyntaxError)) throw error;
    }
    if (slot?.version === 1 && typeof slot.data === 'string' && typeof slot.kdf === 'object' && slot.kdf)
      yield { name: object.name, slot: slot as KeySlot };
    else onWarning(`skipped ${object.name}: not a key slot`);
  }
}

/** A snapshot id as shown to people: its first 8 characters; a stray file's name in full. */
export function shortName(id: string): string {
  return isSnapshotId(id) ? id.slice(0, 8) : id;
}

/** The innermost message of a damaged-file error: what is wrong, not which file. */
function problemOf(error: unknown): string {
  const cause = error instanceof Error ? error.cause : undefined;
  if (cause instanceof MalformedSnapshot) return cause.message;
  return 'its header fails authentication';
}

function notIndexed(id: string): VerificationError {
  return new VerificationError(`blob ${id.slice(0, 16)} is not in the index`, {
    hint: 'Run `strongbox check`.',
  });
}

function openOrUndefined(key: Buffer, sealed: Uint8Array, aad: Buffer): Buffer | undefined {
  try {
    return open(key, sealed, aad);
  } catch (error) {
    if (error instanceof AuthenticationFailure) return undefined;
    throw error;
  }
}
