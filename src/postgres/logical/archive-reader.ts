import { createHash, type Hash } from 'node:crypto';
import { SourceError, type ErrorDetails } from '../../errors.ts';
import { TableFingerprint } from './fingerprint.ts';

/**
 * A streaming reader of pg_dump's custom-format archive (`pg_dump -Fc -Z0` written to a pipe),
 * so a backup can learn, from the bytes it is storing anyway, where each table's data starts
 * and ends, how many rows it holds and their fingerprint (fingerprint.ts), and each large
 * object's size and SHA-256.
 *
 * The layout, from PostgreSQL's pg_backup_archiver.c and pg_backup_custom.c:
 *
 *   header   "PGDMP", version (major, minor, revision bytes), intSize, offSize, format byte (1:
 *            custom), compression (archive 1.14: an int level; 1.15: an algorithm byte), the
 *            creation time as 7 ints, then strings: database, server version, pg_dump version
 *   TOC      an int count, then per entry: dumpId, hadDumper, catalog table oid and oid (strings),
 *            tag, desc, section (int), defn, dropStmt, copyStmt, namespace, tablespace, tableam,
 *            owner, "false" (WITH OIDS), dependency ids as strings up to a null string, and the
 *            data offset: a flag byte (1: data, position not known; 2: data at the position;
 *            3: no data) and offSize bytes
 *   data     per entry with data, in TOC order: a block type byte (1: data, 3: large objects), the
 *            dumpId, then length-prefixed chunks up to a zero length. Large-object blocks hold,
 *            per object, its oid (an int: one above 2^31 - 1 wraps to a negative value) then
 *            such chunks, and end with a zero oid.
 *
 * An int is a sign byte (0 or 1) and intSize magnitude bytes, least significant first; a string
 * is an int length (-1 for null) and that many bytes. A TABLE DATA block holds the table's COPY
 * text rows, each ending with "\n", then "\\.\n\n\n": the terminator line and two empty lines,
 * which are not rows (pg_dump writes them as it would into a plain-text dump). A row "\\." cannot
 * be data, since COPY writes a backslash in a value as two; an empty row can (one empty text
 * column, or no columns). The reader also accepts a block without the terminator.
 * Custom format cannot be dumped in parallel, and to a pipe nothing follows the last block, so
 * an archive whose input ends before every entry with data had its block is truncated.
 *
 * Archives 1.14 (pg_dump 12 to 15) and 1.15 (pg_dump 16), uncompressed, are read; anything else
 * is refused, since a misread layout would go on to report plausible nonsense.
 */

/** What the archive says about itself. */
export interface ArchiveHeader {
  /** major.minor.revision of the archive format, as pg_restore -l prints it: 1.14.0. */
  archiveVersion: string;
  database: string;
  /** The server's version string, such as "15.20 (Debian 15.20-0+deb12u1)". */
  serverVersion: string;
  pgDumpVersion: string;
}

/** One table-of-contents entry. Strings are decoded as UTF-8, the encoding pg_dump runs in here. */
export interface TocEntry {
  dumpId: number;
  /** "TABLE", "TABLE DATA", "SEQUENCE SET", "BLOBS", "INDEX"… */
  desc: string;
  /** The part of a restore it belongs to, as pg_restore --section names them. */
  section: TocSection;
  /** The object's name; for TABLE DATA, the table's. */
  tag: string;
  /** The object's schema, '' when it belongs to none. */
  namespace: string;
  owner: string;
  /**
   * "COPY schema.table (columns…) FROM stdin;\n" for TABLE DATA; null for other entries and for
   * data dumped as INSERT statements (pg_dump --inserts), whose rows the reader does not report.
   */
  copyStatement: string | null;
  /** Dump ids of the entries this one depends on. */
  dependencies: number[];
  /** Whether a data block for this entry follows the table of contents. */
  hasData: boolean;
  /** For TABLE DATA: the table, and the dump id of its TABLE entry (its only dependency). */
  table?: { schema: string; name: string; dumpId: number | undefined };
}

export type TocSection = 'none' | 'pre-data' | 'data' | 'post-data';
/** pg_dump's numbering of sections (SECTION_NONE = 1 … SECTION_POST_DATA = 4). */
const SECTIONS: readonly TocSection[] = ['none', 'none', 'pre-data', 'data', 'post-data'];

export interface DataBlockStart {
  entry: TocEntry;
  /** Stream offset of the block's first byte, the place for a chunk boundary at a table's start. */
  offset: number;
}

export interface DataBlockEnd {
  entry: TocEntry;
  /** Stream offset just past the block's last byte. */
  offset: number;
  /** COPY rows the block held; 0 for blocks that are not COPY data. */
  rows: number;
  /** The fingerprint of those rows (fingerprint.ts); undefined for blocks that are not COPY data. */
  fingerprint: string | undefined;
}

/** One large object's contents, as a BLOBS block carried them. */
export interface LargeObjectContents {
  oid: number;
  bytes: number;
  /** SHA-256 of its bytes, as 64 lowercase hex digits. */
  sha256: string;
}

/**
 * What the reader reports, each call made synchronously from within push(). Every method is
 * optional. Offsets count bytes from the start of the stream.
 */
export interface ArchiveHandler {
  header?(header: ArchiveHeader): void;
  tocEntry?(entry: TocEntry): void;
  dataStart?(block: DataBlockStart): void;
  dataEnd?(block: DataBlockEnd): void;
  /** Each large object of a BLOBS block, once its last byte passed; only then are they hashed. */
  largeObject?(contents: LargeObjectContents): void;
}

/** The input is not a custom-format archive pg_dump could have written. */
export class ArchiveFormatError extends SourceError {
  /** Stream offset where the reader noticed. */
  readonly offset: number;

  constructor(message: string, offset: number, details: ErrorDetails = {}) {
    super(`pg_dump archive: ${message} (at byte ${offset})`, details);
    this.offset = offset;
  }
}

/** The archive stops before its end: pg_dump failed, or the stream was cut. */
export class TruncatedArchiveError extends ArchiveFormatError {}

/** A well-formed archive of a version or kind this reader does not read. */
export class UnsupportedArchiveError extends ArchiveFormatError {}

const MAGIC = 'PGDMP';
const SUPPORTED_MINOR_VERSIONS = [14, 15];
/** From archive 1.15 the header names a compression algorithm in one byte instead of an int level. */
const COMPRESSION_ALGORITHM_SINCE_MINOR = 15;
const CUSTOM_FORMAT = 1;
const COMPRESSION_NONE = 0;
const NO_DATA = 3;
const MAX_INT_SIZE = 8;
const MAX_OFFSET_SIZE = 16;
/** PostgreSQL's largest allocation (MaxAllocSize), so no string pg_dump writes is longer. */
const MAX_STRING_BYTES = 0x3fffffff;
/** pg_dump writes the creation time as seconds, minutes, hours, day, month, year, DST flag. */
const TIMESTAMP_INTS = 7;
const BLOCK_DATA = 1;
const BLOCK_LARGE_OBJECTS = 3;
/** pg_dump writes an oid (unsigned) with WriteInt: one above 2^31 - 1 arrives negative. */
const OID_RANGE = 2 ** 32;
/** A gathered TOC entry larger than this is not kept around for the next one. */
const KEPT_BUFFER_BYTES = 1 << 20;

/** Where the reader is. The header and each TOC entry are parsed whole, the data byte by byte. */
const enum Step {
  Header,
  TocEntry,
  BlockType,
  Int,
  CopyData,
  OpaqueChunk,
}

/** What the int being read is. */
const enum IntRole {
  BlockId,
  ChunkLength,
  LargeObjectOid,
}

/**
 * Reads an archive pushed in pieces of any size, split anywhere. It holds one TOC entry while it
 * arrives, the TOC entries that still await their data, and the fingerprint of the COPY data
 * being read (which needs no row gathered: a row's hash is taken as its bytes pass).
 */
export class ArchiveReader {
  private readonly handler: ArchiveHandler;
  private step = Step.Header;
  /** Stream offset of the first byte of the piece being read. */
  private position = 0;
  private intSize = 0;
  private offsetSize = 0;
  private tocEntriesLeft = 0;
  private readonly awaitingData = new Map<number, TocEntry>();

  /** The header or a TOC entry, gathered while it spans pieces. */
  private readonly structure = new ByteBuffer();
  private structureOffset = 0;
  /** Bytes the structure needs before parsing it again is worth trying. */
  private structureNeeds = 0;

  private readonly intBytes = new Uint8Array(1 + MAX_INT_SIZE);
  private intHave = 0;
  private intOffset = 0;
  private intRole = IntRole.BlockId;

  private blockType = 0;
  private blockOffset = 0;
  private block: TocEntry | undefined;
  /** The rows of the current block's COPY data, while it is read. */
  private copyRows: TableFingerprint | undefined;
  private chunkLeft = 0;
  /** The large object being read, while the handler wants them. */
  private largeObject: { oid: number; bytes: number; hash: Hash } | undefined;

  private failure: unknown;
  private ended = false;

  constructor(handler: ArchiveHandler = {}) {
    this.handler = handler;
  }

  /** Reads the next piece of the archive. Throws an ArchiveFormatError when it is malformed. */
  push(piece: Uint8Array): void {
    if (this.ended) throw new Error('ArchiveReader.push() after end()');
    if (this.failure !== undefined) throw this.failure;
    try {
      this.read(piece);
    } catch (error) {
      this.failure = error;
      throw error;
    }
    this.position += piece.length;
  }

  /** Declares the input complete. Throws a TruncatedArchiveError unless the archive was whole. */
  end(): void {
    if (this.failure !== undefined) throw this.failure;
    this.ended = true;
    const at = this.position;
    if (this.step === Step.Header) throw new TruncatedArchiveError('the input ends inside the header', at);
    if (this.step === Step.TocEntry)
      throw new TruncatedArchiveError('the input ends inside the table of contents', at);
    if (this.block)
      throw new TruncatedArchiveError(`the input ends inside the data of ${describe(this.block)}`, at);
    if (this.step !== Step.BlockType)
      throw new TruncatedArchiveError('the input ends inside a data block header', at);
    const missing = this.awaitingData.values().next();
    if (!missing.done) {
      throw new TruncatedArchiveError(
        `the input ends before the data of ${this.awaitingData.size} entries, the first ${describe(missing.value)}`,
        at,
      );
    }
  }

  private read(input: Uint8Array): void {
    // A plain view, whose subarray is cheaper than a Buffer's.
    const piece = new Uint8Array(input.buffer, input.byteOffset, input.length);
    let at = 0;
    while (at < piece.length) {
      switch (this.step) {
        case Step.Header:
        case Step.TocEntry:
          at = this.readStructure(piece, at);
          break;
        case Step.BlockType:
          at = this.readBlockType(piece, at);
          break;
        case Step.Int:
          at = this.readInt(piece, at);
          break;
        case Step.CopyData:
          at = this.readCopyData(piece, at);
          break;
        case Step.OpaqueChunk:
          at = this.skipChunk(piece, at);
          break;
      }
    }
  }

  /**
   * Parses the header or a TOC entry where it lies in the piece, or gathers it while it spans
   * pieces. A parse that runs out of bytes says how many it needs, so gathering a long entry
   * byte by byte costs one parse attempt per field, not per byte.
   */
  private readStructure(piece: Uint8Array, at: number): number {
    if (this.structure.length === 0) {
      const parsed = this.parseStructure(piece, at, piece.length, this.position + at);
      if (parsed > 0) return at + parsed;
      this.structureOffset = this.position + at;
      this.structure.append(piece, at, piece.length);
      return piece.length;
    }
    const take = Math.min(this.structureNeeds - this.structure.length, piece.length - at);
    this.structure.append(piece, at, at + take);
    if (this.structure.length >= this.structureNeeds) {
      const parsed = this.parseStructure(
        this.structure.bytes,
        0,
        this.structure.length,
        this.structureOffset,
      );
      // A structure never needs fewer bytes than a failed read of it did, so a parse completes
      // exactly at the end of what was gathered.
      if (parsed > 0) this.structure.clear();
    }
    return at + take;
  }

  /** Bytes consumed, or 0 (with structureNeeds set) when the structure runs past `end`. */
  private parseStructure(bytes: Uint8Array, start: number, end: number, offset: number): number {
    const cursor = new StructureCursor(bytes, start, end, offset, this.intSize);
    try {
      if (this.step === Step.Header) this.parseHeader(cursor);
      else this.parseTocEntry(cursor);
      return cursor.consumed;
    } catch (error) {
      if (!(error instanceof NeedMoreBytes)) throw error;
      this.structureNeeds = error.total;
      return 0;
    }
  }

  private parseHeader(cursor: StructureCursor): void {
    const magic = String.fromCharCode(...cursor.bytes(MAGIC.length));
    if (magic !== MAGIC) {
      throw new ArchiveFormatError('not a custom-format archive (no PGDMP signature)', cursor.offset, {
        hint: 'Give strongbox the output of pg_dump --format=custom.',
      });
    }
    const [major = 0, minor = 0, revision = 0] = cursor.bytes(3);
    const archiveVersion = `${major}.${minor}.${revision}`;
    if (major !== 1 || !SUPPORTED_MINOR_VERSIONS.includes(minor)) {
      throw new UnsupportedArchiveError(
        `archive version ${archiveVersion} is not supported (1.14 and 1.15, from pg_dump 12 to 16, are)`,
        cursor.offset,
        { hint: 'Use pg_dump 12 to 16, or a strongbox that reads newer archives.' },
      );
    }
    const intSize = cursor.byte();
    const offsetSize = cursor.byte();
    if (intSize < 1 || intSize > MAX_INT_SIZE || offsetSize < 1 || offsetSize > MAX_OFFSET_SIZE) {
      throw new ArchiveFormatError(
        `implausible integer size ${intSize} or offset size ${offsetSize}`,
        cursor.offset,
      );
    }
    cursor.intSize = intSize;
    const format = cursor.byte();
    if (format !== CUSTOM_FORMAT) {
      throw new UnsupportedArchiveError(
        `archive format ${format} is not the custom format (${CUSTOM_FORMAT})`,
        cursor.offset,
      );
    }
    const compression = minor >= COMPRESSION_ALGORITHM_SINCE_MINOR ? cursor.byte() : cursor.int();
    if (compression !== COMPRESSION_NONE) {
      throw new UnsupportedArchiveError(
        'the archive is compressed, so its rows cannot be read',
        cursor.offset,
        {
          hint: 'Run pg_dump with --compress=0; strongbox compresses the data itself.',
        },
      );
    }
    for (let i = 0; i < TIMESTAMP_INTS; i++) cursor.int();
    const header: ArchiveHeader = {
      archiveVersion,
      database: cursor.requiredString('database name'),
      serverVersion: cursor.requiredString('server version'),
      pgDumpVersion: cursor.requiredString('pg_dump version'),
    };
    const tocEntries = cursor.int();
    if (tocEntries < 0) throw new ArchiveFormatError(`negative TOC entry count ${tocEntries}`, cursor.offset);

    this.intSize = intSize;
    this.offsetSize = offsetSize;
    this.tocEntriesLeft = tocEntries;
    this.step = tocEntries > 0 ? Step.TocEntry : Step.BlockType;
    this.handler.header?.(header);
  }

  private parseTocEntry(cursor: StructureCursor): void {
    const entryOffset = cursor.offset;
    const dumpId = cursor.int();
    if (dumpId <= 0) throw new ArchiveFormatError(`TOC entry with dump id ${dumpId}`, entryOffset);
    cursor.int(); // whether pg_dump had a data dumper for it: the data offset flag below says more
    cursor.skipString(); // catalog table oid
    cursor.skipString(); // oid
    const tag = cursor.requiredString('TOC entry tag');
    const desc = cursor.requiredString('TOC entry description');
    const section = SECTIONS[cursor.int()] ?? 'none';
    cursor.skipString(); // defn
    cursor.skipString(); // dropStmt
    const copyStatement = cursor.string();
    const namespace = cursor.string() ?? '';
    cursor.skipString(); // tablespace
    cursor.skipString(); // table access method, present from archive 1.14
    const owner = cursor.string() ?? '';
    cursor.skipString(); // WITH OIDS, always "false" now
    const dependencies: number[] = [];
    for (let dependency = cursor.string(); dependency !== null; dependency = cursor.string()) {
      const id = Number(dependency);
      if (!Number.isInteger(id))
        throw new ArchiveFormatError(`dependency "${dependency}" is not a dump id`, cursor.offset);
      dependencies.push(id);
    }
    const dataFlag = cursor.byte();
    if (dataFlag < 1 || dataFlag > NO_DATA)
      throw new ArchiveFormatError(`unknown data offset flag ${dataFlag}`, cursor.offset);
    cursor.skip(this.offsetSize);

    const entry: TocEntry = {
      dumpId,
      desc,
      section,
      tag,
      namespace,
      owner,
      copyStatement: copyStatement || null,
      dependencies,
      hasData: dataFlag !== NO_DATA,
    };
    if (desc === 'TABLE DATA') entry.table = { schema: namespace, name: tag, dumpId: dependencies[0] };
    if (entry.hasData) {
      if (this.awaitingData.has(dumpId))
        throw new ArchiveFormatError(`two TOC entries with dump id ${dumpId}`, entryOffset);
      this.awaitingData.set(dumpId, entry);
    }
    if (--this.tocEntriesLeft === 0) this.step = Step.BlockType;
    this.handler.tocEntry?.(entry);
  }

  private readBlockType(piece: Uint8Array, at: number): number {
    const offset = this.position + at;
    if (this.awaitingData.size === 0) {
      throw new ArchiveFormatError('bytes follow the last data block', offset);
    }
    const type = piece[at]!;
    if (type !== BLOCK_DATA && type !== BLOCK_LARGE_OBJECTS) {
      throw new ArchiveFormatError(`unknown data block type ${type}`, offset);
    }
    this.blockType = type;
    this.blockOffset = offset;
    this.expectInt(IntRole.BlockId);
    return at + 1;
  }

  private expectInt(role: IntRole): void {
    this.step = Step.Int;
    this.intRole = role;
  }

  private readInt(piece: Uint8Array, at: number): number {
    const width = 1 + this.intSize;
    let value: number;
    let offset: number;
    if (this.intHave === 0 && at + width <= piece.length) {
      value = decodeInt(piece, at, this.intSize);
      offset = this.position + at;
      at += width;
    } else {
      if (this.intHave === 0) this.intOffset = this.position + at;
      const take = Math.min(width - this.intHave, piece.length - at);
      this.intBytes.set(piece.subarray(at, at + take), this.intHave);
      this.intHave += take;
      at += take;
      if (this.intHave < width) return at;
      this.intHave = 0;
      value = decodeInt(this.intBytes, 0, this.intSize);
      offset = this.intOffset;
    }
    if (Number.isNaN(value)) throw new ArchiveFormatError('an integer with an invalid sign', offset);
    this.intRead(value, offset, this.position + at);
    return at;
  }

  private intRead(value: number, offset: number, end: number): void {
    switch (this.intRole) {
      case IntRole.BlockId:
        return this.startBlock(value, offset);
      case IntRole.ChunkLength:
        if (value < 0) throw new ArchiveFormatError(`negative data chunk length ${value}`, offset);
        if (value > 0) {
          this.chunkLeft = value;
          this.step = Step.OpaqueChunk;
        } else if (this.blockType === BLOCK_LARGE_OBJECTS) {
          this.endLargeObject();
          this.expectInt(IntRole.LargeObjectOid);
        } else {
          this.endBlock(offset, end);
        }
        return;
      case IntRole.LargeObjectOid:
        // Only a zero oid ends the block.
        if (value === 0) return this.endBlock(offset, end);
        if (this.handler.largeObject) {
          const oid = value < 0 ? value + OID_RANGE : value;
          this.largeObject = { oid, bytes: 0, hash: createHash('sha256') };
        }
        this.expectInt(IntRole.ChunkLength);
        return;
    }
  }

  private startBlock(dumpId: number, offset: number): void {
    const entry = this.awaitingData.get(dumpId);
    if (!entry) {
      throw new ArchiveFormatError(
        `a data block for dump id ${dumpId}, which has none (or has had it) in the TOC`,
        offset,
      );
    }
    if ((this.blockType === BLOCK_LARGE_OBJECTS) !== (entry.desc === 'BLOBS')) {
      throw new ArchiveFormatError(`a data block of type ${this.blockType} for ${describe(entry)}`, offset);
    }
    this.awaitingData.delete(dumpId);
    this.block = entry;
    this.copyRows = this.isCopyData(entry) ? new TableFingerprint({ archive: true }) : undefined;
    if (this.copyRows) this.step = Step.CopyData;
    else
      this.expectInt(this.blockType === BLOCK_LARGE_OBJECTS ? IntRole.LargeObjectOid : IntRole.ChunkLength);
    this.handler.dataStart?.({ entry, offset: this.blockOffset });
  }

  private endBlock(offset: number, end: number): void {
    const entry = this.block!;
    const rows = this.copyRows;
    if (rows?.insideRow) {
      throw new ArchiveFormatError(`the COPY data of ${describe(entry)} ends inside a row`, offset);
    }
    this.block = undefined;
    this.copyRows = undefined;
    this.step = Step.BlockType;
    this.handler.dataEnd?.({ entry, offset: end, rows: rows?.rows ?? 0, fingerprint: rows?.digest() });
  }

  private isCopyData(entry: TocEntry): boolean {
    return entry.desc === 'TABLE DATA' && entry.copyStatement !== null;
  }

  /**
   * Reads a TABLE DATA block's chunks of COPY text (their lengths too) from the piece, up to the
   * zero length that ends the block. COPY text never contains a NUL byte while every int in the
   * archive starts with one (a zero sign byte), so a NUL means a length was wrong: the reader
   * stops rather than count archive structure as rows.
   */
  private readCopyData(piece: Uint8Array, at: number): number {
    const read = this.copyRows!.pushChunks(piece.subarray(at), this.intSize);
    if (read.status === 'read') {
      const end = at + read.read;
      if (read.blockEnded) this.endBlock(this.position + end - 1 - this.intSize, this.position + end);
      return end;
    }
    const offset = this.position + at + read.at;
    const intOffset = offset - 1 - this.intSize;
    switch (read.status) {
      case 'nul':
        throw new ArchiveFormatError(`a NUL byte in the COPY data of ${describe(this.block!)}`, offset);
      case 'after-terminator':
        throw new ArchiveFormatError(`data after the COPY terminator of ${describe(this.block!)}`, offset);
      case 'invalid-int':
        throw new ArchiveFormatError('an integer with an invalid sign', intOffset);
      case 'negative-length':
        throw new ArchiveFormatError('negative data chunk length', intOffset);
    }
  }

  private endLargeObject(): void {
    const object = this.largeObject;
    if (!object) return;
    this.largeObject = undefined;
    this.handler.largeObject?.({ oid: object.oid, bytes: object.bytes, sha256: object.hash.digest('hex') });
  }

  /** Passes over a chunk of data that is not COPY text; a large object's is hashed as it passes. */
  private skipChunk(piece: Uint8Array, at: number): number {
    const take = Math.min(this.chunkLeft, piece.length - at);
    if (this.largeObject) {
      this.largeObject.hash.update(piece.subarray(at, at + take));
      this.largeObject.bytes += take;
    }
    this.chunkLeft -= take;
    if (this.chunkLeft === 0) this.expectInt(IntRole.ChunkLength);
    return at + take;
  }
}

function describe(entry: TocEntry): string {
  const name = entry.namespace ? `${entry.namespace}.${entry.tag}` : entry.tag;
  return `${entry.desc} ${name} (dump id ${entry.dumpId})`;
}

/**
 * A WriteInt value, or NaN for what pg_dump never writes (a sign byte other than 0 or 1, or a
 * negative zero), so that a misaligned read or a damaged int is caught at once.
 */
function decodeInt(bytes: Uint8Array, at: number, intSize: number): number {
  const sign = bytes[at]!;
  let magnitude = 0;
  for (let i = intSize; i >= 1; i--) magnitude = magnitude * 256 + bytes[at + i]!;
  if (sign === 0) return magnitude;
  return sign === 1 && magnitude > 0 ? -magnitude : NaN;
}

/** Thrown by a StructureCursor read that runs past the bytes it has; caught within the reader. */
class NeedMoreBytes {
  /** Bytes from the structure's start the failed read needs. */
  readonly total: number;

  constructor(total: number) {
    this.total = total;
  }
}

const utf8 = new TextDecoder();

/** Reads the header's and TOC entries' fields (ReadInt, ReadStr…) from bytes[start, end). */
class StructureCursor {
  intSize: number;
  private at: number;

  constructor(
    private readonly source: Uint8Array,
    private readonly start: number,
    private readonly end: number,
    private readonly streamOffset: number,
    intSize: number,
  ) {
    this.at = start;
    this.intSize = intSize;
  }

  get consumed(): number {
    return this.at - this.start;
  }

  /** Stream offset of the next byte. */
  get offset(): number {
    return this.streamOffset + this.consumed;
  }

  byte(): number {
    this.need(1);
    return this.source[this.at++]!;
  }

  bytes(count: number): Uint8Array {
    this.need(count);
    this.at += count;
    return this.source.subarray(this.at - count, this.at);
  }

  skip(count: number): void {
    this.need(count);
    this.at += count;
  }

  int(): number {
    const offset = this.offset;
    this.need(1 + this.intSize);
    const value = decodeInt(this.source, this.at, this.intSize);
    if (Number.isNaN(value)) throw new ArchiveFormatError('an integer with an invalid sign', offset);
    this.at += 1 + this.intSize;
    return value;
  }

  string(): string | null {
    const length = this.stringLength();
    return length < 0 ? null : utf8.decode(this.bytes(length));
  }

  requiredString(what: string): string {
    const offset = this.offset;
    const value = this.string();
    if (value === null) throw new ArchiveFormatError(`no ${what}`, offset);
    return value;
  }

  skipString(): void {
    const length = this.stringLength();
    if (length > 0) this.skip(length);
  }

  private stringLength(): number {
    const offset = this.offset;
    const length = this.int();
    if (length < -1 || length > MAX_STRING_BYTES) {
      throw new ArchiveFormatError(`implausible string length ${length}`, offset);
    }
    return length;
  }

  private need(count: number): void {
    if (this.at + count > this.end) throw new NeedMoreBytes(this.at + count - this.start);
  }
}

/** A growable byte buffer, reused; it gives back memory a very large row or entry took. */
class ByteBuffer {
  bytes = new Uint8Array(0);
  length = 0;

  append(source: Uint8Array, from: number, to: number): void {
    const needed = this.length + (to - from);
    if (needed > this.bytes.length) {
      const grown = new Uint8Array(Math.max(needed, this.bytes.length * 2, 256));
      grown.set(this.bytes.subarray(0, this.length));
      this.bytes = grown;
    }
    this.bytes.set(source.subarray(from, to), this.length);
    this.length = needed;
  }

  clear(): void {
    this.length = 0;
    if (this.bytes.length > KEPT_BUFFER_BYTES) this.bytes = new Uint8Array(0);
  }
}
