import { createHash } from 'node:crypto';
import { z } from 'zod';
import { AuthenticationFailure, open } from '../crypto/aead.ts';
import { generateIdentity, identityFromRaw } from '../crypto/key-wrap.ts';
import { publicFromPrivate, SigningKey, verifySignature } from '../crypto/signing.ts';
import { ConfigError, KeyError, VerificationError } from '../errors.ts';
import { ObjectNotFoundError, type StorageBackend } from '../storage/backend.ts';
import {
  CONFIG_NAME,
  encodeConfig,
  MAX_CONFIG_BYTES,
  reissueConfig,
  writerEntry,
  type RepositoryConfig,
} from './config.ts';
import { encodeEndorsement } from './endorsement.ts';
import {
  createKeySlot,
  encodeIdentityFile,
  encodeKeySlot,
  openKeySlot,
  type KeyMaterial,
  type LegacyKeyMaterial,
} from './keys.ts';
import { readKeySlots } from './key-slots.ts';
import { folderOf, isContentId, objectId } from './layout.ts';
import { deriveWriterKeys, identitiesKey } from './secrets.ts';
import { openJson } from './sealed-file.ts';
import { splitSnapshot } from './snapshot.ts';

/**
 * `strongbox migrate`: format 1 to format 2, rewriting metadata only (docs/FORMAT.md,
 * "Migrating from format 1"). The config gets writers, an epoch and a new administrator key; the
 * snapshots and index files that exist are endorsed by content hash, since format 1 did not sign
 * them; the key used becomes the only key (a format-1 key cannot sign, so the others must be added
 * again). Packs are not touched.
 */
const KEY_32 = z.string().regex(/^[A-Za-z0-9+/]{43}=$/);
const LEGACY_CONFIG = z.strictObject({
  version: z.literal(1),
  id: z.string().regex(/^[0-9a-f]{64}$/),
  created: z.string().max(64),
  chunker: z.strictObject({ min: z.number().int(), avg: z.number().int(), max: z.number().int() }),
  packSize: z.number().int(),
  compression: z.strictObject({ algorithm: z.literal('zstd'), level: z.number().int().min(0).max(19) }),
  recipients: z.array(KEY_32).min(1).max(16),
  adminPublicKey: KEY_32,
  identities: z.string().max(4 * 1024 * 1024),
  signature: z.string().max(128),
});
type LegacyConfig = z.infer<typeof LEGACY_CONFIG>;

const LEGACY_BUNDLE = z.strictObject({ x25519: z.array(KEY_32).min(1).max(100_000), admin: KEY_32 });
const LEGACY_BUNDLE_AAD = Buffer.from('strongbox identities');

export interface MigrationResult {
  /** The new key slot's id; undefined when the key was an identity file. */
  keyId?: string;
  /** The new identity file's text, for a migration made with an identity file. */
  identityFile?: string;
  snapshots: number;
  indexFiles: number;
  /** Format-1 key slots removed: their keys must be added again. */
  removedKeys: string[];
  /** Snapshots and index files that failed to decode with the repository's keys: left untrusted. */
  skipped: string[];
}

export async function migrateRepository(
  backend: StorageBackend,
  key: { passphrase: string } | { identity: KeyMaterial | LegacyKeyMaterial },
): Promise<MigrationResult> {
  const { config, bytes } = await readLegacyConfig(backend);
  const material = await legacyMaterial(backend, config, key);
  const writer = deriveWriterKeys(material.writerSecret);
  const bundle = openLegacyBundle(config, material.readerSecret);

  const endorsed = { snapshots: [] as string[], indexes: [] as string[] };
  const skipped: string[] = [];
  for (const kind of ['snapshot', 'index'] as const) {
    for await (const object of backend.list(folderOf(kind))) {
      const id = objectId(kind, object.name);
      const content = await backend.get(object.name);
      if (isContentId(id) && hashOf(content) === id && decodes(kind, content, writer.metadataKey))
        (kind === 'snapshot' ? endorsed.snapshots : endorsed.indexes).push(id);
      else skipped.push(object.name);
    }
  }

  const signing = SigningKey.generate();
  const unlock = generateIdentity();
  const newMaterial: KeyMaterial = {
    kind: 'full',
    repository: config.id,
    writerSecret: material.writerSecret,
    signingKey: signing.privateRaw,
    unlockKey: unlock.privateRaw,
  };
  const endorsement = encodeEndorsement({
    version: 1,
    created: new Date().toISOString(),
    reason: 'migration',
    writers: [],
    ...endorsed,
  });
  const draft: RepositoryConfig = {
    version: 2,
    id: config.id,
    created: config.created,
    epoch: 0,
    chunker: config.chunker,
    packSize: config.packSize,
    compression: config.compression,
    recipients: [],
    adminPublicKey: '',
    // The format-1 administrator key: format-1 write-only keys are told they must be issued again.
    retiredAdminKeys: [config.adminPublicKey],
    writers: [writerEntry({ kind: 'full', signing, unlock: unlock.identity })],
    endorsements: [endorsement.id],
    identities: '',
    signature: '',
  };
  const next = reissueConfig(draft, { identities: bundle, admin: SigningKey.generate() });

  const slotsBefore: string[] = [];
  for (const { name } of (await readKeySlots(backend)).slots) slotsBefore.push(name);
  await backend.put(endorsement.name, endorsement.bytes, { retain: true });
  let keyId: string | undefined;
  if ('passphrase' in key) {
    const slot = encodeKeySlot(await createKeySlot(newMaterial, key.passphrase));
    await backend.put(slot.name, slot.bytes);
    keyId = objectId('key', slot.name);
  }
  // The switch: nothing before it changes what format 1 reads, and a run killed before it can be run again.
  const stored = await backend.get(CONFIG_NAME);
  if (!stored.equals(bytes))
    throw new ConfigError('the repository config changed while it was being migrated', {
      hint: 'Run `strongbox migrate` again.',
    });
  await backend.put(CONFIG_NAME, encodeConfig(next));
  for (const name of slotsBefore) await backend.delete(name);
  return {
    ...(keyId ? { keyId } : { identityFile: encodeIdentityFile(newMaterial) }),
    snapshots: endorsed.snapshots.length,
    indexFiles: endorsed.indexes.length,
    removedKeys: slotsBefore.map((name) => objectId('key', name)),
    skipped,
  };
}

async function readLegacyConfig(backend: StorageBackend): Promise<{ config: LegacyConfig; bytes: Buffer }> {
  let bytes: Buffer;
  try {
    bytes = await backend.get(CONFIG_NAME);
  } catch (error) {
    if (error instanceof ObjectNotFoundError)
      throw new ConfigError(`there is no strongbox repository at ${backend.location}`);
    throw error;
  }
  if (bytes.length > MAX_CONFIG_BYTES) throw new VerificationError('the repository config is too large');
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    value = undefined;
  }
  if ((value as { version?: unknown } | undefined)?.version === 2)
    throw new ConfigError(`the repository at ${backend.location} is of format version 2 already`);
  const parsed = LEGACY_CONFIG.safeParse(value);
  if (!parsed.success) throw new VerificationError('the repository config is not a format-1 config');
  return { config: parsed.data, bytes };
}

async function legacyMaterial(
  backend: StorageBackend,
  config: LegacyConfig,
  key: { passphrase: string } | { identity: KeyMaterial | LegacyKeyMaterial },
): Promise<Extract<LegacyKeyMaterial, { kind: 'legacy-full' }>> {
  const candidates: (KeyMaterial | LegacyKeyMaterial)[] = [];
  if ('identity' in key) candidates.push(key.identity);
  else
    for (const { slot } of (await readKeySlots(backend)).slots) {
      const opened = await openKeySlot(slot, key.passphrase);
      if (opened) candidates.push(opened);
    }
  const mine = candidates.filter((material) => material.repository === config.id);
  const full = mine.find((material) => material.kind === 'legacy-full');
  if (full?.kind === 'legacy-full') return full;
  if (mine.length > 0) throw new KeyError('migrating a repository needs a full key, not a write-only one');
  throw new KeyError(`wrong password: no key of the repository at ${backend.location} opens with it`);
}

function openLegacyBundle(config: LegacyConfig, readerSecret: Buffer) {
  let bundle: z.infer<typeof LEGACY_BUNDLE>;
  try {
    const plain = open(
      identitiesKey(readerSecret),
      Buffer.from(config.identities, 'base64'),
      LEGACY_BUNDLE_AAD,
    );
    bundle = LEGACY_BUNDLE.parse(JSON.parse(plain.toString('utf8')));
  } catch (cause) {
    if (!(cause instanceof AuthenticationFailure)) throw cause;
    throw new KeyError('this key cannot open the repository identities', { cause });
  }
  const admin = Buffer.from(bundle.admin, 'base64');
  const signed = Buffer.from(
    JSON.stringify([
      config.version,
      config.id,
      config.created,
      [config.chunker.min, config.chunker.avg, config.chunker.max],
      config.packSize,
      [config.compression.algorithm, config.compression.level],
      config.recipients,
      config.adminPublicKey,
      config.identities,
    ]),
  );
  const adminPublic = publicFromPrivate(admin);
  if (
    adminPublic.toString('base64') !== config.adminPublicKey ||
    !verifySignature(adminPublic, signed, Buffer.from(config.signature, 'base64'))
  )
    throw new VerificationError('the format-1 config signature does not verify: it was altered', {
      hint: 'Do not migrate this repository until you know why.',
    });
  return bundle.x25519.map((raw) => identityFromRaw(Buffer.from(raw, 'base64')));
}

/** Whether a format-1 object opens with the metadata key: a stray or altered file is not endorsed. */
function decodes(kind: 'snapshot' | 'index', bytes: Buffer, metadataKey: Buffer): boolean {
  try {
    if (kind === 'index') openJson('SBIX', metadataKey, bytes);
    else {
      const parts = splitSnapshot(bytes);
      if (parts.version !== 1) return false;
      openJson('SBSH', metadataKey, parts.header);
    }
    return true;
  } catch {
    return false;
  }
}

function hashOf(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
