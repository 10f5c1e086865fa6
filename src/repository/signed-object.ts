import { createHash } from 'node:crypto';
import { verifySignature, type SigningKey } from '../crypto/signing.ts';

/**
 * Snapshots, index files and the records of the repository (removals, prune plans, audit records,
 * drill and check results) carry the signature of the key that wrote them (docs/FORMAT.md,
 * "Signed objects"): `content || signer public key (32) || Ed25519 signature (64) || "SBSG"`.
 * The signature covers the object's kind and the repository's id as well as the content, so a
 * signed index cannot pass for a snapshot, nor an object of one repository for another's.
 */
export type SignedKind =
  'snapshot' | 'index' | 'removal' | 'prune-plan' | 'audit' | 'drill-result' | 'check-result' | 'wal';

const TRAILER_MAGIC = Buffer.from('SBSG', 'ascii');
const PUBLIC_LENGTH = 32;
const SIGNATURE_LENGTH = 64;
export const SIGNATURE_TRAILER_LENGTH = PUBLIC_LENGTH + SIGNATURE_LENGTH + TRAILER_MAGIC.length;

export interface SignedParts {
  content: Buffer;
  signer: Buffer;
  signature: Buffer;
}

function signedMessage(kind: SignedKind, repositoryId: string, content: Uint8Array, signer: Uint8Array) {
  return Buffer.concat([Buffer.from(`strongbox/v2 ${kind}\n${repositoryId}\n`), signer, content]);
}

export function signObject(
  kind: SignedKind,
  repositoryId: string,
  content: Uint8Array,
  key: SigningKey,
): Buffer {
  return Buffer.concat([content, signatureTrailer(kind, repositoryId, content, key)]);
}

/** The trailer that signs `content` as `kind`: what follows it in a signed object. */
export function signatureTrailer(
  kind: SignedKind,
  repositoryId: string,
  content: Uint8Array,
  key: SigningKey,
): Buffer {
  const signature = key.sign(signedMessage(kind, repositoryId, content, key.publicRaw));
  return Buffer.concat([key.publicRaw, signature, TRAILER_MAGIC]);
}

/** The parts of a signed object, or undefined when the bytes carry no signature trailer. */
export function splitSigned(bytes: Uint8Array): SignedParts | undefined {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buffer.length < SIGNATURE_TRAILER_LENGTH) return undefined;
  if (!buffer.subarray(buffer.length - TRAILER_MAGIC.length).equals(TRAILER_MAGIC)) return undefined;
  const signerAt = buffer.length - SIGNATURE_TRAILER_LENGTH;
  return {
    content: buffer.subarray(0, signerAt),
    signer: buffer.subarray(signerAt, signerAt + PUBLIC_LENGTH),
    signature: buffer.subarray(signerAt + PUBLIC_LENGTH, signerAt + PUBLIC_LENGTH + SIGNATURE_LENGTH),
  };
}

export function signatureValid(kind: SignedKind, repositoryId: string, parts: SignedParts): boolean {
  try {
    return verifySignature(
      parts.signer,
      signedMessage(kind, repositoryId, parts.content, parts.signer),
      parts.signature,
    );
  } catch {
    // A "public key" that is not a valid curve point cannot have signed anything.
    return false;
  }
}

/**
 * The SHA-256 of a signed object's trailer (its last SIGNATURE_TRAILER_LENGTH bytes), in hex: what
 * an endorsement names a WAL object by. Once the signature verifies, the trailer stands for the
 * whole object (an Ed25519 signature verifies for one message only), and it is read with one
 * small range read, where hashing the object would read every WAL file whole at each retirement.
 */
export function trailerDigest(trailer: Uint8Array): string {
  return createHash('sha256').update(trailer).digest('hex');
}

/** A writer's short id: what `key list` and `snapshots` show for the key that wrote something. */
export function writerId(signingPublic: Uint8Array): string {
  return createHash('sha256').update('strongbox writer').update(signingPublic).digest('hex').slice(0, 16);
}
