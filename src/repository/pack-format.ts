import { createHash, randomBytes } from 'node:crypto';
import { AuthenticationFailure, open, seal, sealParts, SEAL_OVERHEAD } from '../crypto/aead.ts';
import { formatPath, MalformedRecordError, VerificationError } from '../errors.ts';
import { STANZA_LENGTH, wrapKey } from '../crypto/key-wrap.ts';
import { zstdCompress } from '../compression/zstd.ts';
import { encodeDelta } from '../compression/delta.ts';
import { BlobType, Compression, type BlobTypeValue, type PackBlobEntry, type PackRecord } from './blob.ts';

/**
 * Pack layout (docs/FORMAT.md):
 *   header  "SBPK" | version u8 | stanza count u8 | 0 u16 | stanzas (the pack key wrapped to each recipient)
 *   blobs   each AES-256-GCM(pack key, stored bytes, aad = type || id)
 *   trailer AES-256-GCM(pack key, blob table, aad = "SBPT") | sealed length u32le | "SBPT"
 */
export const PACK_MAGIC = Buffer.from('SBPK', 'ascii');
export const TRAILER_MAGIC = Buffer.from('SBPT', 'ascii');
export const PACK_VERSION = 1;
/** id 32 | type u8 | compression u8 | level u8 | offset u32 | length u32 | rawLength u32 | flags u8 | base 32 */
const TABLE_ENTRY_LENGTH = 80;
const FLAG_DELTA = 1;

export function blobAad(type: BlobTypeValue, id: Uint8Array): Buffer {
  return Buffer.concat([Uint8Array.of(type), id]);
}

/**
 * Builds one pack in memory, in a single buffer of its own (so it can be handed to another
 * thread without a copy). Compression is skipped for blobs it does not shrink.
 */
export class PackBuilder {
  private readonly dataKey = randomBytes(32);
  private readonly entries: PackBlobEntry[] = [];
  private readonly keys: Buffer;
  private buffer: Buffer;
  private size = 0;
  rawBytes = 0;

  /** Builds into `buffer` (reused from an earlier pack), or into a new one of `capacity` bytes. */
  constructor(
    recipients: readonly Uint8Array[],
    private readonly level: number,
    capacity: number,
    buffer?: Buffer,
  ) {
    this.keys = wrapKey(this.dataKey, recipients);
    this.buffer = buffer ?? Buffer.allocUnsafeSlow(Math.max(capacity, 8 + this.keys.length + 1024));
    const header = Buffer.alloc(8);
    PACK_MAGIC.copy(header, 0);
    header.writeUInt8(PACK_VERSION, 4);
    header.writeUInt8(recipients.length, 5);
    this.append(header, this.keys);
  }

  get length(): number {
    return this.size;
  }

  get blobCount(): number {
    return this.entries.length;
  }

  private append(...parts: Uint8Array[]): void {
    const needed = parts.reduce((sum, part) => sum + part.length, 0);
    if (this.size + needed > this.buffer.length) {
      const grown = Buffer.allocUnsafeSlow(Math.max(2 * this.buffer.length, this.size + needed));
      this.buffer.copy(grown, 0, 0, this.size);
      this.buffer = grown;
    }
    for (const part of parts) {
      this.buffer.set(part, this.size);
      this.size += part.length;
    }
  }

  /**
   * Adds a blob. With `delta`, the blob is stored as a compressed delta against that base when
   * it comes out smaller than the blob compressed on its own.
   */
  add(id: Uint8Array, type: BlobTypeValue, data: Uint8Array, delta?: DeltaBase): PackBlobEntry {
    return this.addStored(id, ...encodedEntry(type, data.length, encodeBlob(data, this.level, delta)));
  }

  /**
   * Adds a blob in the stored form another pack held it in (compressed, or a delta against
   * `entry.base`), sealed anew with this pack's key: prune moves blobs without compressing again.
   */
  addStored(
    id: Uint8Array,
    stored: Uint8Array,
    entry: Omit<PackBlobEntry, 'id' | 'offset' | 'length'>,
  ): PackBlobEntry {
    const sealed = sealParts(this.dataKey, stored, blobAad(entry.type, id));
    const offset = this.size;
    this.append(...sealed);
    const added: PackBlobEntry = {
      id: Buffer.from(id).toString('hex'),
      type: entry.type,
      offset,
      length: this.size - offset,
      rawLength: entry.rawLength,
      compression: entry.compression,
      level: entry.level,
      ...(entry.base ? { base: entry.base } : {}),
    };
    this.entries.push(added);
    this.rawBytes += entry.rawLength;
    return added;
  }

  /** Seals the table and returns the pack: a view of a buffer that belongs to this pack alone. */
  finish(): { bytes: Buffer; record: PackRecord } {
    const table = Buffer.alloc(this.entries.length * TABLE_ENTRY_LENGTH);
    this.entries.forEach((entry, i) => {
      const at = i * TABLE_ENTRY_LENGTH;
      Buffer.from(entry.id, 'hex').copy(table, at);
      table.writeUInt8(entry.type, at + 32);
      table.writeUInt8(entry.compression, at + 33);
      table.writeUInt8(entry.level, at + 34);
      table.writeUInt32LE(entry.offset, at + 35);
      table.writeUInt32LE(entry.length, at + 39);
      table.writeUInt32LE(entry.rawLength, at + 43);
      if (entry.base) {
        table.writeUInt8(FLAG_DELTA, at + 47);
        Buffer.from(entry.base, 'hex').copy(table, at + 48);
      }
    });
    const sealedTable = seal(this.dataKey, table, TRAILER_MAGIC);
    const tail = Buffer.alloc(8);
    tail.writeUInt32LE(sealedTable.length, 0);
    TRAILER_MAGIC.copy(tail, 4);
    this.append(sealedTable, tail);
    const bytes = this.buffer.subarray(0, this.size);
    const id = createHash('sha256').update(bytes).digest('hex');
    return { bytes, record: { id, size: bytes.length, keys: this.keys, blobs: this.entries } };
  }
}

/** A blob in the form a pack stores it, before it is sealed: see encodeBlob(). */
export interface EncodedBlob {
  stored: Uint8Array;
  compression: PackBlobEntry['compression'];
  level: number;
  /** The delta base, when `stored` is a delta against it. */
  base?: string;
}

/**
 * A blob compressed at `level` (kept as it is when that does not shrink it) or, with `delta`, as
 * a compressed delta against that base when that comes out smaller still. Any thread may encode a
 * blob: the pack that takes it only seals it.
 */
export function encodeBlob(data: Uint8Array, level: number, delta?: DeltaBase): EncodedBlob {
  let stored: Uint8Array = data;
  let compression: PackBlobEntry['compression'] = Compression.none;
  let base: string | undefined;
  if (level > 0 && data.length > 64) {
    const compressed = zstdCompress(data, level);
    if (compressed.length < data.length) {
      stored = compressed;
      compression = Compression.zstd;
    }
  }
  if (delta) {
    const encoded = zstdCompress(encodeDelta(delta.data, data), Math.max(level, 1));
    if (encoded.length < stored.length) {
      stored = encoded;
      compression = Compression.zstd;
      base = delta.id;
    }
  }
  const encoded: EncodedBlob = {
    stored,
    compression,
    level: compression === Compression.zstd ? Math.max(level, 1) : 0,
  };
  if (base) encoded.base = base;
  return encoded;
}

/** addStored()'s arguments for a blob of `rawLength` plaintext bytes encoded as `encoded`. */
export function encodedEntry(
  type: BlobTypeValue,
  rawLength: number,
  encoded: EncodedBlob,
): [Uint8Array, Omit<PackBlobEntry, 'id' | 'offset' | 'length'>] {
  const entry: Omit<PackBlobEntry, 'id' | 'offset' | 'length'> = {
    type,
    rawLength,
    compression: encoded.compression,
    level: encoded.level,
  };
  if (encoded.base) entry.base = encoded.base;
  return [encoded.stored, entry];
}

export interface DeltaBase {
  id: string;
  data: Uint8Array;
}

/** A pack, or an entry of its table, that is not what PackBuilder writes; `path` names the entry's field. */
export class MalformedPack extends Error {
  constructor(
    readonly problem: string,
    readonly path: readonly PropertyKey[] = [],
  ) {
    super(path.length > 0 ? `${formatPath(path)}: ${problem}` : problem);
  }
}

/** The fixed part of a pack's header, before its stanzas. */
export const PACK_HEADER_LENGTH = 8;
/** The sealed table's length (u32) and the trailer magic, at the very end of a pack. */
export const TRAILER_LENGTH = 8;

/** The length of the whole header, stanzas included, from its first PACK_HEADER_LENGTH bytes. */
export function packHeaderLength(start: Uint8Array): number {
  const header = Buffer.from(start.buffer, start.byteOffset, start.byteLength);
  if (header.length < PACK_HEADER_LENGTH || !header.subarray(0, 4).equals(PACK_MAGIC))
    throw new MalformedPack('pack header is missing');
  if (header.readUInt8(4) !== PACK_VERSION)
    throw new MalformedPack(`pack version ${header.readUInt8(4)} is unknown`);
  return PACK_HEADER_LENGTH + header.readUInt8(5) * STANZA_LENGTH;
}

/** The length of the sealed table, from the last TRAILER_LENGTH bytes of a pack of `size` bytes. */
export function sealedTableLength(trailer: Uint8Array, size: number): number {
  const buffer = Buffer.from(trailer.buffer, trailer.byteOffset, trailer.byteLength);
  if (buffer.length !== TRAILER_LENGTH || !buffer.subarray(4).equals(TRAILER_MAGIC))
    throw new MalformedPack('pack trailer is missing');
  const length = buffer.readUInt32LE(0);
  if (length < SEAL_OVERHEAD || length > size - TRAILER_LENGTH - PACK_HEADER_LENGTH)
    throw new MalformedPack('pack trailer length is invalid');
  return length;
}

/**
 * Opens a sealed table with the pack's data key: throws AuthenticationFailure when the key is not
 * the one it was sealed with, MalformedPack when an entry lies outside the pack's blobs.
 */
export function openPackTable(sealedTable: Uint8Array, dataKey: Uint8Array, size: number): PackBlobEntry[] {
  const table = open(dataKey, sealedTable, TRAILER_MAGIC);
  const blobsEnd = size - TRAILER_LENGTH - sealedTable.length;
  const fail = (path: PropertyKey[], problem: string): never => {
    throw new MalformedPack(problem, path);
  };
  if (table.length % TABLE_ENTRY_LENGTH !== 0)
    fail([], `its blob table is ${table.length} bytes, not whole ${TABLE_ENTRY_LENGTH}-byte entries`);
  const entries: PackBlobEntry[] = [];
  for (let at = 0; at < table.length; at += TABLE_ENTRY_LENGTH) {
    const where = (field: string) => ['blobs', at / TABLE_ENTRY_LENGTH, field];
    const type = table.readUInt8(at + 32);
    const compression = table.readUInt8(at + 33);
    const level = table.readUInt8(at + 34);
    const offset = table.readUInt32LE(at + 35);
    const length = table.readUInt32LE(at + 39);
    const flags = table.readUInt8(at + 47);
    const base = table.subarray(at + 48, at + 80);
    if (type !== BlobType.data && type !== BlobType.tree)
      fail(where('type'), 'expected 0 (data) or 1 (tree)');
    if (compression !== Compression.none && compression !== Compression.zstd)
      fail(where('compression'), 'expected 0 (none) or 1 (zstd)');
    if (level > MAX_LEVEL) fail(where('level'), `expected a zstd level up to ${MAX_LEVEL}`);
    if (offset < PACK_HEADER_LENGTH || length < SEAL_OVERHEAD || offset + length > blobsEnd)
      fail(where('offset'), `blob at ${offset}, ${length} bytes, lies outside the pack's blobs`);
    if ((flags & ~FLAG_DELTA) !== 0) fail(where('flags'), `unknown flags ${flags}`);
    if (!(flags & FLAG_DELTA) && base.some((byte) => byte !== 0))
      fail(where('base'), 'a blob stored whole has a delta base');
    const entry: PackBlobEntry = {
      id: table.subarray(at, at + 32).toString('hex'),
      type: type as BlobTypeValue,
      compression: compression as PackBlobEntry['compression'],
      level,
      offset,
      length,
      rawLength: table.readUInt32LE(at + 43),
    };
    if (flags & FLAG_DELTA) entry.base = base.toString('hex');
    entries.push(entry);
  }
  return entries;
}

/** zstd's highest compression level. */
const MAX_LEVEL = 22;

/**
 * A whole pack's table, opened with its data key: a MalformedRecordError naming the pack and the
 * field for a table that is not what PackBuilder writes, a VerificationError for one that does not
 * authenticate. (Readers go through pack-tables.ts, which reads only the pack's end.)
 */
export function parsePackTable(pack: Uint8Array, dataKey: Uint8Array, id: string): PackBlobEntry[] {
  const bytes = Buffer.from(pack.buffer, pack.byteOffset, pack.byteLength);
  try {
    const length = sealedTableLength(
      bytes.subarray(Math.max(0, bytes.length - TRAILER_LENGTH)),
      bytes.length,
    );
    const end = bytes.length - TRAILER_LENGTH;
    return openPackTable(bytes.subarray(end - length, end), dataKey, bytes.length);
  } catch (error) {
    if (error instanceof MalformedPack)
      throw new MalformedRecordError({ kind: 'pack', id }, error.path, error.problem);
    if (error instanceof AuthenticationFailure)
      throw new VerificationError(`pack ${id.slice(0, 16)}: its blob table fails authentication`, {
        cause: error,
      });
    throw error;
  }
}
