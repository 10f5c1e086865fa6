import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { AuthenticationFailure, open } from '../crypto/aead.ts';
import { generateIdentity, identityFromRaw, unwrapKey } from '../crypto/key-wrap.ts';
import { SigningKey } from '../crypto/signing.ts';
import { decodeDelta } from '../compression/delta.ts';
import { zstdDecompress } from '../compression/zstd.ts';
import {
  ConfigError,
  DamagedBlobError,
  KeyError,
  LegacyFormatError,
  LegacyKeyError,
  NoRepositoryError,
  RetiredKeyError,
  StrongboxError,
  VerificationError,
} from '../errors.ts';
import {
  AccessDeniedError,
  ObjectLockedError,
  ObjectNotFoundError,
  type StorageBackend,
} from '../storage/backend.ts';
import { Compression, packName } from './blob.ts';
import {
  CONFIG_NAME,
  ConfigRefused,
  configSignatureValid,
  createConfig,
  encodeConfig,
  MAX_CONFIG_BYTES,
  openBundle,
  parseConfig,
  type IdentityBundle,
  type RepositoryConfig,
  type RepositoryOptions,
} from './config.ts';
import {
  createKeySlot,
  encodeKeySlot,
  isLegacy,
  type KeyKind,
  type KeyMaterial,
  type LegacyKeyMaterial,
} from './keys.ts';
import { openWithPassphrase } from './key-slots.ts';
import { KeyRing, type KeyListing, type RepositorySession } from './key-ring.ts';
import { folderOf, objectId, objectName } from './layout.ts';
import { acquireLock, type Lock } from './locks.ts';
import { defaultStateDirectory, LocalState } from './local-state.ts';
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
import { MalformedFile, openJson, sealJson } from './sealed-file.ts';
import { signObject, splitSigned, writerId, type SignedParts } from './signed-object.ts';
import { AppendedRecords } from './appended-records.ts';
import { AuditLog, type AuditEntry, type AuditLogEntry, type AuditLogQuery } from './audit-log.ts';
import { ResultRecords, type ResultKind, type ResultKinds, type ResultListing } from './result-records.ts';
import type { SnapshotBody, SnapshotHeader, SnapshotInfo } from './snapshot.ts';
import {
  SignedRecords,
  type RemovalReason,
  type RemovalRecord,
  type TrustedRecord,
} from './signed-records.ts';
import { SnapshotStore, type SnapshotFilter, type SnapshotListing } from './snapshot-store.ts';
import { parseIndexFile } from './schemas.ts';
import { decodeTree, type Tree } from './tree.ts';
import { WriterTrust } from './trust.ts';
import { WalStore } from './wal-store.ts';

export type { KeyListing } from './key-ring.ts';
export {
  isSnapshotId,
  NOT_A_SNAPSHOT,
  shortName,
  type DamagedSnapshot,
  type DisappearedSnapshot,
  type SnapshotFilter,
  type SnapshotListing,
} from './snapshot-store.ts';

/** How to unlock a repository: a passphrase that opens one of its key slots, or an identity file's material. */
export type KeySource = { passphrase: string } | { identity: KeyMaterial | LegacyKeyMaterial };

export interface OpenOptions {
  /**
   * Where this client keeps what it has trusted of each repository (local-state.ts): by default
   * `STRONGBOX_STATE_DIR` or the XDG state directory; false keeps no state (and so detects no
   * rollback or deleted snapshot).
   */
  stateDirectory?: string | false;
  /** Told what the opening works around (a local state file it cannot write). */
  onWarning?: (message: string) => void;
}

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

async function holding<T>(lock: HeldLock, action: () => Promise<T>): Promise<T> {
  try {
    return await action();
  } finally {
    await lock.release();
  }
}

const SIGNED_INDEX = 'SBI2';
const LEGACY_INDEX = 'SBIX';

export class Repository {
  readonly index = new MasterIndex();
  readLocking: ReadLocking = {};
  /** Where the repository reports what it works around (a damaged snapshot skipped); set by the caller. */
  onWarning: (message: string) => void = () => undefined;
  private readonly loadedIndexFiles = new Set<string>();
  private readonly writerKeys: WriterKeys;
  private readonly packKeys = new Map<string, Buffer>();
  private readonly damagedPacks = new Set<string>();
  /** Packs found missing by a read: deleted by a prune since the index was loaded, or lost. */
  private readonly missingPacks = new Set<string>();
  /** The delta base read last (decodeBlob). */
  private lastBase: { id: string; plain: Buffer } | undefined;
  private readonly session: RepositorySession;
  private readonly trust: WriterTrust;
  private readonly snapshots: SnapshotStore;
  private readonly keyRing: KeyRing;
  /** Packs whose table this session could not authenticate: not written for this repository, or damaged. */
  private readonly unauthenticatedTables = new Set<string>();
  /** Listings a pack's own table contradicts, by locationKey(). */
  private readonly disagreeingCopies = new Set<string>();
  /** Packs a warning was given for: one each. */
  private readonly warnedPacks = new Set<string>();
  /** The pack tables read so far; full keys only. */
  private readonly packTables: PackTables | undefined;
  /** Removal and prune-plan records, signed by full keys. */
  readonly records: SignedRecords;
  /** The WAL files PostgreSQL archives into the repository (wal-store.ts). */
  readonly wal: WalStore;
  private readonly auditLog: AuditLog;
  private readonly results: ResultRecords;
  private removedSnapshots: Promise<ReadonlySet<string>> | undefined;
  /**
   * Packs a pending prune will delete or repack (its plans were read when this session's shared
   * lock was taken): their copies are neither deduplicated onto nor taken as delta bases, so a
   * backup begun after a prune's plan never comes to depend on what that prune deletes.
   */
  private readonly condemnedPacks = new Set<string>();
  /** The locks this session holds, confirmed before a snapshot is written. */
  private readonly heldLocks = new Set<Lock>();

  private constructor(
    readonly backend: StorageBackend,
    config: RepositoryConfig,
    configBytes: Buffer,
    material: KeyMaterial,
    keyName: string | undefined,
    bundle: IdentityBundle | undefined,
    state: LocalState | undefined,
    warnedKeySlots: readonly string[] = [],
  ) {
    this.writerKeys = deriveWriterKeys(material.writerSecret);
    const warn = (message: string) => this.onWarning(message);
    this.session = {
      backend,
      config,
      configBytes,
      material,
      keyName,
      bundle,
      signing: new SigningKey(material.signingKey),
      state,
      warnedKeySlots: new Set(warnedKeySlots),
    };
    this.trust = new WriterTrust(() => this.session.config, backend, warn);
    const session = this.session;
    this.records = new SignedRecords(
      backend,
      config.id,
      this.writerKeys.metadataKey,
      () => session.signing,
      this.trust,
    );
    const appended = new AppendedRecords(
      backend,
      config.id,
      this.writerKeys.metadataKey,
      () => session.signing,
    );
    this.auditLog = new AuditLog(appended, this.trust);
    this.results = new ResultRecords(appended, this.trust);
    this.snapshots = new SnapshotStore(
      backend,
      {
        repositoryId: config.id,
        metadataKey: this.writerKeys.metadataKey,
        recipients: () => this.recipients,
        signingKey: () => session.signing,
        identities: () => session.bundle?.identities,
      },
      this.trust,
      state,
      warn,
      (fresh) => this.removedSnapshotIds(fresh),
    );
    this.wal = new WalStore(
      backend,
      {
        repositoryId: () => session.config.id,
        metadataKey: this.writerKeys.metadataKey,
        blobIdKey: this.writerKeys.blobIdKey,
        blobId: (data) => this.blobId(data),
        recipients: () => this.recipients,
        signingKey: () => session.signing,
        identities: (action) => this.requireReader(action).identities,
      },
      this.trust,
      warn,
    );
    this.keyRing = new KeyRing(session, {
      withExclusiveLock: (operation, action) => this.withLock(operation, { exclusive: true }, action),
      judgeAll: () => this.judgeAllObjects(),
      walSignatures: () => this.wal.signatures(),
      warn,
    });
    this.packTables = bundle ? new PackTables(backend, () => session.bundle?.identities ?? []) : undefined;
  }

  /** Creates a repository in an empty location, with one full key for `passphrase`. */
  static async init(
    backend: StorageBackend,
    passphrase: string,
    options: RepositoryOptions = {},
    openOptions: OpenOptions = {},
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
    const signing = SigningKey.generate();
    const unlock = generateIdentity();
    const { config, bundle } = createConfig({ kind: 'full', signing, unlock: unlock.identity }, options);
    const material: KeyMaterial = {
      kind: 'full',
      repository: config.id,
      writerSecret: randomBytes(32),
      signingKey: signing.privateRaw,
      unlockKey: unlock.privateRaw,
    };
    const slot = encodeKeySlot(await createKeySlot(material, passphrase));
    await backend.put(slot.name, slot.bytes);
    // The config goes last: its presence is what makes the location a repository.
    const configBytes = encodeConfig(config);
    await backend.put(CONFIG_NAME, configBytes);
    const state = await trustedState(openOptions, backend.location, config, configBytes);
    return new Repository(backend, config, configBytes, material, slot.name, bundle, state);
  }

  static async open(
    backend: StorageBackend,
    key: KeySource,
    openOptions: OpenOptions = {},
  ): Promise<Repository> {
    const { config, bytes } = await readConfig(backend);
    let material: KeyMaterial | undefined;
    let keyName: string | undefined;
    let skipped: string[] = [];
    if ('identity' in key) {
      if (key.identity.repository !== config.id) {
        throw new KeyError('the identity file belongs to another repository', {
          hint: 'Use the identity file made for this repository.',
        });
      }
      if (isLegacy(key.identity)) throw new LegacyKeyError();
      material = key.identity;
    } else {
      const opened = await openWithPassphrase(
        backend,
        key.passphrase,
        config.id,
        openOptions.onWarning ?? (() => undefined),
        (candidate) => isWriter(config, candidate),
      );
      material = opened.material;
      keyName = opened.name;
      skipped = opened.skipped;
    }
    const bundle = authenticate(config, material);
    const state = await trustedState(openOptions, backend.location, config, bytes);
    const repository = new Repository(backend, config, bytes, material, keyName, bundle, state, skipped);
    if (openOptions.onWarning) repository.onWarning = openOptions.onWarning;
    return repository;
  }

  get config(): RepositoryConfig {
    return this.session.config;
  }

  get keyKind(): KeyKind {
    return this.session.material.kind;
  }

  /** The writer id of the key in use: what `key list` shows, and what it signs with. */
  get writerId(): string {
    return writerId(this.session.signing.publicRaw);
  }

  get canRead(): boolean {
    return this.session.bundle !== undefined;
  }

  get recipients(): readonly Buffer[] {
    return this.session.config.recipients.map((recipient) => Buffer.from(recipient, 'base64'));
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

  requireReader(action: string): IdentityBundle {
    if (!this.session.bundle) {
      throw new KeyError(`a write-only key cannot ${action}`, {
        hint: 'Use a full key (its password or identity file) for this.',
      });
    }
    return this.session.bundle;
  }

  /**
   * Takes a lock. A shared one then reads the pending prune plans: listed after the lock is
   * durable, so that every prune either sees this lock (and waits for it to go before deleting)
   * or wrote its plan before, which this session then honours (`condemnedPacks`).
   */
  async lock(exclusive: boolean, operation: string): Promise<Lock> {
    const lock = await acquireLock(this.backend, this.writerKeys.metadataKey, { exclusive, operation });
    this.heldLocks.add(lock);
    if (!exclusive) {
      try {
        await this.honourPrunePlans();
      } catch (error) {
        await lock.release().catch(() => undefined);
        throw error;
      }
    }
    return lock;
  }

  /** Reads the pending prune plans a full key signed, and keeps their packs out of deduplication. */
  async honourPrunePlans(): Promise<void> {
    const { trusted, problems } = await this.records.prunePlans();
    for (const { name, problem } of problems) this.onWarning(`ignored prune plan ${name}: ${problem}`);
    for (const { value } of trusted) this.condemnPacks([...value.delete, ...value.repack]);
  }

  /** Keeps these packs' copies out of deduplication and delta bases for the rest of the session. */
  condemnPacks(packs: Iterable<string>): void {
    for (const pack of packs) this.condemnedPacks.add(pack);
  }

  /** Packs the pending prune plans read with this session's lock will delete or repack. */
  get pendingPrunePacks(): ReadonlySet<string> {
    return this.condemnedPacks;
  }

  /** Lets packs a prune no longer deletes be deduplicated onto again. */
  acquitPacks(packs: Iterable<string>): void {
    for (const pack of packs) this.condemnedPacks.delete(pack);
  }

  // ---- removal records

  /** Snapshots a trusted removal record names (read once a session, renewed after a removal). */
  removedSnapshotIds(fresh = false): Promise<ReadonlySet<string>> {
    if (fresh) this.removedSnapshots = undefined;
    this.removedSnapshots ??= this.records.removals().then(({ trusted, problems }) => {
      for (const { name, problem } of problems) this.onWarning(`ignored removal record ${name}: ${problem}`);
      return new Set(trusted.flatMap((record) => record.value.snapshots));
    });
    return this.removedSnapshots;
  }

  /**
   * Removes snapshots (full keys only): a removal record signed by this key first, so that no
   * client takes them for deleted by someone else, then their files. Returns the files the
   * storage keeps locked for now; they stay hidden, and a later prune deletes them.
   */
  async removeSnapshots(
    ids: readonly string[],
    reason: RemovalReason,
    wal: readonly string[] = [],
  ): Promise<ObjectLockedError[]> {
    this.requireReader('remove snapshots');
    if (ids.length === 0 && wal.length === 0) return [];
    await this.records.writeRemoval({
      version: 1,
      created: new Date().toISOString(),
      reason,
      snapshots: [...ids],
      ...(wal.length > 0 ? { wal: [...wal] } : {}),
    });
    this.removedSnapshots = undefined;
    return [...(await this.snapshots.deleteRemoved(ids)), ...(await this.wal.remove(wal))];
  }

  /** WAL files trusted removal records name, whether or not they are still stored. */
  async removedWalNames(): Promise<ReadonlySet<string>> {
    const { trusted } = await this.records.removals();
    return new Set(trusted.flatMap((record) => record.value.wal ?? []));
  }

  /** Deletes the files of snapshots already recorded as removed (finishing a crashed removal). */
  deleteRemovedSnapshotFiles(ids: readonly string[]): Promise<ObjectLockedError[]> {
    return this.snapshots.deleteRemoved(ids);
  }

  /**
   * Replaces removal records by one listing all they list, so that they do not pile up over years;
   * of the WAL files they name, only those still stored (locked) are carried over.
   */
  async compactRemovalRecords(walStillStored: ReadonlySet<string> = new Set()): Promise<number> {
    const { trusted } = await this.records.removals();
    if (trusted.length < 2) return 0;
    await this.resignRemovals(trusted, (name) => walStillStored.has(name));
    return trusted.length;
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

  /** Runs `action` holding a lock (exclusive: while no one else holds any), released however it ends. */
  async withLock<T>(
    operation: string,
    { exclusive }: { exclusive: boolean },
    action: () => Promise<T>,
  ): Promise<T> {
    return holding(await this.lock(exclusive, operation), action);
  }

  /** Runs `action`, which only reads, holding the lock `readLock` takes, released however it ends. */
  async withReadLock<T>(operation: string, action: () => Promise<T>): Promise<T> {
    return holding(await this.readLock(operation), action);
  }

  // ---- index

  /**
   * Brings the in-memory index up to date. Index files never change once written, so only those
   * not loaded yet are read: operations can call this freely without reading the index twice.
   * A damaged index file is skipped with a warning: its packs are then unknown, so a backup
   * stores their blobs again and only reads that need them fail.
   */
  async loadIndex(): Promise<void> {
    // A prune replaces index files: it writes the new ones before it deletes the old, so when a
    // listed file has gone by the time it is read, listing again finds what replaced it.
    for (let vanished = true; vanished;) {
      vanished = false;
      for await (const object of this.backend.list(folderOf('index'))) {
        if (this.loadedIndexFiles.has(object.name)) continue;
        let content: IndexFileContent;
        try {
          content = await this.readIndexFile(object.name, await this.backend.get(object.name));
        } catch (error) {
          if (error instanceof ObjectNotFoundError) {
            vanished = true;
            continue;
          }
          this.loadedIndexFiles.add(object.name);
          if (!(error instanceof VerificationError)) throw error;
          this.onWarning(`skipped ${error.message}; run \`strongbox check\``);
          continue;
        }
        this.loadedIndexFiles.add(object.name);
        this.index.addIndexFile(object.name, content);
      }
    }
  }

  /**
   * An index file's content, when it is intact and its writer trusted: signed by a current
   * writer, or vouched for by an endorsement. Anything else is a VerificationError naming it.
   */
  async readIndexFile(name: string, bytes: Buffer): Promise<IndexFileContent> {
    const signed = signatureOf('index', bytes);
    let content: unknown;
    try {
      content = signed
        ? openJson(SIGNED_INDEX, this.writerKeys.metadataKey, signed.content)
        : openJson(LEGACY_INDEX, this.writerKeys.metadataKey, bytes);
    } catch (cause) {
      if (!(
        cause instanceof AuthenticationFailure ||
        cause instanceof MalformedFile ||
        cause instanceof SyntaxError
      ))
        throw cause;
      throw new VerificationError(`index file ${name}: it is damaged`, {
        cause,
        hint: 'Run `strongbox check` to see which snapshots it affects.',
      });
    }
    const verdict = await this.trust.judge('index', objectId('index', name), bytes, signed);
    if (!verdict.trusted)
      throw new VerificationError(`index file ${name}: it is not trusted: ${verdict.problem}`, {
        hint: 'Run `strongbox check`; `strongbox repair index` rebuilds the index from the packs.',
      });
    return parseIndexFile(content, objectId('index', name));
  }

  /** Writes an index file for packs that are already durable; returns its name and size. */
  async writeIndex(records: readonly IndexedPackRecord[]): Promise<{ name: string; size: number }> {
    const sealed = sealJson(SIGNED_INDEX, this.writerKeys.metadataKey, serializeIndex(records));
    const bytes = signObject('index', this.session.config.id, sealed, this.session.signing);
    const name = objectName('index', createHash('sha256').update(bytes).digest('hex'));
    await this.backend.put(name, bytes, { retain: true });
    this.loadedIndexFiles.add(name);
    for (const record of records) this.index.addPack(record, name);
    return { name, size: bytes.length };
  }

  /** Every snapshot and index file with the verdict of the repository's trust, for key retirement. */
  private async judgeAllObjects() {
    const judged: { kind: 'snapshot' | 'index'; id: string; writer?: string; current: boolean }[] = [];
    for (const kind of ['snapshot', 'index'] as const) {
      for await (const object of this.backend.list(folderOf(kind))) {
        const id = objectId(kind, object.name);
        const bytes = await this.backend.get(object.name);
        const verdict = await this.trust.judge(kind, id, bytes, signatureOf(kind, bytes));
        if (verdict.trusted)
          judged.push({
            kind,
            id,
            current: verdict.writer.current,
            ...(verdict.writer.id ? { writer: verdict.writer.id } : {}),
          });
      }
    }
    return judged;
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
    try {
      return await this.readBlobOnce(id);
    } catch (error) {
      // A prune may have moved the blob since this session loaded the index: it writes the new
      // copy, and the index file listing it, before it deletes the old pack. So a pack found
      // missing sends the reader to the index files written since.
      if (!(error instanceof VerificationError) || !this.missingPacks.size) throw error;
      const known = this.index.locations(id).length;
      await this.loadIndex();
      if (this.index.locations(id).length === known) throw error;
      return this.readBlobOnce(id);
    }
  }

  private async readBlobOnce(id: string): Promise<Buffer> {
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
      this.missingPacks.add(copy.pack);
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
      if (error instanceof ObjectNotFoundError) {
        this.missingPacks.add(copy.pack);
        throw new DamagedBlobError(id, copy.pack, 'its pack is missing', error);
      }
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
  /**
   * A copy's stored form (decrypted, still compressed or a delta), once the copy has been read
   * whole and authenticated: what prune moves into a new pack without compressing it again.
   * Throws as `readBlob` does for a copy that cannot be read.
   */
  async readStoredForm(id: string, copy: IndexedBlob): Promise<Buffer> {
    const refusal = await this.checkAgainstTable(id, copy);
    if (refusal && refusal !== 'unverified') throw refusal;
    const sealed = await this.readStored(id, copy);
    const keys = this.dataKeys(copy.pack);
    await this.decodeBlob(id, copy, sealed, keys);
    const aad = blobAad(copy.type, Buffer.from(id, 'hex'));
    for (const key of keys) {
      const stored = openOrUndefined(key, sealed, aad);
      if (stored) return stored;
    }
    throw new DamagedBlobError(id, copy.pack, 'it fails authentication');
  }

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
      // Deltas against one base often come together (the days of one database): its plaintext,
      // authenticated by its id, is kept for the next.
      const base = this.lastBase?.id === copy.base ? this.lastBase.plain : await this.readBlob(copy.base);
      this.lastBase = { id: copy.base, plain: base };
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
      this.condemnedPacks.size === 0 &&
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
      !this.condemnedPacks.has(copy.pack) &&
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
    for await (const object of this.backend.list(folderOf('pack'))) stored.set(object.name, object.size);
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
    return decodeTree(await this.readBlob(id), id);
  }

  // ---- snapshots (snapshot-store.ts)

  async saveSnapshot(header: SnapshotHeader, body: SnapshotBody): Promise<{ id: string; size: number }> {
    for (const lock of this.heldLocks) {
      if (lock.isReleased) this.heldLocks.delete(lock);
      else await lock.confirm();
    }
    return this.snapshots.save(header, body);
  }

  /** Every trusted snapshot's header, oldest first. */
  listSnapshots(filter: SnapshotFilter = {}): Promise<SnapshotInfo[]> {
    return this.snapshots.list(filter);
  }

  scanSnapshots(filter: SnapshotFilter = {}): Promise<SnapshotListing> {
    return this.snapshots.scan(filter);
  }

  loadSnapshot(id: string): Promise<SnapshotInfo & { body: SnapshotBody }> {
    return this.snapshots.load(id);
  }

  findSnapshot(reference: string, filter: SnapshotFilter = {}): Promise<SnapshotInfo> {
    return this.snapshots.find(reference, filter);
  }

  // ---- audit log and results (audit-log.ts, result-records.ts)

  /** Appends the audit record of one operation, signed by this key (write-only keys too). */
  appendAudit(entry: AuditEntry): Promise<string> {
    return this.auditLog.append(entry);
  }

  /** The audit records a query selects, oldest first, damaged and untrusted ones shown as such. */
  readAuditLog(query: AuditLogQuery = {}): Promise<AuditLogEntry[]> {
    return this.auditLog.read(query);
  }

  /** Records a drill's or a check's result, signed by this full key; returns the record's name. */
  async recordResult<K extends ResultKind>(kind: K, result: ResultKinds[K]): Promise<string> {
    this.requireReader(`record ${kind} results`);
    return this.results.record(kind, result);
  }

  /** The results of `kind` a current full key signed, oldest first, and what is wrong with the others. */
  listResults<K extends ResultKind>(kind: K): Promise<ResultListing<ResultKinds[K]>> {
    return this.results.list(kind);
  }

  private async trustedResults() {
    return {
      drill: (await this.results.list('drill')).trusted,
      check: (await this.results.list('check')).trusted,
    };
  }

  /** Results signed by keys that just retired, signed again by this key (ResultRecords.carryOver). */
  private carryResultsOver(before: Awaited<ReturnType<Repository['trustedResults']>>): Promise<void> {
    return this.results.carryOver(before, (writer) =>
      this.session.config.writers.some((entry) => entry.id === writer && entry.kind === 'full'),
    );
  }

  // ---- keys (key-ring.ts)

  listKeys(): Promise<KeyListing[]> {
    return this.keyRing.list();
  }

  addKey(passphrase: string, kind: KeyKind): Promise<string> {
    return this.keyRing.add(passphrase, kind);
  }

  /** The contents of an identity file for a new key of `kind`; the caller writes it with mode 0600. */
  exportIdentity(kind: KeyKind): Promise<string> {
    return this.keyRing.exportIdentity(kind);
  }

  async removeKey(id: string): ReturnType<KeyRing['remove']> {
    const removals = await this.records.removals();
    const results = await this.trustedResults();
    const result = await this.keyRing.remove(id);
    if (result.retired.length > 0) {
      await this.resignRemovals(removals.trusted);
      await this.carryResultsOver(results);
    }
    return result;
  }

  changePassphrase(passphrase: string): Promise<string> {
    return this.keyRing.changePassphrase(passphrase);
  }

  async rotate(passphrase: string | undefined): ReturnType<KeyRing['rotate']> {
    const removals = await this.records.removals();
    const results = await this.trustedResults();
    const result = await this.keyRing.rotate(passphrase);
    await this.resignRemovals(removals.trusted);
    await this.carryResultsOver(results);
    return result;
  }

  /**
   * After keys retire, removal records they signed are no longer believed: the records trusted
   * before are merged into one this key signs, so that no client takes those removals for
   * deletions. Killed before, clients report those snapshots disappeared: a false alarm, never a
   * hidden deletion.
   */
  private async resignRemovals(
    before: readonly TrustedRecord<RemovalRecord>[],
    keepWal: (name: string) => boolean = () => true,
  ): Promise<void> {
    if (before.length === 0) return;
    const snapshots = [...new Set(before.flatMap((record) => record.value.snapshots))].sort();
    const wal = [...new Set(before.flatMap((record) => record.value.wal ?? []))].filter(keepWal).sort();
    await this.records.writeRemoval({
      version: 1,
      created: new Date().toISOString(),
      reason: 'compacted',
      snapshots,
      ...(wal.length > 0 ? { wal } : {}),
    });
    for (const { name } of before) await this.records.delete(name);
    this.removedSnapshots = undefined;
  }

  async close(): Promise<void> {
    await this.backend.close();
  }
}

/** The config, parsed against its schema; what cannot be used is an error saying what to do. */
async function readConfig(backend: StorageBackend): Promise<{ config: RepositoryConfig; bytes: Buffer }> {
  let bytes: Buffer;
  try {
    const stat = await backend.stat(CONFIG_NAME);
    if (stat && stat.size > MAX_CONFIG_BYTES)
      throw new VerificationError(
        `the repository config is ${stat.size} bytes, more than strongbox ever writes`,
      );
    bytes = await backend.get(CONFIG_NAME);
  } catch (error) {
    if (error instanceof ObjectNotFoundError) {
      throw new NoRepositoryError(backend.location);
    }
    throw error;
  }
  try {
    return { config: parseConfig(bytes), bytes };
  } catch (error) {
    if (!(error instanceof ConfigRefused)) throw error;
    if (error.reason === 'legacy-version') throw new LegacyFormatError(backend.location, 1);
    if (error.reason === 'unsupported-version')
      throw new StrongboxError(
        `repository format version ${error.version} is not supported by this strongbox`,
        {
          hint: 'Upgrade strongbox.',
        },
      );
    throw new VerificationError(`the repository config is damaged: ${error.message}`, {
      hint: 'Restore the config from a copy of the repository; do not write to it until you know why.',
    });
  }
}

/**
 * Checks that the config is what the administrator signed and that this key is one of its
 * writers; returns the identity bundle for a full key.
 */
function authenticate(config: RepositoryConfig, material: KeyMaterial): IdentityBundle | undefined {
  const listed = isWriter(config, material);
  if (material.kind === 'full') {
    const bundle = openBundle(config, identityFromRaw(material.unlockKey));
    if (!bundle && !listed) throw new RetiredKeyError('full', false);
    if (!bundle || !configSignatureValid(config, bundle.admin.publicRaw)) throw configSignatureError();
    if (!listed) throw new RetiredKeyError('full', false);
    return bundle;
  }
  if (!configSignatureValid(config, material.adminPublicKey)) {
    // Only wording: the list is not authenticated for a key that cannot check the signature.
    if (config.retiredAdminKeys.includes(material.adminPublicKey.toString('base64')))
      throw new RetiredKeyError('write-only', true);
    throw configSignatureError();
  }
  if (!listed) throw new RetiredKeyError('write-only', false);
  return undefined;
}

function isWriter(config: RepositoryConfig, material: KeyMaterial): boolean {
  const signing = new SigningKey(material.signingKey).publicRaw.toString('base64');
  return config.writers.some((writer) => writer.publicKey === signing);
}

function configSignatureError(): VerificationError {
  return new VerificationError('the repository config signature does not verify', {
    hint: 'The config was altered or replaced; do not write to this repository until you know why.',
  });
}

async function trustedState(
  options: OpenOptions,
  location: string,
  config: RepositoryConfig,
  configBytes: Buffer,
): Promise<LocalState | undefined> {
  if (options.stateDirectory === false) return undefined;
  const state = await LocalState.load(
    options.stateDirectory ?? defaultStateDirectory(),
    config.id,
    location,
    options.onWarning ?? (() => undefined),
  );
  state.checkConfig(config.epoch, configBytes);
  await state.save();
  return state;
}

/**
 * The signature trailer of an index file or snapshot, if its format has one: a signed index file
 * begins with SBI2, a signed snapshot is of version 2 (format-1 objects carry none).
 */
function signatureOf(kind: 'snapshot' | 'index', bytes: Buffer): SignedParts | undefined {
  const signedFormat =
    kind === 'index' ? bytes.subarray(0, 4).toString('latin1') === SIGNED_INDEX : bytes[4] === 2;
  return signedFormat ? splitSigned(bytes) : undefined;
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
