import { createHash, randomBytes } from 'node:crypto';
import { STANZA_LENGTH, unwrapKey, wrapKey, type Identity } from '../crypto/key-wrap.ts';
import { openJson, sealJson } from './sealed-file.ts';
import { parseSnapshotBody, parseSnapshotHeader } from './schemas.ts';
import { signObject, splitSigned, type SignedParts } from './signed-object.ts';
import type { SigningKey } from '../crypto/signing.ts';
import type { WriterInfo } from './trust.ts';

/**
 * Snapshot files (`snapshots/<sha256>`), in two parts:
 * - the header (time, host, kind, name, tags, sizes), sealed with the metadata key, so that
 *   write-only keys can list snapshots and pick parents;
 * - the body (root tree, paths, source details such as fingerprints), sealed with a data key
 *   wrapped to the repository's identities, so only full keys read it.
 * Layout: "SBSN" | version u8 | stanza count u8 | 0 u16 | header length u32le | header | stanzas | body
 * | signature trailer (signed-object.ts).
 */
export interface SnapshotHeader {
  time: string;
  host: string;
  username: string;
  /** What the source was: files, stdin, postgres… */
  kind: string;
  /** A short name for what was backed up: the stdin file name, the database, the first path. */
  name: string;
  tags: string[];
  /** Bytes read from the source. */
  size: number;
  /** Bytes of the packs and index files this backup added to the repository. */
  stored: number;
  parent?: string;
  /**
   * The snapshot a backup first wrote, when this one is a copy (kept through copies of copies).
   * In the header, so that a write-only key on the target can tell which snapshots it has.
   */
  origin?: string;
  program: string;
}

export interface SnapshotBody {
  tree: string;
  paths: string[];
  summary: Record<string, number>;
  /** Source-specific facts recorded at backup time (PostgreSQL fingerprints, for example). */
  source?: Record<string, unknown>;
}

export interface SnapshotInfo {
  id: string;
  header: SnapshotHeader;
  /** The key that wrote it (signed-object.ts), as the repository's trust decides it. */
  writer: WriterInfo;
  /** Dated more than a few minutes ahead of this clock: never taken as `latest` unless named. */
  future?: boolean;
}

const MAGIC = Buffer.from('SBSN', 'ascii');
/** Version 2 adds the writer's signature over the whole file; version 1 files are read only when endorsed. */
const VERSION = 2;
const LEGACY_VERSION = 1;

export class MalformedSnapshot extends Error {}

export interface SnapshotSigner {
  repositoryId: string;
  key: SigningKey;
}

/**
 * A snapshot file, signed by the key that writes it. The signature covers header, stanzas and
 * body together, so neither part can be swapped for another snapshot's.
 */
export function encodeSnapshot(
  header: SnapshotHeader,
  body: SnapshotBody,
  metadataKey: Uint8Array,
  recipients: readonly Uint8Array[],
  signer: SnapshotSigner,
): { id: string; bytes: Buffer } {
  const dataKey = randomBytes(32);
  const sealedHeader = sealJson('SBSH', metadataKey, header);
  const stanzas = wrapKey(dataKey, recipients);
  const prefix = Buffer.alloc(12);
  MAGIC.copy(prefix, 0);
  prefix.writeUInt8(VERSION, 4);
  prefix.writeUInt8(recipients.length, 5);
  prefix.writeUInt32LE(sealedHeader.length, 8);
  const content = Buffer.concat([prefix, sealedHeader, stanzas, sealJson('SBSB', dataKey, body)]);
  const bytes = signObject('snapshot', signer.repositoryId, content, signer.key);
  return { id: createHash('sha256').update(bytes).digest('hex'), bytes };
}

export interface SnapshotParts {
  version: number;
  header: Buffer;
  stanzas: Buffer;
  body: Buffer;
  /** The writer's signature; absent from version 1 files. */
  signed?: SignedParts;
}

export function splitSnapshot(bytes: Uint8Array): SnapshotParts {
  const whole = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (whole.length < 12 || !whole.subarray(0, 4).equals(MAGIC))
    throw new MalformedSnapshot('not a snapshot file');
  const version = whole.readUInt8(4);
  if (version !== VERSION && version !== LEGACY_VERSION)
    throw new MalformedSnapshot(`unknown snapshot version ${version}`);
  let content = whole;
  let signed: SignedParts | undefined;
  if (version === VERSION) {
    signed = splitSigned(whole);
    if (!signed) throw new MalformedSnapshot('the snapshot carries no signature');
    content = signed.content;
  }
  const headerEnd = 12 + content.readUInt32LE(8);
  const stanzaEnd = headerEnd + content.readUInt8(5) * STANZA_LENGTH;
  if (stanzaEnd > content.length) throw new MalformedSnapshot('snapshot file is truncated');
  return {
    version,
    header: content.subarray(12, headerEnd),
    stanzas: content.subarray(headerEnd, stanzaEnd),
    body: content.subarray(stanzaEnd),
    ...(signed ? { signed } : {}),
  };
}

/** The header, parsed against its schema (a MalformedRecordError naming snapshot `id` otherwise). */
export function decodeSnapshotHeader(
  parts: SnapshotParts,
  metadataKey: Uint8Array,
  id: string,
): SnapshotHeader {
  return parseSnapshotHeader(openJson('SBSH', metadataKey, parts.header), id);
}

export function decodeSnapshotBody(
  parts: SnapshotParts,
  identities: readonly Identity[],
  id: string,
): SnapshotBody {
  return parseSnapshotBody(openJson('SBSB', unwrapKey(parts.stanzas, identities), parts.body), id);
}
