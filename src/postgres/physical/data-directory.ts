import { promises as fs, type Stats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { errnoCode, SourceError } from '../../errors.ts';
import { isFileName } from '../../repository/schemas.ts';
import { PAGE_SIZE } from './page-chunks.ts';
import { PAGES_PER_SEGMENT, pageVerifies } from './page-checksum.ts';
import type { TarEntry } from './tar-reader.ts';

/**
 * A data directory (or a tablespace's) read from disk as pg_basebackup's server side would send
 * it between pg_backup_start and pg_backup_stop: the same files left out, the same pages checked.
 * Entries come depth first, in name order, each directory before what it holds, each file's
 * content streamed: the shape readTar gives an archive.
 */

/** One entry and, for a file, its content: pieces each valid until the next is asked for. */
export interface DirectoryEntry {
  entry: TarEntry;
  content: AsyncIterable<Uint8Array>;
}

/** A page that failed its checksum twice, read twice. */
export interface PageFailure {
  /** Relative to the data directory (or tablespace) read. */
  file: string;
  block: number;
}

export interface ReadDirectoryOptions {
  /** Absolute path of the directory read. */
  root: string;
  /** Whether `relative` is a relation file (page-chunks.ts). */
  isRelation: (relative: string) => boolean;
  /** With data checksums on: pages older than the backup's start are checked, failures collected. */
  checksums?: { startLsn: bigint; failures: PageFailure[] };
  /** The data directory's top: pg_wal's and pg_tblspc's contents are left out, pg_control held back. */
  dataDirectory?: boolean;
  /** Buffers to read into, shared by every file read in turn. */
  buffers: ReadPieces;
  /** Only this entry of the top directory (a tablespace's version directory). */
  onlyTop?: string;
}

/** Left out wherever they are: rebuilt or written anew when the server starts (basebackup.c). */
const EXCLUDED_FILES = new Set([
  'postgresql.auto.conf.tmp',
  'current_logfiles.tmp',
  'backup_label',
  'tablespace_map',
  'backup_manifest',
  'postmaster.pid',
  'postmaster.opts',
]);
/** Files whose name starts so are the relation cache, rebuilt at start. */
const EXCLUDED_PREFIX = 'pg_internal.init';
/** Temporary files and directories. */
const TEMPORARY_PREFIX = 'pgsql_tmp';
/** Directories kept, empty: what they hold is removed or rebuilt at start. */
const EMPTIED_DIRECTORIES = new Set([
  'pg_stat_tmp',
  'pg_replslot',
  'pg_dynshmem',
  'pg_notify',
  'pg_serial',
  'pg_snapshots',
  'pg_subtrans',
]);
/** A temporary relation's file: t<backend>_<relfilenode>[_fork][.segment]. */
const TEMPORARY_RELATION = /^t\d+_\d+(?:_(?:fsm|vm|init))?(?:\.\d+)?$/;
/** A relation file's relfilenode, fork and segment. */
const RELATION_NAME = /^(\d+)(_(?:fsm|vm|init))?(?:\.(\d+))?$/;
/** Stored last, as pg_basebackup does: the control file as late as it can be read. */
export const CONTROL_FILE = 'global/pg_control';

/** Two buffers a file is read into, one piece ahead of the one being stored. */
export class ReadPieces {
  readonly pieces: [Uint8Array, Uint8Array];

  /** `size` is a whole number of pages, so that every piece of a relation file holds whole pages. */
  constructor(readonly size = 128 * PAGE_SIZE) {
    this.pieces = [new Uint8Array(size), new Uint8Array(size)];
  }
}

/** Every entry of the directory, as pg_basebackup would send it. */
export async function* readDirectory(options: ReadDirectoryOptions): AsyncGenerator<DirectoryEntry> {
  yield* walk(options, '');
  if (options.dataDirectory) {
    const control = await statOrMissing(path.join(options.root, CONTROL_FILE));
    if (!control?.isFile())
      throw new SourceError(`${path.join(options.root, CONTROL_FILE)} is missing; no snapshot was written`);
    yield fileEntry(options, CONTROL_FILE, control);
  }
}

/** The file at `relative` as an entry, or undefined when there is none. */
export async function fileAt(
  options: ReadDirectoryOptions,
  relative: string,
): Promise<DirectoryEntry | undefined> {
  const stats = await statOrMissing(path.join(options.root, relative));
  return stats?.isFile() ? fileEntry(options, relative, stats) : undefined;
}

async function* walk(options: ReadDirectoryOptions, relative: string): AsyncGenerator<DirectoryEntry> {
  const directory = path.join(options.root, relative);
  let names: string[];
  try {
    names = (await fs.readdir(directory)).sort();
  } catch (error) {
    // Removed while the backup ran (a database dropped): WAL replay removes it again.
    if (errnoCode(error) === 'ENOENT' && relative !== '') return;
    throw unreadable(directory, error);
  }
  const databaseDirectory = isDatabaseDirectory(relative, options.dataDirectory ?? false);
  const unlogged = databaseDirectory ? unloggedRelations(names) : undefined;
  for (const name of names) {
    const child = relative ? `${relative}/${name}` : name;
    if (
      skipped(name, unlogged) ||
      (relative === '' && options.onlyTop !== undefined && name !== options.onlyTop)
    )
      continue;
    if (!isFileName(name))
      throw new SourceError(
        `${path.join(directory, name)} has a name strongbox cannot store; no snapshot was written`,
        { hint: 'Rename or remove the file: PostgreSQL does not make such names.' },
      );
    if (options.dataDirectory && child === CONTROL_FILE) continue;
    const stats = await statOrMissing(path.join(directory, name));
    if (!stats) continue;
    if (options.dataDirectory && child === 'pg_wal') {
      // Only its layout: the WAL the backup needs is archived, or added after the backup stops.
      // A pg_wal that links elsewhere is restored as a directory, as pg_basebackup sends it.
      yield directoryEntry(child, stats, stats.isSymbolicLink() ? 0o700 : undefined);
      const status = await statOrMissing(path.join(directory, name, 'archive_status'));
      if (status?.isDirectory()) yield directoryEntry(`${child}/archive_status`, status);
      continue;
    }
    if (stats.isDirectory()) {
      yield directoryEntry(child, stats);
      // The tablespaces' links are laid out from tablespace_map; their files are read on their own.
      const tablespaceLinks = options.dataDirectory && child === 'pg_tblspc';
      if (!EMPTIED_DIRECTORIES.has(name) && !tablespaceLinks) yield* walk(options, child);
    } else if (stats.isSymbolicLink()) {
      let target: string;
      try {
        target = await fs.readlink(path.join(directory, name));
      } catch (error) {
        if (errnoCode(error) === 'ENOENT') continue;
        throw unreadable(path.join(directory, name), error);
      }
      yield {
        entry: { ...metadata(child, stats), type: 'symlink', size: 0, linkTarget: target },
        content: none(),
      };
    } else if (stats.isFile()) {
      yield fileEntry(options, child, stats);
    }
    // Sockets, pipes and devices are not the cluster's data.
  }
}

function skipped(name: string, unlogged: Set<string> | undefined): boolean {
  if (EXCLUDED_FILES.has(name) || name.startsWith(EXCLUDED_PREFIX) || name.startsWith(TEMPORARY_PREFIX))
    return true;
  if (!unlogged) return false;
  if (TEMPORARY_RELATION.test(name)) return true;
  // An unlogged relation restores as its init fork: the others are left out.
  const match = RELATION_NAME.exec(name);
  return match !== null && unlogged.has(match[1]!) && match[2] !== '_init';
}

/** base/<oid>, or <version directory>/<oid> in a tablespace. */
function isDatabaseDirectory(relative: string, dataDirectory: boolean): boolean {
  const parts = relative.split('/');
  if (parts.length !== 2 || !/^\d+$/.test(parts[1]!)) return false;
  return dataDirectory ? parts[0] === 'base' : parts[0]!.startsWith('PG_');
}

/** The relfilenodes with an init fork: unlogged relations. */
function unloggedRelations(names: string[]): Set<string> {
  const unlogged = new Set<string>();
  for (const name of names) {
    const match = RELATION_NAME.exec(name);
    if (match?.[2] === '_init') unlogged.add(match[1]!);
  }
  return unlogged;
}

async function statOrMissing(file: string): Promise<Stats | undefined> {
  try {
    return await fs.lstat(file);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return undefined;
    throw unreadable(file, error);
  }
}

function unreadable(file: string, error: unknown): SourceError {
  return new SourceError(`cannot read ${file}: ${(error as Error).message}; no snapshot was written`, {
    cause: error,
    hint: 'Run the backup as the user the server runs as (or one that can read its data directory).',
  });
}

function metadata(relative: string, stats: Stats): Omit<TarEntry, 'type' | 'size'> {
  return {
    path: relative,
    mode: stats.mode & 0o7777,
    uid: stats.uid,
    gid: stats.gid,
    mtime: Math.floor(stats.mtimeMs / 1000),
  };
}

function directoryEntry(relative: string, stats: Stats, mode?: number): DirectoryEntry {
  return {
    entry: { ...metadata(relative, stats), ...(mode === undefined ? {} : { mode }), type: 'dir', size: 0 },
    content: none(),
  };
}

function fileEntry(options: ReadDirectoryOptions, relative: string, stats: Stats): DirectoryEntry {
  return {
    entry: { ...metadata(relative, stats), type: 'file', size: stats.size },
    content: readFile(options, relative, stats.size),
  };
}

async function* none(): AsyncGenerator<Uint8Array> {}

/**
 * A file's content up to the size it had when listed (it may grow meanwhile: WAL replay brings
 * what was appended), or less where it ends sooner (truncated, or removed: WAL replay does that
 * again). One piece is read ahead while the previous is stored.
 */
async function* readFile(
  options: ReadDirectoryOptions,
  relative: string,
  size: number,
): AsyncGenerator<Uint8Array> {
  const file = path.join(options.root, relative);
  let handle: FileHandle;
  try {
    handle = await fs.open(file, 'r');
  } catch (error) {
    if (errnoCode(error) === 'ENOENT') return;
    throw unreadable(file, error);
  }
  const checked =
    options.checksums && options.isRelation(relative) ? pageChecker(options, relative, handle) : undefined;
  const { pieces } = options.buffers;
  const readPiece = (index: number, position: number) => {
    const length = Math.min(pieces[index]!.length, size - position);
    return handle.read(pieces[index]!, 0, length, position).then(({ bytesRead }) => ({ bytesRead, length }));
  };
  let index = 0;
  let position = 0;
  let pending: ReturnType<typeof readPiece> | undefined = size > 0 ? readPiece(0, 0) : undefined;
  try {
    while (pending) {
      const { bytesRead, length } = await pending.catch((error: unknown) => {
        throw unreadable(file, error);
      });
      pending = undefined;
      if (bytesRead === 0) break;
      const piece = pieces[index]!.subarray(0, bytesRead);
      const at = position;
      position += bytesRead;
      index ^= 1;
      // A short read is the file's end, as it is now.
      if (bytesRead === length && position < size) pending = readPiece(index, position);
      if (checked) await checked(piece, at);
      yield piece;
    }
  } finally {
    // The buffers are shared: no read may still be filling one when the next file starts.
    await pending?.catch(() => undefined);
    await handle.close();
  }
}

/**
 * Checks each whole page of a piece read at `at`. A page that fails is read once more, as the
 * server does: a page being written as it was read may be torn, and the second read has it
 * whole (or newer than the backup's start). What fails twice is collected.
 */
function pageChecker(options: ReadDirectoryOptions, relative: string, handle: FileHandle) {
  const { startLsn, failures } = options.checksums!;
  const segment = Number(RELATION_NAME.exec(path.basename(relative))?.[3] ?? 0);
  const firstBlock = segment * PAGES_PER_SEGMENT;
  return async (piece: Uint8Array, at: number): Promise<void> => {
    for (let offset = 0; offset + PAGE_SIZE <= piece.length; offset += PAGE_SIZE) {
      const block = firstBlock + (at + offset) / PAGE_SIZE;
      if (pageVerifies(piece, offset, block, startLsn)) continue;
      const { bytesRead } = await handle.read(piece, offset, PAGE_SIZE, at + offset);
      // Shorter: truncated since, which WAL replay does again.
      if (bytesRead < PAGE_SIZE || pageVerifies(piece, offset, block, startLsn)) continue;
      failures.push({ file: relative, block: block - firstBlock });
    }
  };
}
