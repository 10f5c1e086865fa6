import { createPrivateKey, createPublicKey, randomBytes, type KeyObject } from 'node:crypto';

/**
 * X25519 and Ed25519 keys, made from and read as their raw 32 bytes.
 *
 * New keys are random bytes imported, never generateKeyPairSync's: in Node 20 the job that
 * generated a pair takes its key's lock when the collector frees it, and exporting that key holds
 * the same lock while it allocates. A collection at that moment waits for itself forever. A pack
 * worker, which collects often, stopped that way for good, and with it the backup.
 */
export type OkpCurve = 'X25519' | 'Ed25519';

export function newPrivateKey(curve: OkpCurve): Buffer {
  const raw = randomBytes(32);
  if (curve === 'X25519') {
    // RFC 7748's clamping, which X25519 applies anyway: stored clamped, as key generators do.
    raw[0]! &= 248;
    raw[31]! &= 127;
    raw[31]! |= 64;
  }
  return raw;
}

export function privateKeyFromRaw(curve: OkpCurve, raw: Uint8Array): KeyObject {
  // An OKP private JWK is read from `d` alone; `x` must be present and is not used.
  return createPrivateKey({
    key: { kty: 'OKP', crv: curve, d: Buffer.from(raw).toString('base64url'), x: '' },
    format: 'jwk',
  });
}

export function publicKeyFromRaw(curve: OkpCurve, raw: Uint8Array): KeyObject {
  return createPublicKey({
    key: { kty: 'OKP', crv: curve, x: Buffer.from(raw).toString('base64url') },
    format: 'jwk',
  });
}

/** The raw public key of a public key, or of the public half of a private one. */
export function rawPublic(key: KeyObject): Buffer {
  const publicKey = key.type === 'private' ? createPublicKey(key) : key;
  return Buffer.from(publicKey.export({ format: 'jwk' }).x as string, 'base64url');
}

export function rawPrivate(key: KeyObject): Buffer {
  return Buffer.from(key.export({ format: 'jwk' }).d as string, 'base64url');
}
