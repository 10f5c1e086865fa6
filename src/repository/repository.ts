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
  MasterIndex,
  serializeIndex,
  type IndexFileContent,
  type IndexedBlob,
  type IndexedPackRecord,
} from './master-index.ts';
import { blobAad } from './pack-format.ts';
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
import { parseIndexFile } from './schemas.ts';
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
  private recipientKeys: Buffer[];

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
    let content: unknown;
    try {
      content = openJson('SBIX', this.writerKeys.metadataKey, bytes);
    } catch (cause) {
      throw new VerificationError(`index file ${name} is damaged`, {
        cause,
        hint: 'Run `strongbox check` to see which snapshots it affects.',
      });
    }
    return parseIndexFile(content, name.slice('index/'.length));
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

  /** The length of a blob's plaintext, from the index. */
  blobLength(id: string): number {
    const length = this.index.rawLength(id);
    if (length === undefined) {
      throw new VerificationError(`blob ${id.slice(0, 16)} is not in the index`, {
        hint: 'Run `strongbox check`.',
      });
    }
    return length;
  }

  /**
   * Reads, decrypts, decompresses and authenticates one blob, from the first of its stored copies
   * that reads back intact; a pack found damaged on the way is remembered (`knownDamagedPacks`).
   */
  async readBlob(id: string): Promise<Buffer> {
    const copies = this.index.locations(id);
    if (copies.length === 0) {
      throw new VerificationError(`blob ${id.slice(0, 16)} is not in the index`, {
        hint: 'Run `strongbox check`.',
      });
    }
    // Copies in packs known to be damaged go last: another copy may be whole.
    copies.sort((a, b) => Number(this.damagedPacks.has(a.pack)) - Number(this.damagedPacks.has(b.pack)));
    let first: VerificationError | undefined;
    for (const copy of copies) {
      try {
        return await this.decodeBlob(id, copy, await this.readStored(id, copy));
      } catch (error) {
        // A damaged copy, or a delta whose base cannot be read: the next copy may do.
        if (!(error instanceof VerificationError)) throw error;
        if (error instanceof DamagedBlobError) this.damagedPacks.add(error.pack);
        first ??= error;
      }
    }
    throw first!;
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

  /** Turns one copy's stored bytes into the blob's plaintext, checking it against its id. */
  async decodeBlob(id: string, copy: IndexedBlob, sealed: Uint8Array): Promise<Buffer> {
    const damaged = (cause?: unknown) =>
      new DamagedBlobError(id, copy.pack, 'it fails authentication', cause);
    const key = this.packKey(copy.pack);
    let plain: Buffer;
    try {
      plain = open(key, sealed, blobAad(copy.type, Buffer.from(id, 'hex')));
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
   * Whether some copy of the blob lies in a pack not known to be damaged, with its delta base
   * likewise: what a writer may deduplicate onto, or take as a delta base.
   */
  hasReadableCopy(id: string, asBase = false): boolean {
    if (this.index.whyUnreadable(id) !== undefined) return false;
    if (this.damagedPacks.size === 0) return true;
    // A base is read whole (reads never follow chains), so only its whole copies count.
    return this.index
      .locations(id)
      .some((copy) =>
        copy.base === undefined
          ? !this.damagedPacks.has(copy.pack)
          : !asBase && !this.damagedPacks.has(copy.pack) && this.hasReadableCopy(copy.base, true),
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
      if (stored.get(packName(pack)) !== this.index.pack(pack)!.size) this.damagedPacks.add(pack);
    }
  }

  packKey(pack: string): Buffer {
    const cached = this.packKeys.get(pack);
    if (cached) return cached;
    const reader = this.requireReader('read backed-up data');
    const indexed = this.index.pack(pack);
    if (!indexed) throw new VerificationError(`pack ${pack.slice(0, 16)} is not in the index`);
    let key: Buffer;
    try {
      key = unwrapKey(indexed.keys, reader.identities);
    } catch (cause) {
      if (!(cause instanceof AuthenticationFailure)) throw cause;
      throw new VerificationError(`the key of pack ${pack.slice(0, 16)} cannot be unwrapped`, {
        cause,
        hint: 'The index entry is damaged, or the pack was written for another repository.',
      });
    }
    this.packKeys.set(pack, key);
    return key;
  }

  async readTree(id: string): Promise<Tree> {
    return decodeTree(await this.readBlob(id), id);
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
