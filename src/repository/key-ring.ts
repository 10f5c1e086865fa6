import { generateIdentity, identityFromRaw } from '../crypto/key-wrap.ts';
import { SigningKey } from '../crypto/signing.ts';
import { ConfigError, KeyError } from '../errors.ts';
import type { StorageBackend } from '../storage/backend.ts';
import {
  CONFIG_NAME,
  encodeConfig,
  reissueConfig,
  rotatedBundle,
  writerEntry,
  type IdentityBundle,
  type RepositoryConfig,
  type WriterEntry,
} from './config.ts';
import { encodeEndorsement, type Endorsement } from './endorsement.ts';
import { createKeySlot, encodeIdentityFile, encodeKeySlot, type KeyKind, type KeyMaterial } from './keys.ts';
import { KEYS_FOLDER, readKeySlots, skippedKeySlotWarning } from './key-slots.ts';
import { objectId, objectName } from './layout.ts';
import type { LocalState } from './local-state.ts';
import { writerId } from './signed-object.ts';
import type { WalSignature } from './wal-store.ts';

/** What an open repository knows of itself that key management reads and replaces. */
export interface RepositorySession {
  readonly backend: StorageBackend;
  config: RepositoryConfig;
  /** The config's bytes as read or written by this session, to notice a change by someone else. */
  configBytes: Buffer;
  material: KeyMaterial;
  /** The key slot this session was opened with; undefined for an identity file. */
  keyName: string | undefined;
  /** Full keys only. */
  bundle: IdentityBundle | undefined;
  signing: SigningKey;
  readonly state: LocalState | undefined;
  /** Files under keys/ already warned about as not valid slots, so a listing does not repeat it. */
  readonly warnedKeySlots: Set<string>;
}

/** A stored object and the writer that signed it, as the repository's trust judged it. */
export interface JudgedObject {
  kind: 'snapshot' | 'index';
  id: string;
  writer?: string;
  /** Signed by a current writer (not only endorsed). */
  current: boolean;
}

export interface KeyRingDependencies {
  /** Runs `action` holding an exclusive lock on the repository. */
  withExclusiveLock<T>(operation: string, action: () => Promise<T>): Promise<T>;
  judgeAll(): Promise<JudgedObject[]>;
  /** Who signed each WAL object (WalStore.signatures). */
  walSignatures(): Promise<WalSignature[]>;
  warn(message: string): void;
}

export interface KeyListing {
  /** The key slot's id, or the writer id of a key kept in an identity file. */
  id: string;
  kind: KeyKind;
  created: string;
  host: string;
  username: string;
  /** The key this session was opened with. */
  current: boolean;
  /** The writer id its snapshots and index files are signed as (`snapshots` shows it). */
  writer?: string;
  /** Retired keys no longer open the repository: removed, or write-only keys from before a rotation. */
  status: 'active' | 'retired';
  /** False for a key that lives only in an identity file. */
  slot: boolean;
}

export interface RetirementResult {
  /** Key slots deleted. */
  removed: string[];
  /** Writer ids that no longer write (including write-only keys retired by a new administrator key). */
  retired: string[];
  /** A new administrator key and data identity: every write-only key must be issued again. */
  rotated: boolean;
}

/**
 * Keys: adding, listing, removing and rotating them. Every change goes through the signed config
 * (its writers and, on rotation, its administrator key and data identity); a retired key's earlier
 * snapshots, index files and WAL objects stay trusted through an endorsement, and nothing it signs
 * later is.
 */
export class KeyRing {
  constructor(
    private readonly session: RepositorySession,
    private readonly deps: KeyRingDependencies,
  ) {}

  async list(): Promise<KeyListing[]> {
    const { config } = this.session;
    const active = new Set(config.writers.map((writer) => writer.id));
    const ownWriter = writerId(this.session.signing.publicRaw);
    const keys: KeyListing[] = [];
    const withSlot = new Set<string>();
    const { slots, skipped } = await readKeySlots(this.session.backend);
    for (const file of skipped) {
      if (this.session.warnedKeySlots.has(file.name)) continue;
      this.session.warnedKeySlots.add(file.name);
      this.deps.warn(skippedKeySlotWarning(file));
    }
    for (const { name, slot } of slots) {
      if (slot.writer) withSlot.add(slot.writer);
      keys.push({
        id: objectId('key', name),
        kind: slot.kind,
        created: slot.created,
        host: slot.host,
        username: slot.username,
        current: name === this.session.keyName,
        ...(slot.writer ? { writer: slot.writer } : {}),
        status: slot.writer && active.has(slot.writer) ? 'active' : 'retired',
        slot: true,
      });
    }
    for (const writer of config.writers) {
      if (withSlot.has(writer.id)) continue;
      keys.push({
        id: writer.id,
        kind: writer.kind,
        created: writer.added,
        host: '',
        username: '',
        current: this.session.keyName === undefined && writer.id === ownWriter,
        writer: writer.id,
        status: 'active',
        slot: false,
      });
    }
    return keys.sort((a, b) => a.created.localeCompare(b.created));
  }

  async add(passphrase: string, kind: KeyKind): Promise<string> {
    const material = this.newMaterial(kind);
    // The slot is made (and the password checked) before the config lists the key.
    const slot = encodeKeySlot(await createKeySlot(material, passphrase));
    await this.addWriter(material);
    await this.session.backend.put(slot.name, slot.bytes);
    return objectId('key', slot.name);
  }

  /** An identity file's text for a new key of `kind`, which the config then lists as a writer. */
  async exportIdentity(kind: KeyKind): Promise<string> {
    const material = this.newMaterial(kind);
    await this.addWriter(material);
    return encodeIdentityFile(material);
  }

  /** Removes a key (by slot id or writer id, or a unique prefix). Removing a full key rotates. */
  async remove(reference: string): Promise<RetirementResult> {
    this.requireFull('remove keys');
    const keys = await this.list();
    const matching = keys.filter((key) => key.id.startsWith(reference) || key.writer?.startsWith(reference));
    if (matching.length === 0) {
      // A file skipped as not a valid slot (which `key list` only warns about) can go too.
      const junk: string[] = [];
      for await (const object of this.session.backend.list(KEYS_FOLDER))
        if (objectId('key', object.name).startsWith(reference)) junk.push(object.name);
      if (junk.length === 1) {
        await this.session.backend.delete(junk[0]!);
        return { removed: [objectId('key', junk[0]!)], retired: [], rotated: false };
      }
    }
    if (matching.length !== 1) {
      throw new ConfigError(matching.length ? `key id ${reference} is ambiguous` : `no key ${reference}`, {
        hint: 'Run `strongbox key list`.',
      });
    }
    const key = matching[0]!;
    if (key.current)
      throw new ConfigError('cannot remove the key in use', {
        hint: 'Open the repository with another key to remove this one.',
      });
    let retired: string[] = [];
    const rotated = key.kind === 'full' && key.writer !== undefined && key.status === 'active';
    if (key.writer && key.status === 'active') {
      retired = await this.retire(new Set([key.writer]), rotated, 'key-removed', undefined);
    }
    // Every slot of a retired writer goes with it (a key whose password was changed has one).
    const removed = keys
      .filter((other) => other.slot && (other.id === key.id || (key.writer && other.writer === key.writer)))
      .map((other) => other.id);
    for (const id of removed) await this.session.backend.delete(objectName('key', id));
    return { removed, retired, rotated };
  }

  /** Replaces the current key slot with one for `passphrase`; the new slot is written before the old one goes. */
  async changePassphrase(passphrase: string): Promise<string> {
    const oldName = this.session.keyName;
    if (!oldName)
      throw new ConfigError('this session was opened with an identity file, which has no password');
    const slot = encodeKeySlot(await createKeySlot(this.session.material, passphrase));
    await this.session.backend.put(slot.name, slot.bytes);
    await this.session.backend.delete(oldName);
    this.session.keyName = slot.name;
    return objectId('key', slot.name);
  }

  /**
   * Retires every key: a new data identity and a new administrator key, and new secrets for the
   * key in use, which alone remains. Other full keys must be added again and write-only keys
   * issued again. Old data is not re-encrypted, and stays readable through the bundle.
   */
  async rotate(
    passphrase: string | undefined,
  ): Promise<RetirementResult & { keyId: string | undefined; identityFile?: string }> {
    this.requireFull('rotate keys');
    const material = this.newMaterial('full');
    const slot =
      this.session.keyName && passphrase !== undefined
        ? encodeKeySlot(await createKeySlot(material, passphrase))
        : undefined;
    const keysBefore = await this.list();
    const everyone = new Set(this.session.config.writers.map((writer) => writer.id));
    if (slot) await this.session.backend.put(slot.name, slot.bytes);
    const retired = await this.retire(everyone, true, 'rotation', material);
    // Full keys' slots are of no use any more; write-only slots stay, so that the hosts using
    // them are told to get a new key rather than that their password is wrong.
    const removed = keysBefore.filter((key) => key.slot && key.kind === 'full').map((key) => key.id);
    for (const id of removed) await this.session.backend.delete(objectName('key', id));
    this.session.keyName = slot?.name;
    return {
      keyId: slot ? objectId('key', slot.name) : undefined,
      removed,
      retired,
      rotated: true,
      ...(slot ? {} : { identityFile: encodeIdentityFile(material) }),
    };
  }

  private requireFull(action: string): IdentityBundle {
    const bundle = this.session.bundle;
    if (!bundle || this.session.material.kind !== 'full')
      throw new KeyError(`a write-only key cannot ${action}`, { hint: 'Use a full key.' });
    return bundle;
  }

  private newMaterial(kind: KeyKind): KeyMaterial {
    const bundle = this.requireFull('create keys');
    const { repository, writerSecret } = this.session.material;
    const signingKey = SigningKey.generate().privateRaw;
    if (kind === 'full')
      return { kind, repository, writerSecret, signingKey, unlockKey: generateIdentity().privateRaw };
    return { kind, repository, writerSecret, signingKey, adminPublicKey: bundle.admin.publicRaw };
  }

  private async addWriter(material: KeyMaterial): Promise<void> {
    const bundle = this.requireFull('create keys');
    const { config } = this.session;
    const next = { ...config, writers: [...config.writers, entryFor(material)] };
    await this.writeConfig(reissueConfig(next, bundle), bundle);
  }

  /**
   * Takes `retiring` writers out of the config, with an endorsement of what they wrote so far.
   * With `rotation`, a new administrator key and data identity: every write-only key pins the
   * old administrator key, so each of them retires too. `replacement` (rotate) is the key in
   * use's new material, the only writer left.
   */
  private async retire(
    retiring: Set<string>,
    rotation: boolean,
    reason: Endorsement['reason'],
    replacement: KeyMaterial | undefined,
  ): Promise<string[]> {
    const bundle = this.requireFull('retire keys');
    // Exclusive: no backup may write, signed by a key being retired, after the scan below.
    return this.deps.withExclusiveLock(reason === 'rotation' ? 'key rotation' : 'key removal', async () => {
      const { config } = this.session;
      if (rotation)
        for (const writer of config.writers) if (writer.kind === 'write-only') retiring.add(writer.id);
      const leaving = config.writers.filter((writer) => retiring.has(writer.id));
      const staying = config.writers.filter((writer) => !retiring.has(writer.id));
      const judged = (await this.deps.judgeAll()).filter(
        (object) => object.current && object.writer !== undefined && retiring.has(object.writer),
      );
      const leavingKeys = new Set(leaving.map((writer) => writer.publicKey));
      const wal = (await this.deps.walSignatures())
        .filter((object) => leavingKeys.has(object.signer))
        .map((object) => object.digest);
      const endorsement = encodeEndorsement({
        version: 1,
        created: new Date().toISOString(),
        reason,
        writers: leaving.map(({ id, kind, publicKey }) => ({ id, kind, publicKey })),
        snapshots: judged.filter((object) => object.kind === 'snapshot').map((object) => object.id),
        indexes: judged.filter((object) => object.kind === 'index').map((object) => object.id),
        ...(wal.length > 0 ? { wal } : {}),
      });
      // Written even for writers that left nothing to vouch for: their audit records still name them.
      const endorse = leaving.length > 0;
      if (endorse) await this.session.backend.put(endorsement.name, endorsement.bytes, { retain: true });
      const nextBundle = rotation ? rotatedBundle(bundle) : bundle;
      const next: RepositoryConfig = {
        ...config,
        writers: replacement ? [entryFor(replacement)] : staying,
        endorsements: endorse ? [...config.endorsements, endorsement.id] : config.endorsements,
        retiredAdminKeys: rotation
          ? [...config.retiredAdminKeys, config.adminPublicKey]
          : config.retiredAdminKeys,
      };
      await this.writeConfig(reissueConfig(next, nextBundle), nextBundle);
      if (replacement) {
        this.session.material = replacement;
        this.session.signing = new SigningKey(replacement.signingKey);
      }
      return leaving.map((writer) => writer.id);
    });
  }

  /** Replaces the config, unless someone else replaced it since this session read it. */
  private async writeConfig(next: RepositoryConfig, bundle: IdentityBundle): Promise<void> {
    const { backend, state } = this.session;
    const stored = await backend.get(CONFIG_NAME);
    if (!stored.equals(this.session.configBytes))
      throw new ConfigError('the repository config was changed by someone else while this command ran', {
        hint: 'Run the command again.',
      });
    const bytes = encodeConfig(next);
    await backend.put(CONFIG_NAME, bytes);
    this.session.config = next;
    this.session.configBytes = bytes;
    this.session.bundle = bundle;
    if (state) {
      state.checkConfig(next.epoch, bytes);
      await state.save();
    }
  }
}

function entryFor(material: KeyMaterial): WriterEntry {
  return writerEntry({
    kind: material.kind,
    signing: new SigningKey(material.signingKey),
    ...(material.kind === 'full' ? { unlock: identityFromRaw(material.unlockKey) } : {}),
  });
}
