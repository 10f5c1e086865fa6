import { createHash, randomBytes } from 'node:crypto';
import { STANZA_LENGTH, unwrapKey, wrapKey, type Identity } from '../crypto/key-wrap.ts';
import { openJson, sealJson } from './sealed-file.ts';

/**
 * Snapshot files (`snapshots/<sha256>`), in two parts:
 * - the header (time, host, kind, name, tags, sizes), sealed with the metadata key, so that
 *   write-only keys can list snapshots and pick parents;
 * - the body (root tree, paths, source details such as fingerprints), sealed with a data key
 *   wrapped to the repository's identities, so only full keys read it.
 * Layout: "SBSN" | version u8 | stanza count u8 | 0 u16 | header length u32le | header | stanzas | body
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
}

const MAGIC = Buffer.from('SBSN', 'ascii');
const VERSION = 1;

export class MalformedSnapshot extends Error {}

export function encodeSnapshot(
  header: SnapshotHeader,
  body: SnapshotBody,
  metadataKey: Uint8Array,
  recipients: readonly Uint8Array[],
): { id: string; bytes: Buffer } {
  const dataKey = randomBytes(32);
  const sealedHeader = sealJson('SBSH', metadataKey, header);
  const stanzas = wrapKey(dataKey, recipients);
  const prefix = Buffer.alloc(12);
  MAGIC.copy(prefix, 0);
  prefix.writeUInt8(VERSION, 4);
  prefix.writeUInt8(recipients.length, 5);
  prefix.writeUInt32LE(sealedHeader.length, 8);
  const bytes = Buffer.concat([prefix, sealedHeader, stanzas, sealJson('SBSB', dataKey, body)]);
  return { id: createHash('sha256').update(bytes).digest('hex'), bytes };
}

function splitSnapshot(bytes: Uint8Array) {
  const buffer = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buffer.length < 12 || !buffer.subarray(0, 4).equals(MAGIC))
    throw new MalformedSnapshot('not a snapshot file');
  if (buffer.readUInt8(4) !== VERSION)
    throw new MalformedSnapshot(`unknown snapshot version ${buffer.readUInt8(4)}`);
  const headerEnd = 12 + buffer.readUInt32LE(8);
  const stanzaEnd = headerEnd + buffer.readUInt8(5) * STANZA_LENGTH;
  if (stanzaEnd > buffer.length) throw new MalformedSnapshot('snapshot file is truncated');
  return {
    header: buffer.subarray(12, headerEnd),
    stanzas: buffer.subarray(headerEnd, stanzaEnd),
    body: buffer.subarray(stanzaEnd),
  };
}

export function decodeSnapshotHeader(bytes: Uint8Array, metadataKey: Uint8Array): SnapshotHeader {
  return openJson<SnapshotHeader>('SBSH', metadataKey, splitSnapshot(bytes).header);
}

export function decodeSnapshotBody(bytes: Uint8Array, identities: readonly Identity[]): SnapshotBody {
  const parts = splitSnapshot(bytes);
  return openJson<SnapshotBody>('SBSB', unwrapKey(parts.stanzas, identities), parts.body);
}
