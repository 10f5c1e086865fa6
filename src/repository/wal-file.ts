import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { AuthenticationFailure, open, seal, SEAL_OVERHEAD } from '../crypto/aead.ts';
import { STANZA_LENGTH, unwrapKey, wrapKey, type Identity } from '../crypto/key-wrap.ts';
import type { SigningKey } from '../crypto/signing.ts';
import { DecompressedTooLarge, zstdCompress, zstdDecompress } from '../compression/zstd.ts';
import { MalformedRecordError } from '../errors.ts';
import { LIMITS, parseWalHeader, walFrameCount } from './schemas.ts';
import { MalformedFile, openJson, sealJson } from './sealed-file.ts';
import {
  SIGNATURE_TRAILER_LENGTH,
  signatureTrailer,
  splitSigned,
  type SignedParts,
} from './signed-object.ts';

/**
 * A WAL object (`wal/<timeline>/<file name>`, docs/FORMAT.md "WAL files"): one file PostgreSQL
 * archived, stored whole rather than through packs, since WAL barely deduplicates and archiving
 * wants one request per file.
 * Layout: "SBWL" | version u8 | stanza count u8 | 0 u16 | header length u32 | header | stanzas |
 * frames | signature trailer (signed-object.ts), which signs, from version 2 on, "SBWD" and the
 * SHA-256 of everything before it rather than all of it. The header is sealed with the metadata key, so
 * write-only keys can tell whether a push repeats what is stored; the content only opens with the
 * data key the stanzas wrap to the repository's identities.
 */
export interface WalHeader {
  version: 1;
  /** The file's name, which must be the object's own: a moved or copied object is refused. */
  name: string;
  /** Bytes of content. */
  size: number;
  /** The content's blob id (HMAC-SHA-256 with the blob-id key), checked after decrypting. */
  mac: string;
  /** When it was pushed. */
  time: string;
  host: string;
  program: string;
  frames: number;
}

const MAGIC = Buffer.from('SBWL', 'ascii');
/**
 * Version 2 signs the object's SHA-256 (behind DIGEST_MAGIC), version 1 the whole object: Ed25519
 * hashes its message twice with SHA-512 and needs it in one buffer, which for a segment's 5 to
 * 8 MB object cost 15 to 30 ms and a copy, against 4 ms for SHA-256 here. Both are read.
 */
const VERSION = 2;
const READABLE_VERSIONS = new Set([1, 2]);
/** What a version 2 object's signature covers in place of its bytes: this, then their SHA-256. */
const DIGEST_MAGIC = Buffer.from('SBWD', 'ascii');
const PREFIX_LENGTH = 12;
const FRAME_AAD = Buffer.from('strongbox wal frame', 'ascii');
/** zstd's own framing and a stored block's headers, beyond a frame's plaintext, bounded generously. */
const MAX_SEALED_FRAME = LIMITS.walFrame + 64 * 1024 + SEAL_OVERHEAD;
/**
 * Level 2: on WAL of updates (bench/README.md, "WAL compression level"), zstd is most of a
 * segment's CPU, and level 2 stores what level 3 does (0.429 of the segment against 0.429; 0.330
 * against 0.341 for the day of bench/day.sql) in 35 to 40 % less time. Level 1 is faster still but
 * stores 4 % more of that WAL, and 17 % more of a bulk load's.
 */
const ZSTD_LEVEL = 2;

/** What is wrong with a WAL object, as a phrase (DamagedWalError's problem). */
export class MalformedWal extends Error {}

/**
 * The associated data of frame `index`: its place and whether it is the last, so that frames
 * cannot be reordered, dropped or the object cut short without failing authentication.
 */
export function walFrameAad(index: number, last: boolean): Buffer {
  const place = Buffer.alloc(5);
  place.writeUInt32LE(index, 0);
  place.writeUInt8(last ? 1 : 0, 4);
  return Buffer.concat([FRAME_AAD, place]);
}

export interface WalSigner {
  repositoryId: string;
  key: SigningKey;
}

/** A WAL object holding `content`, signed by `signer`. `header.frames` is set here. */
export function encodeWal(
  header: Omit<WalHeader, 'frames'>,
  content: Uint8Array,
  metadataKey: Uint8Array,
  recipients: readonly Uint8Array[],
  signer: WalSigner,
): Buffer {
  const frames = walFrameCount(content.length);
  const dataKey = randomBytes(32);
  const sealedHeader = sealJson('SBWH', metadataKey, { ...header, frames });
  const prefix = Buffer.alloc(PREFIX_LENGTH);
  MAGIC.copy(prefix, 0);
  prefix.writeUInt8(VERSION, 4);
  prefix.writeUInt8(recipients.length, 5);
  prefix.writeUInt32LE(sealedHeader.length, 8);
  const parts = [prefix, sealedHeader, wrapKey(dataKey, recipients)];
  for (let index = 0; index < frames; index++) {
    const plain = content.subarray(index * LIMITS.walFrame, (index + 1) * LIMITS.walFrame);
    const sealed = seal(dataKey, zstdCompress(plain, ZSTD_LEVEL), walFrameAad(index, index === frames - 1));
    const length = Buffer.alloc(4);
    length.writeUInt32LE(sealed.length, 0);
    parts.push(length, sealed);
  }
  // Assembled once, with room for the trailer: the object is megabytes.
  const signedLength = parts.reduce((total, part) => total + part.length, 0);
  const object = Buffer.allocUnsafe(signedLength + SIGNATURE_TRAILER_LENGTH);
  let at = 0;
  for (const part of parts) at += part.copy(object, at);
  walSignatureTrailer(object.subarray(0, signedLength), signer).copy(object, signedLength);
  return object;
}

/** The trailer that signs a version 2 WAL object whose bytes before it are `signed`. */
export function walSignatureTrailer(signed: Uint8Array, signer: WalSigner): Buffer {
  return signatureTrailer('wal', signer.repositoryId, signedDigest(signed), signer.key);
}

/** What a version 2 object's signature covers: DIGEST_MAGIC and the SHA-256 of what it signs. */
function signedDigest(signed: Uint8Array): Buffer {
  return Buffer.concat([DIGEST_MAGIC, createHash('sha256').update(signed).digest()]);
}

export interface WalParts {
  /** The sealed header. */
  header: Buffer;
  stanzas: Buffer;
  frames: Buffer;
  /** The signer and signature, with what they sign as `content` (for version 2, a digest). */
  signed: SignedParts | undefined;
}

/** The parts of a WAL object; throws MalformedWal when its layout is not one strongbox writes. */
export function splitWal(bytes: Buffer): WalParts {
  if (bytes.length < PREFIX_LENGTH || !bytes.subarray(0, 4).equals(MAGIC))
    throw new MalformedWal('it is not a WAL object');
  const version = bytes.readUInt8(4);
  if (!READABLE_VERSIONS.has(version))
    throw new MalformedWal(`it is of version ${version}, which this strongbox does not read`);
  const signed = splitSigned(bytes);
  const content = signed?.content ?? bytes;
  if (content.length < PREFIX_LENGTH) throw new MalformedWal('it is truncated');
  const headerLength = content.readUInt32LE(8);
  if (headerLength > LIMITS.walHeader) throw new MalformedWal(`its header claims ${headerLength} bytes`);
  const headerEnd = PREFIX_LENGTH + headerLength;
  const stanzaEnd = headerEnd + content.readUInt8(5) * STANZA_LENGTH;
  if (content.readUInt16LE(6) !== 0 || stanzaEnd > content.length) throw new MalformedWal('it is truncated');
  return {
    header: content.subarray(PREFIX_LENGTH, headerEnd),
    stanzas: content.subarray(headerEnd, stanzaEnd),
    frames: content.subarray(stanzaEnd),
    signed: signed && version !== 1 ? { ...signed, content: signedDigest(signed.content) } : signed,
  };
}

/** The header, parsed against its schema; MalformedWal when it does not open or parse. */
export function decodeWalHeader(parts: WalParts, metadataKey: Uint8Array, fileName: string): WalHeader {
  let value: unknown;
  try {
    value = openJson('SBWH', metadataKey, parts.header);
  } catch (cause) {
    if (
      cause instanceof AuthenticationFailure ||
      cause instanceof MalformedFile ||
      cause instanceof DecompressedTooLarge ||
      cause instanceof SyntaxError
    )
      throw new MalformedWal('its header does not open with the metadata key', { cause });
    throw cause;
  }
  try {
    return parseWalHeader(value, fileName);
  } catch (cause) {
    if (cause instanceof MalformedRecordError) throw new MalformedWal(cause.message, { cause });
    throw cause;
  }
}

/**
 * The sealed frames, checked against the header without a key: as many as it says, each within
 * bounds, and nothing after the last. MalformedWal otherwise.
 */
export function walSealedFrames(parts: WalParts, header: WalHeader): Buffer[] {
  const body = parts.frames;
  const frames: Buffer[] = [];
  let at = 0;
  for (let index = 0; index < header.frames; index++) {
    if (at + 4 > body.length) throw new MalformedWal(`it ends before frame ${index}`);
    const length = body.readUInt32LE(at);
    if (length > MAX_SEALED_FRAME || at + 4 + length > body.length)
      throw new MalformedWal(`frame ${index} is truncated or too long`);
    frames.push(body.subarray(at + 4, at + 4 + length));
    at += 4 + length;
  }
  if (at !== body.length) throw new MalformedWal('it has bytes after its last frame');
  return frames;
}

/** The most bytes an object of a WAL file within LIMITS.walContent can take, whatever its recipients. */
export const MAX_WAL_OBJECT =
  PREFIX_LENGTH +
  LIMITS.walHeader +
  255 * STANZA_LENGTH +
  walFrameCount(LIMITS.walContent) * (4 + MAX_SEALED_FRAME) +
  SIGNATURE_TRAILER_LENGTH;

/**
 * The content: every frame opened in order, decompressed within bounds, and the whole checked
 * against the header's size and mac (`macOf` computes a blob id). MalformedWal otherwise.
 */
export function decodeWalContent(
  parts: WalParts,
  header: WalHeader,
  identities: readonly Identity[],
  macOf: (content: Uint8Array) => string,
): Buffer {
  const sealed = walSealedFrames(parts, header);
  let dataKey: Buffer;
  try {
    dataKey = unwrapKey(parts.stanzas, identities);
  } catch (cause) {
    if (cause instanceof AuthenticationFailure)
      throw new MalformedWal('its data key is not wrapped to any identity of this repository', { cause });
    throw cause;
  }
  const plain = sealed.map((frame, index) => {
    const last = index === sealed.length - 1;
    let opened: Buffer;
    try {
      opened = zstdDecompress(open(dataKey, frame, walFrameAad(index, last)), LIMITS.walFrame);
    } catch (cause) {
      throw new MalformedWal(`frame ${index} fails authentication or does not decompress`, { cause });
    }
    if (!last && opened.length !== LIMITS.walFrame) throw new MalformedWal(`frame ${index} is short`);
    return opened;
  });
  const content = Buffer.concat(plain);
  if (content.length !== header.size)
    throw new MalformedWal(`its content is ${content.length} bytes, not the ${header.size} its header says`);
  if (!timingSafeEqual(Buffer.from(macOf(content), 'hex'), Buffer.from(header.mac, 'hex')))
    throw new MalformedWal('its content is not what its header says (the mac differs)');
  return content;
}
