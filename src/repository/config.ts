import { randomBytes } from 'node:crypto';
import { open, seal } from '../crypto/aead.ts';
import { generateIdentity, identityFromRaw, type Identity } from '../crypto/key-wrap.ts';
import { generateSigningKey, publicFromPrivate, signMessage, verifySignature } from '../crypto/signing.ts';
import { DEFAULT_CHUNKER_PARAMS, validateChunkerParams, type ChunkerParams } from '../chunking/fastcdc.ts';
import { ConfigError, KeyError, StrongboxError, VerificationError } from '../errors.ts';
import { AuthenticationFailure } from '../crypto/aead.ts';
import { identitiesKey } from './secrets.ts';

export const REPOSITORY_VERSION = 1;
export const CONFIG_NAME = 'config';

/** The `config` object, plain JSON: nothing in it is secret, and the administrator's signature covers it. */
export interface RepositoryConfig {
  version: number;
  id: string;
  created: string;
  chunker: ChunkerParams;
  packSize: number;
  compression: { algorithm: 'zstd'; level: number };
  /** X25519 public keys (base64) that new pack and snapshot keys are wrapped to. */
  recipients: string[];
  /** Ed25519 public key (base64) whose signature writers check before trusting `recipients`. */
  adminPublicKey: string;
  /** AES-256-GCM under the reader secret: every X25519 identity ever used, and the admin signing key. */
  identities: string;
  signature: string;
}

export interface RepositoryOptions {
  chunker?: ChunkerParams;
  packSize?: number;
  compressionLevel?: number;
}

interface IdentityBundle {
  x25519: string[];
  admin: string;
}

export interface ReaderIdentities {
  identities: Identity[];
  adminPrivate: Buffer;
}

const IDENTITIES_AAD = Buffer.from('strongbox identities');

/** The bytes the signature covers: every field but the signature, in a fixed order. */
function signedBytes(config: RepositoryConfig): Buffer {
  const { version, id, created, chunker, packSize, compression, recipients, adminPublicKey, identities } =
    config;
  return Buffer.from(
    JSON.stringify([
      version,
      id,
      created,
      [chunker.min, chunker.avg, chunker.max],
      packSize,
      [compression.algorithm, compression.level],
      recipients,
      adminPublicKey,
      identities,
    ]),
  );
}

export function createConfig(readerSecret: Uint8Array, options: RepositoryOptions = {}): RepositoryConfig {
  const chunker = options.chunker ?? DEFAULT_CHUNKER_PARAMS;
  validateChunkerParams(chunker);
  const packSize = options.packSize ?? 16 * 1024 * 1024;
  if (!Number.isInteger(packSize) || packSize < 1024 * 1024 || packSize > 1024 * 1024 * 1024) {
    throw new ConfigError('pack size must be between 1 MiB and 1 GiB');
  }
  // Level 1: on pg_dump output it stores 0.5% more than level 3 for a fifth less CPU.
  const level = options.compressionLevel ?? 1;
  if (!Number.isInteger(level) || level < 0 || level > 19)
    throw new ConfigError('compression level must be 0 (off) to 19');
  const { identity, privateRaw } = generateIdentity();
  const admin = generateSigningKey();
  const config: RepositoryConfig = {
    version: REPOSITORY_VERSION,
    id: randomBytes(32).toString('hex'),
    created: new Date().toISOString(),
    chunker,
    packSize,
    compression: { algorithm: 'zstd', level },
    recipients: [identity.publicKey.toString('base64')],
    adminPublicKey: admin.publicRaw.toString('base64'),
    identities: sealIdentities(readerSecret, {
      x25519: [privateRaw.toString('base64')],
      admin: admin.privateRaw.toString('base64'),
    }),
    signature: '',
  };
  return signConfig(config, admin.privateRaw);
}

function sealIdentities(readerSecret: Uint8Array, bundle: IdentityBundle): string {
  return seal(identitiesKey(readerSecret), Buffer.from(JSON.stringify(bundle)), IDENTITIES_AAD).toString(
    'base64',
  );
}

function signConfig(config: RepositoryConfig, adminPrivate: Uint8Array): RepositoryConfig {
  return { ...config, signature: signMessage(adminPrivate, signedBytes(config)).toString('base64') };
}

export function parseConfig(bytes: Uint8Array): RepositoryConfig {
  let config: RepositoryConfig;
  try {
    config = JSON.parse(Buffer.from(bytes).toString('utf8')) as RepositoryConfig;
  } catch (cause) {
    throw new VerificationError('the repository config is not valid JSON', {
      cause,
      hint: 'The config file is damaged; restore it from a copy of the repository.',
    });
  }
  if (config.version !== REPOSITORY_VERSION) {
    throw new StrongboxError(
      `repository format version ${config.version} is not supported by this strongbox`,
      {
        hint: 'Upgrade strongbox.',
      },
    );
  }
  validateChunkerParams(config.chunker);
  return config;
}

/** Checks the administrator's signature against a key the caller already trusts. */
export function verifyConfig(config: RepositoryConfig, trustedAdminPublic: Uint8Array): void {
  const claimed = Buffer.from(config.adminPublicKey, 'base64');
  const valid =
    claimed.equals(Buffer.from(trustedAdminPublic)) &&
    verifySignature(trustedAdminPublic, signedBytes(config), Buffer.from(config.signature, 'base64'));
  if (!valid) {
    throw new VerificationError('the repository config signature does not verify', {
      hint: 'The config was altered or replaced; do not write to this repository until you know why.',
    });
  }
}

export function openIdentities(config: RepositoryConfig, readerSecret: Uint8Array): ReaderIdentities {
  let bundle: IdentityBundle;
  try {
    const plain = open(identitiesKey(readerSecret), Buffer.from(config.identities, 'base64'), IDENTITIES_AAD);
    bundle = JSON.parse(plain.toString('utf8')) as IdentityBundle;
  } catch (cause) {
    if (cause instanceof AuthenticationFailure) {
      throw new KeyError('this key cannot open the repository identities', {
        hint: 'The key belongs to another repository, or the repository was re-keyed: use a current key.',
        cause,
      });
    }
    throw cause;
  }
  const adminPrivate = Buffer.from(bundle.admin, 'base64');
  verifyConfig(config, publicFromPrivate(adminPrivate));
  return {
    identities: bundle.x25519.map((raw) => identityFromRaw(Buffer.from(raw, 'base64'))),
    adminPrivate,
  };
}

/**
 * A new X25519 identity for new data, under a new reader secret. Old identities stay so old data
 * stays readable; only keys that know the new reader secret can read anything written from now on.
 */
export function rotateConfig(
  config: RepositoryConfig,
  current: ReaderIdentities,
  newReaderSecret: Uint8Array,
): RepositoryConfig {
  const { identity, privateRaw } = generateIdentity();
  const bundle: IdentityBundle = {
    x25519: [...current.identities.map((known) => rawOf(known)), privateRaw.toString('base64')],
    admin: current.adminPrivate.toString('base64'),
  };
  const next: RepositoryConfig = {
    ...config,
    recipients: [identity.publicKey.toString('base64')],
    identities: sealIdentities(newReaderSecret, bundle),
    signature: '',
  };
  return signConfig(next, current.adminPrivate);
}

function rawOf(identity: Identity): string {
  return Buffer.from(identity.privateKey.export({ format: 'jwk' }).d as string, 'base64url').toString(
    'base64',
  );
}
