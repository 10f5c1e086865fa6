import { createHash } from 'node:crypto';
import { z } from 'zod';
import { SigningKey } from '../crypto/signing.ts';
import { writerId } from './signed-object.ts';
import { base64Of, firstIssue } from '../util/schema.ts';
import os from 'node:os';
import { ConfigError } from '../errors.ts';
import { currentUsername } from '../util/host.ts';
import { AuthenticationFailure, open, seal } from '../crypto/aead.ts';
import { derivePassphraseKey, newScryptParams, type ScryptParams } from '../crypto/kdf.ts';
import { objectName } from './layout.ts';

/**
 * Key slots (`keys/<id>`): the repository secrets sealed under a key derived from a passphrase.
 * A full key holds both secrets; a write-only key holds the writer secret and the administrator's
 * public key it pins, and can never decrypt stored data (docs/FORMAT.md, "Threat model").
 */
export type KeyKind = 'full' | 'write-only';

/**
 * What a key holds. Every key has the writer secret (chunking, blob ids, metadata) and its own
 * Ed25519 signing key, whose public half the signed config lists: what it writes is known to be
 * its own. A full key also holds its own X25519 unlock key, to which the config's identity bundle
 * is wrapped; a write-only key instead pins the administrator's public key it checks the config with.
 */
export type KeyMaterial =
  | { kind: 'full'; repository: string; writerSecret: Buffer; signingKey: Buffer; unlockKey: Buffer }
  | {
      kind: 'write-only';
      repository: string;
      writerSecret: Buffer;
      signingKey: Buffer;
      adminPublicKey: Buffer;
    };

/** A key of format 1 (one reader secret shared by every full key): only `migrate` opens with it. */
export type LegacyKeyMaterial =
  | { kind: 'legacy-full'; repository: string; writerSecret: Buffer; readerSecret: Buffer }
  | { kind: 'legacy-write-only'; repository: string; writerSecret: Buffer; adminPublicKey: Buffer };

const KEY_32 = base64Of(32);
const REPOSITORY_ID = z.string().regex(/^[0-9a-f]{64}$/);
const COMMON = { repository: REPOSITORY_ID, writerSecret: KEY_32 };

/** Format 2 material, told apart from format 1's by its `version`. */
const MATERIAL_SCHEMA = z.discriminatedUnion('kind', [
  z.strictObject({
    version: z.literal(2),
    kind: z.literal('full'),
    ...COMMON,
    signingKey: KEY_32,
    unlockKey: KEY_32,
  }),
  z.strictObject({
    version: z.literal(2),
    kind: z.literal('write-only'),
    ...COMMON,
    signingKey: KEY_32,
    adminPublicKey: KEY_32,
  }),
]);
const LEGACY_MATERIAL_SCHEMA = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('full'), ...COMMON, readerSecret: KEY_32 }),
  z.strictObject({ kind: z.literal('write-only'), ...COMMON, adminPublicKey: KEY_32 }),
]);
type SerializedMaterial = z.infer<typeof MATERIAL_SCHEMA> | z.infer<typeof LEGACY_MATERIAL_SCHEMA>;

export interface KeySlot {
  version: 1;
  kind: KeyKind;
  created: string;
  host: string;
  username: string;
  /** The writer id of the key inside (signed-object.ts writerId), for listings; not authenticated. */
  writer?: string;
  kdf: ScryptParams;
  data: string;
}

/** Key material that is not what strongbox writes: a damaged identity file, or a slot written by something else. */
export class MalformedKeyMaterial extends Error {}

const SLOT_AAD = Buffer.from('strongbox key slot');

export function serializeMaterial(material: KeyMaterial): SerializedMaterial {
  const common = {
    version: 2 as const,
    repository: material.repository,
    writerSecret: material.writerSecret.toString('base64'),
    signingKey: material.signingKey.toString('base64'),
  };
  return material.kind === 'full'
    ? { ...common, kind: 'full', unlockKey: material.unlockKey.toString('base64') }
    : { ...common, kind: 'write-only', adminPublicKey: material.adminPublicKey.toString('base64') };
}

export function deserializeMaterial(value: unknown): KeyMaterial | LegacyKeyMaterial {
  const legacy = typeof value === 'object' && value !== null && !('version' in value);
  const parsed = (legacy ? LEGACY_MATERIAL_SCHEMA : MATERIAL_SCHEMA).safeParse(value);
  if (!parsed.success) throw new MalformedKeyMaterial(firstIssue(parsed.error));
  const material = parsed.data;
  const bytes = (text: string) => Buffer.from(text, 'base64');
  const { repository } = material;
  const writerSecret = bytes(material.writerSecret);
  if (!('version' in material)) {
    return 'readerSecret' in material
      ? { kind: 'legacy-full', repository, writerSecret, readerSecret: bytes(material.readerSecret) }
      : {
          kind: 'legacy-write-only',
          repository,
          writerSecret,
          adminPublicKey: bytes(material.adminPublicKey),
        };
  }
  const signingKey = bytes(material.signingKey);
  return material.kind === 'full'
    ? { kind: 'full', repository, writerSecret, signingKey, unlockKey: bytes(material.unlockKey) }
    : {
        kind: 'write-only',
        repository,
        writerSecret,
        signingKey,
        adminPublicKey: bytes(material.adminPublicKey),
      };
}

export function isLegacy(material: KeyMaterial | LegacyKeyMaterial): material is LegacyKeyMaterial {
  return material.kind === 'legacy-full' || material.kind === 'legacy-write-only';
}

/**
 * Refuses an empty passphrase: anyone who can read the repository could open that slot. Every
 * slot is made here (init, key add, passwd, rotate), so no caller can skip the check.
 */
export async function createKeySlot(material: KeyMaterial, passphrase: string): Promise<KeySlot> {
  if (passphrase === '') throw new ConfigError('a key cannot have an empty password');
  const kdf = newScryptParams();
  const key = await derivePassphraseKey(passphrase, kdf);
  const plaintext = Buffer.from(JSON.stringify(serializeMaterial(material)));
  return {
    version: 1,
    kind: material.kind,
    created: new Date().toISOString(),
    host: os.hostname(),
    username: currentUsername(),
    writer: writerId(new SigningKey(material.signingKey).publicRaw),
    kdf,
    data: seal(key, plaintext, SLOT_AAD).toString('base64'),
  };
}

/** Returns the material, or undefined when the passphrase does not open this slot. */
export async function openKeySlot(
  slot: KeySlot,
  passphrase: string,
): Promise<KeyMaterial | LegacyKeyMaterial | undefined> {
  const key = await derivePassphraseKey(passphrase, slot.kdf);
  let plain: Buffer;
  try {
    plain = open(key, Buffer.from(slot.data, 'base64'), SLOT_AAD);
  } catch (error) {
    if (error instanceof AuthenticationFailure) return undefined;
    throw error;
  }
  return deserializeMaterial(parseJsonOrUndefined(plain.toString('utf8')));
}

function parseJsonOrUndefined(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

export function encodeKeySlot(slot: KeySlot): { name: string; bytes: Buffer } {
  const bytes = Buffer.from(JSON.stringify(slot, null, 2) + '\n');
  return { name: objectName('key', createHash('sha256').update(bytes).digest('hex')), bytes };
}

/** An identity file: the key material itself, for a key kept offline instead of behind a passphrase. */
export function encodeIdentityFile(material: KeyMaterial): string {
  return JSON.stringify({ strongboxIdentity: 1, ...serializeMaterial(material) }, null, 2) + '\n';
}

/** Never throws anything but a ConfigError, whose message names the file as `name` and says what is wrong. */
export function decodeIdentityFile(
  text: string,
  name = 'the identity file',
): KeyMaterial | LegacyKeyMaterial {
  const refuse = (problem: string) => new ConfigError(`${name} is not a strongbox identity file: ${problem}`);
  const value = parseJsonOrUndefined(text);
  if (value === undefined) throw refuse('it is not JSON');
  const envelope = z.looseObject({ strongboxIdentity: z.literal(1) }).safeParse(value);
  if (!envelope.success) throw refuse('it has no "strongboxIdentity": 1');
  const { strongboxIdentity: _, ...fields } = envelope.data;
  try {
    return deserializeMaterial(fields);
  } catch (error) {
    if (error instanceof MalformedKeyMaterial) throw refuse(error.message);
    throw error;
  }
}
