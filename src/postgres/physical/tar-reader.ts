import { SourceError } from '../../errors.ts';
import { isFileName, LIMITS } from '../../repository/schemas.ts';

/**
 * A streaming reader of the tar archives pg_basebackup writes (ustar, with the pax extended
 * headers other writers add): one entry at a time, its content streamed, never the archive
 * whole. Strict, as the archive comes from a server: every header's checksum is checked, pax
 * headers are bounded, and a name that is absolute, has an empty, "." or ".." component, or is
 * not UTF-8 is refused rather than stored.
 */

export interface TarEntry {
  /** Relative, "/"-separated, without a trailing slash; every component a valid file name. */
  path: string;
  type: 'file' | 'dir' | 'symlink';
  /** Permission bits. */
  mode: number;
  uid: number;
  gid: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Bytes of content; 0 but for files. */
  size: number;
  linkTarget?: string;
}

/** A pax extended header bigger than this is refused: path and size need a few hundred bytes. */
export const MAX_PAX_HEADER = 64 * 1024;
const BLOCK = 512;

export class MalformedArchiveError extends SourceError {
  /** The archive ended early: most often because its writer failed, whose own error says more. */
  readonly truncated: boolean;

  constructor(
    readonly archive: string,
    readonly problem: string,
  ) {
    super(`${archive} from pg_basebackup is not a valid tar archive: ${problem}; no snapshot was written`, {
      hint: 'Run the backup again; if it fails the same way, report it with the PostgreSQL version.',
    });
    this.truncated = problem.startsWith('it ends');
  }
}

/**
 * Bytes from an async source, taken exactly as asked: the pieces it hands out are not copied, and
 * are valid until the next is asked for.
 */
class ByteReader {
  private buffer: Uint8Array = new Uint8Array(0);
  private offset = 0;
  private done = false;
  private readonly iterator: AsyncIterator<Uint8Array>;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.iterator = source[Symbol.asyncIterator]();
  }

  /** The next piece of at most `max` bytes; an empty one at the end of the source. */
  async piece(max: number): Promise<Uint8Array> {
    while (this.offset >= this.buffer.length && !this.done) {
      const next = await this.iterator.next();
      if (next.done) {
        // A piece is valid until the next is asked for: its buffer may be gone (pipe-reader.ts).
        this.buffer = new Uint8Array(0);
        this.offset = 0;
        this.done = true;
      } else {
        this.buffer = next.value;
        this.offset = 0;
      }
    }
    const end = Math.min(this.buffer.length, this.offset + max);
    const piece = this.buffer.subarray(this.offset, end);
    this.offset = end;
    return piece;
  }

  /** Exactly `length` bytes, copied when they span pieces; fewer only at the end of the source. */
  async exact(length: number): Promise<Uint8Array> {
    const first = await this.piece(length);
    if (first.length === length || first.length === 0) return first;
    const bytes = new Uint8Array(length);
    bytes.set(first);
    let filled = first.length;
    while (filled < length) {
      const piece = await this.piece(length - filled);
      if (piece.length === 0) return bytes.subarray(0, filled);
      bytes.set(piece, filled);
      filled += piece.length;
    }
    return bytes;
  }

  async close(): Promise<void> {
    await this.iterator.return?.();
  }
}

/**
 * The entries of a tar archive, in order. Each entry's content must be read to its end, or
 * abandoned, before the next entry is asked for; what was left unread is skipped then.
 */
export async function* readTar(
  source: AsyncIterable<Uint8Array>,
  archive: string,
): AsyncGenerator<{ entry: TarEntry; content: AsyncIterable<Uint8Array> }> {
  const reader = new ByteReader(source);
  const fail = (problem: string) => new MalformedArchiveError(archive, problem);
  try {
    let pax: Map<string, string> | undefined;
    while (true) {
      const header = await reader.exact(BLOCK);
      if (header.length < BLOCK) throw fail('it ends before its end-of-archive blocks');
      if (isZero(header)) {
        await expectEnd(reader, fail);
        return;
      }
      const fields = parseHeader(header, fail);
      if (fields.typeflag === 'x') {
        if (fields.size > MAX_PAX_HEADER)
          throw fail(`a pax header of ${fields.size} bytes (at most ${MAX_PAX_HEADER})`);
        if (pax) throw fail('two pax headers in a row');
        const bytes = await reader.exact(padded(fields.size));
        if (bytes.length < padded(fields.size)) throw fail('it ends inside a pax header');
        pax = parsePax(bytes.subarray(0, fields.size), fail);
        continue;
      }
      const entry = toEntry(fields, pax, fail);
      pax = undefined;
      let remaining = entry.size;
      const content = (async function* () {
        while (remaining > 0) {
          const piece = await reader.piece(remaining);
          if (piece.length === 0) throw fail(`it ends inside ${entry.path}`);
          remaining -= piece.length;
          yield piece;
        }
      })();
      yield { entry, content };
      while (remaining > 0) {
        const piece = await reader.piece(remaining);
        if (piece.length === 0) throw fail(`it ends inside ${entry.path}`);
        remaining -= piece.length;
      }
      const padding = await reader.exact(padded(entry.size) - entry.size);
      if (padding.length < padded(entry.size) - entry.size) throw fail(`it ends inside ${entry.path}`);
    }
  } finally {
    await reader.close();
  }
}

/** After the first zero block: a second one, then nothing but zeros (a writer's record padding). */
async function expectEnd(reader: ByteReader, fail: (problem: string) => Error): Promise<void> {
  const second = await reader.exact(BLOCK);
  if (second.length < BLOCK || !isZero(second)) throw fail('a lone zero block before its end');
  while (true) {
    const piece = await reader.piece(1 << 20);
    if (piece.length === 0) return;
    if (!isZero(piece)) throw fail('data after its end-of-archive blocks');
  }
}

interface HeaderFields {
  name: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  typeflag: string;
  linkname: string;
}

function parseHeader(header: Uint8Array, fail: (problem: string) => Error): HeaderFields {
  const expected = octal(header, 148, 8, 'checksum', fail);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i]!;
  if (sum !== expected) throw fail('a header whose checksum does not match');
  const magic = latin1(header, 257, 6);
  if (magic !== 'ustar\0' && magic !== 'ustar ') throw fail('a header without the ustar magic');
  const name = text(header, 0, 100, fail);
  // A GNU header keeps other fields where POSIX keeps the prefix.
  const prefix = magic === 'ustar\0' ? text(header, 345, 155, fail) : '';
  return {
    name: prefix ? `${prefix}/${name}` : name,
    mode: octal(header, 100, 8, 'mode', fail),
    uid: octal(header, 108, 8, 'uid', fail),
    gid: octal(header, 116, 8, 'gid', fail),
    size: number(header, 124, 12, 'size', fail),
    mtime: number(header, 136, 12, 'mtime', fail),
    typeflag: String.fromCharCode(header[156]!),
    linkname: text(header, 157, 100, fail),
  };
}

const TYPES: Record<string, TarEntry['type']> = { '0': 'file', '\0': 'file', '5': 'dir', '2': 'symlink' };

function toEntry(
  fields: HeaderFields,
  pax: Map<string, string> | undefined,
  fail: (problem: string) => Error,
): TarEntry {
  const type = TYPES[fields.typeflag];
  if (!type) throw fail(`an entry of type ${JSON.stringify(fields.typeflag)} (${fields.name})`);
  const paxNumber = (key: string, fallback: number) => {
    const value = pax?.get(key);
    if (value === undefined) return fallback;
    // mtime may have a fraction; the seconds are what a tree records here.
    const match = /^(\d{1,16})(?:\.\d{1,9})?$/.exec(value);
    if (!match || (key !== 'mtime' && value.includes('.'))) throw fail(`a pax ${key} of ${value}`);
    return Number(match[1]);
  };
  const size = paxNumber('size', fields.size);
  if (!Number.isSafeInteger(size)) throw fail(`a size beyond 2^53 (${fields.name})`);
  if (type !== 'file' && size !== 0) throw fail(`a ${type} with content (${fields.name})`);
  const path = validPath(pax?.get('path') ?? fields.name, type !== 'file', fail);
  const entry: TarEntry = {
    path,
    type,
    mode: fields.mode & 0o7777,
    uid: paxNumber('uid', fields.uid),
    gid: paxNumber('gid', fields.gid),
    mtime: paxNumber('mtime', fields.mtime),
    size,
  };
  if (type === 'symlink') {
    const target = pax?.get('linkpath') ?? fields.linkname;
    if (target === '' || target.length > LIMITS.path || target.includes('\0'))
      throw fail(`a symlink ${path} with an invalid target`);
    entry.linkTarget = target;
  }
  return entry;
}

/** A relative path of valid file names; directories and symlinks may end in one "/". */
function validPath(name: string, mayEndInSlash: boolean, fail: (problem: string) => Error): string {
  // The server names some entries from "./" (./pg_wal/archive_status/).
  const relative = name.startsWith('./') ? name.slice(2) : name;
  const path = mayEndInSlash && relative.endsWith('/') ? relative.slice(0, -1) : relative;
  if (path.length === 0 || path.length > LIMITS.path) throw fail(`an entry named ${JSON.stringify(name)}`);
  for (const component of path.split('/')) {
    if (!isFileName(component)) throw fail(`an entry named ${JSON.stringify(name)}`);
  }
  return path;
}

function parsePax(bytes: Uint8Array, fail: (problem: string) => Error): Map<string, string> {
  const records = new Map<string, string>();
  let at = 0;
  while (at < bytes.length) {
    const space = bytes.indexOf(0x20, at);
    const lengthText = space < 0 ? '' : latin1(bytes, at, space - at);
    if (!/^[1-9]\d{0,5}$/.test(lengthText)) throw fail('a malformed pax record');
    const end = at + Number(lengthText);
    if (end > bytes.length || bytes[end - 1] !== 0x0a) throw fail('a malformed pax record');
    const record = utf8(bytes.subarray(space + 1, end - 1), fail);
    const equals = record.indexOf('=');
    if (equals <= 0) throw fail('a malformed pax record');
    records.set(record.slice(0, equals), record.slice(equals + 1));
    at = end;
  }
  return records;
}

function padded(size: number): number {
  return Math.ceil(size / BLOCK) * BLOCK;
}

function isZero(bytes: Uint8Array): boolean {
  for (const byte of bytes) if (byte !== 0) return false;
  return true;
}

function latin1(bytes: Uint8Array, start: number, length: number): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset + start, length).toString('latin1');
}

const decoder = new TextDecoder('utf-8', { fatal: true });

function utf8(bytes: Uint8Array, fail: (problem: string) => Error): string {
  try {
    return decoder.decode(bytes);
  } catch {
    throw fail('a name that is not UTF-8');
  }
}

/** A NUL-terminated (or full-width) text field. */
function text(header: Uint8Array, start: number, length: number, fail: (problem: string) => Error): string {
  const field = header.subarray(start, start + length);
  const end = field.indexOf(0);
  return utf8(end < 0 ? field : field.subarray(0, end), fail);
}

/** An octal field, NUL- or space-terminated, as ustar writes them. */
function octal(
  header: Uint8Array,
  start: number,
  length: number,
  what: string,
  fail: (problem: string) => Error,
): number {
  const value = latin1(header, start, length)
    .replace(/[\0 ]+$/, '')
    .replace(/^ +/, '');
  if (!/^[0-7]{1,12}$/.test(value)) throw fail(`a header whose ${what} is not octal`);
  return parseInt(value, 8);
}

/** An octal field, or GNU's base-256 (first byte 0x80) for values beyond it, as PostgreSQL writes sizes over 8 GiB. */
function number(
  header: Uint8Array,
  start: number,
  length: number,
  what: string,
  fail: (problem: string) => Error,
): number {
  if (header[start] !== 0x80) return octal(header, start, length, what, fail);
  let value = 0;
  for (let i = start + 1; i < start + length; i++) {
    value = value * 256 + header[i]!;
    if (!Number.isSafeInteger(value)) throw fail(`a header whose ${what} is beyond 2^53`);
  }
  return value;
}
