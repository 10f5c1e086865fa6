import { createHash, diffieHellman, hkdfSync, type KeyObject } from 'node:crypto';
import { AuthenticationFailure, open, seal } from './aead.ts';
import { newPrivateKey, privateKeyFromRaw, publicKeyFromRaw, rawPrivate, rawPublic } from './okp.ts';

/**
 * A data key wrapped to one X25519 recipient, as age does it: an ephemeral key agreement per
 * stanza, HKDF over the shared secret, AES-256-GCM around the data key. Writers need only the
 * recipient's public key; only the holder of the private identity can unwrap.
 */
export const STANZA_LENGTH = 8 + 32 + 12 + 32 + 16;
const WRAP_INFO = 'strongbox/v1 key-wrap';

export interface Identity {
  privateKey: KeyObject;
  publicKey: Buffer;
}

export function generateIdentity(): { identity: Identity; privateRaw: Buffer } {
  const privateRaw = newPrivateKey('X25519');
  return { identity: identityFromRaw(privateRaw), privateRaw };
}

export function identityFromRaw(privateRaw: Uint8Array): Identity {
  const privateKey = privateKeyFromRaw('X25519', privateRaw);
  return { privateKey, publicKey: rawPublic(privateKey) };
}

/** A short, stable name for a recipient public key, stored in stanzas so readers try the right identity. */
export function recipientTag(publicKey: Uint8Array): Buffer {
  return createHash('sha256').update('strongbox recipient').update(publicKey).digest().subarray(0, 8);
}

export function wrapKey(dataKey: Uint8Array, recipients: readonly Uint8Array[]): Buffer {
  const stanzas = recipients.map((recipient) => {
    const ephemeral = privateKeyFromRaw('X25519', newPrivateKey('X25519'));
    const ephemeralPublic = rawPublic(ephemeral);
    const wrapping = wrappingKey(
      diffieHellman({ privateKey: ephemeral, publicKey: publicKeyFromRaw('X25519', recipient) }),
      ephemeralPublic,
      recipient,
    );
    return Buffer.concat([recipientTag(recipient), ephemeralPublic, seal(wrapping, dataKey)]);
  });
  return Buffer.concat(stanzas);
}

/** Returns the data key, or throws AuthenticationFailure when no identity opens any stanza. */
export function unwrapKey(stanzas: Uint8Array, identities: readonly Identity[]): Buffer {
  for (let at = 0; at + STANZA_LENGTH <= stanzas.length; at += STANZA_LENGTH) {
    const tag = Buffer.from(stanzas.subarray(at, at + 8));
    const identity = identities.find((candidate) => recipientTag(candidate.publicKey).equals(tag));
    if (!identity) continue;
    const ephemeralPublic = stanzas.subarray(at + 8, at + 40);
    const shared = diffieHellman({
      privateKey: identity.privateKey,
      publicKey: publicKeyFromRaw('X25519', ephemeralPublic),
    });
    return open(
      wrappingKey(shared, ephemeralPublic, identity.publicKey),
      stanzas.subarray(at + 40, at + STANZA_LENGTH),
    );
  }
  throw new AuthenticationFailure();
}

function wrappingKey(shared: Buffer, ephemeralPublic: Uint8Array, recipient: Uint8Array): Buffer {
  const salt = Buffer.concat([ephemeralPublic, recipient]);
  return Buffer.from(hkdfSync('sha256', shared, salt, WRAP_INFO, 32));
}

/** An identity's raw private key, to seal it into a bundle or a key. */
export function rawIdentity(identity: Identity): Buffer {
  return rawPrivate(identity.privateKey);
}
