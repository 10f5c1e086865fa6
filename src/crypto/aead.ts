import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

/** AES-256-GCM with a random 96-bit nonce; sealed bytes are nonce || ciphertext || tag. */
export const KEY_LENGTH = 32;
export const NONCE_LENGTH = 12;
export const TAG_LENGTH = 16;
export const SEAL_OVERHEAD = NONCE_LENGTH + TAG_LENGTH;

/** Thrown when a ciphertext does not authenticate: a wrong key or altered bytes. */
export class AuthenticationFailure extends Error {
  constructor() {
    super('ciphertext failed authentication');
    this.name = 'AuthenticationFailure';
  }
}

export function seal(key: Uint8Array, plaintext: Uint8Array, aad?: Uint8Array): Buffer {
  return Buffer.concat(sealParts(key, plaintext, aad));
}

/** The three parts of a sealed message (nonce, ciphertext, tag), for callers that place them themselves. */
export function sealParts(
  key: Uint8Array,
  plaintext: Uint8Array,
  aad?: Uint8Array,
): [Buffer, Buffer, Buffer] {
  const nonce = randomBytes(NONCE_LENGTH);
  const cipher = createCipheriv('aes-256-gcm', key, nonce);
  if (aad) cipher.setAAD(aad);
  const body = cipher.update(plaintext);
  cipher.final();
  return [nonce, body, cipher.getAuthTag()];
}

export function open(key: Uint8Array, sealed: Uint8Array, aad?: Uint8Array): Buffer {
  if (sealed.length < SEAL_OVERHEAD) throw new AuthenticationFailure();
  const nonce = sealed.subarray(0, NONCE_LENGTH);
  const tag = sealed.subarray(sealed.length - TAG_LENGTH);
  const decipher = createDecipheriv('aes-256-gcm', key, nonce);
  if (aad) decipher.setAAD(aad);
  decipher.setAuthTag(tag);
  const body = decipher.update(sealed.subarray(NONCE_LENGTH, sealed.length - TAG_LENGTH));
  try {
    decipher.final();
  } catch {
    throw new AuthenticationFailure();
  }
  return body;
}
