import { sign, verify, type KeyObject } from 'node:crypto';
import { newPrivateKey, privateKeyFromRaw, publicKeyFromRaw, rawPublic } from './okp.ts';

export function publicFromPrivate(privateRaw: Uint8Array): Buffer {
  return rawPublic(privateKeyFromRaw('Ed25519', privateRaw));
}

export function signMessage(privateRaw: Uint8Array, message: Uint8Array): Buffer {
  return sign(null, message, privateKeyFromRaw('Ed25519', privateRaw));
}

export function verifySignature(publicRaw: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  return verify(null, message, publicKeyFromRaw('Ed25519', publicRaw), signature);
}

/**
 * An Ed25519 private key made ready once, for a writer that signs every object it writes, and for
 * the repository administrator's signature over the config that writers trust.
 */
export class SigningKey {
  readonly publicRaw: Buffer;
  private readonly key: KeyObject;

  constructor(readonly privateRaw: Buffer) {
    this.key = privateKeyFromRaw('Ed25519', privateRaw);
    this.publicRaw = rawPublic(this.key);
  }

  static generate(): SigningKey {
    return new SigningKey(newPrivateKey('Ed25519'));
  }

  sign(message: Uint8Array): Buffer {
    return sign(null, message, this.key);
  }
}
