import { createHash } from 'node:crypto';
import os from 'node:os';
import { z } from 'zod';
import { ConfigError } from '../errors.ts';
import { currentUsername } from '../util/host.ts';
import { base64Of, firstIssue } from '../util/schema.ts';
import { AuthenticationFailure, open, seal } from '../crypto/aead.ts';
import { derivePassphraseKey, newScryptParams, type ScryptParams } from '../crypto/kdf.ts';

/**
 * Key slots (`keys/<id>`): the repository secrets sealed under a key derived from a passphrase.
 * A full key holds both secrets; a write-only key holds the writer secret and the administrator's
 * public key it pins, and can never decrypt stored data (docs/FORMAT.md, "Threat model").
 */
export type KeyKind = 'full' | 'write-only';

export type KeyMaterial =
  | { kind: 'full'; repository: string; writerSecret: Buffer; readerSecret: Buffer }
  | { kind: 'write-only'; repository: string; writerSecret: Buffer; adminPublicKey: Buffer };

export interface KeySlot {
  version: 1;
  kind: KeyKind;
  created: string;
  host: string;
  username: string;
  kdf: ScryptParams;
  data: string;
}

interface SerializedMaterial {
  kind: KeyKind;
  repository: string;
  writerSecret: string;
  readerSecret?: string;
  adminPublicKey?: string;
}

const materialFields = { repository: z.string().regex(/^[0-9a-f]{64}$/), writerSecret: base64Of(32) };

/** What `serializeMaterial` writes and nothing else. */
const serializedMaterialSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('full'), ...materialFields, readerSecret: base64Of(32) }),
  z.strictObject({ kind: z.literal('write-only'), ...materialFields, adminPublicKey: base64Of(32) }),
]) satisfies z.ZodType<SerializedMaterial>;

const SLOT_AAD = Buffer.from('strongbox key slot');

export function serializeMaterial(material: KeyMaterial): SerializedMaterial {
  return material.kind === 'full'
    ? {
        kind: 'full',
        repository: material.repository,
        writerSecret: material.writerSecret.toString('base64'),
        readerSecret: material.readerSecret.toString('base64'),
      }
    : {
        kind: 'write-only',
        repository: material.repository,
        writerSecret: material.writerSecret.toString('base64'),
        adminPublicKey: material.adminPublicKey.toString('base64'),
      };
}

export function deserializeMaterial(value: SerializedMaterial): KeyMaterial {
  const writerSecret = Buffer.from(value.writerSecret, 'base64');
  if (value.kind === 'full' && value.readerSecret) {
    return {
      kind: 'full',
      repository: value.repository,
      writerSecret,
      readerSecret: Buffer.from(value.readerSecret, 'base64'),
    };
  }
  if (value.kind === 'write-only' && value.adminPublicKey) {
    return {
      kind: 'write-only',
      repository: value.repository,
      writerSecret,
      adminPublicKey: Buffer.from(value.adminPublicKey, 'base64'),
    };
  }
  throw new Error('key material is incomplete');
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
    kdf,
    data: seal(key, plaintext, SLOT_AAD).toString('base64'),
  };
}

/** Returns the material, or undefined when the passphrase does not open this slot. */
export async function openKeySlot(slot: KeySlot, passphrase: string): Promise<KeyMaterial | undefined> {
  const key = await derivePassphraseKey(passphrase, slot.kdf);
  try {
    const plain = open(key, Buffer.from(slot.data, 'base64'), SLOT_AAD);
    return deserializeMaterial(serializedMaterialSchema.parse(JSON.parse(plain.toString('utf8'))));
  } catch (error) {
    if (error instanceof AuthenticationFailure) return undefined;
    throw error;
  }
}

export function encodeKeySlot(slot: KeySlot): { name: string; bytes: Buffer } {
  const bytes = Buffer.from(JSON.stringify(slot, null, 2) + '\n');
  return { name: `keys/${createHash('sha256').update(bytes).digest('hex')}`, bytes };
}

/** An identity file: the key material itself, for a key kept offline instead of behind a passphrase. */
export function encodeIdentityFile(material: KeyMaterial): string {
  return JSON.stringify({ strongboxIdentity: 1, ...serializeMaterial(material) }, null, 2) + '\n';
}

/** Never throws anything but a ConfigError, whose message names the file as `name` and says what is wrong. */
export function decodeIdentityFile(text: string, name = 'the identity file'): KeyMaterial {
  const refuse = (problem: string) => new ConfigError(`${name} is not a strongbox identity file: ${problem}`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw refuse('it is not JSON');
  }
  const envelope = z.looseObject({ strongboxIdentity: z.literal(1) }).safeParse(value);
  if (!envelope.success) throw refuse('it has no "strongboxIdentity": 1');
  const { strongboxIdentity: _, ...fields } = envelope.data;
  const material = serializedMaterialSchema.safeParse(fields);
  if (!material.success) throw refuse(firstIssue(material.error));
  return deserializeMaterial(material.data);
}
