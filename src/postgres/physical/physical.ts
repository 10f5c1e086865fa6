import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ConfigError, SourceError } from '../../errors.ts';
import type { Tree, TreeNode } from '../../repository/tree.ts';
import type {
  BackupSource,
  ContentPiece,
  ContentSink,
  ParentTrees,
  PreviousContent,
  SourceResult,
} from '../../sources/source.ts';
import type { PostgresConnection } from '../connection.ts';
import { parseClusterFacts, requireReadablePhysicalDetails } from '../record-schema.ts';
import { psql, toolEnvironment, type ServerVersion } from '../tools.ts';
import { parseLsn, parseWalFileName, segmentName } from '../wal/segments.ts';
import { BackupSession, whyFilesUnreadable, type BackupStop } from './backup-session.ts';
import { PipeRaceLostError, startBasebackup, type Archive } from './basebackup-pipes.ts';
import {
  fileAt,
  readDirectory,
  ReadPieces,
  type DirectoryEntry,
  type PageFailure,
  type ReadDirectoryOptions,
} from './data-directory.ts';
import { CHUNK_PAGES_BYTES, isDataDirectoryRelation, isTablespaceRelation } from './page-chunks.ts';
import { CLUSTER_FACTS } from './physical-queries.ts';
import { MalformedArchiveError, readTar, type TarEntry } from './tar-reader.ts';

export const PHYSICAL_KIND = 'postgres-physical';

/** Names at the root of a physical snapshot's tree (docs/FORMAT.md). */
export const PHYSICAL_LAYOUT = {
  data: 'data',
  tablespaces: 'tablespaces',
  manifest: 'backup_manifest',
} as const;

/** What the server says of itself before the backup (CLUSTER_FACTS). */
export interface ClusterFacts {
  systemIdentifier: string;
  serverVersion: number;
  dataChecksums: boolean;
  walSegmentSize: number;
  /** catalog_version_no: a tablespace's files are in its PG_<major>_<catalog version> directory. */
  catalogVersion: number;
  /** null when the role may not read the setting. */
  dataDirectory: string | null;
  /** Whether the role may run pg_backup_start, pg_backup_stop and pg_read_binary_file. */
  mayReadFiles: boolean;
  archiveMode: string | null;
  archiveCommand: string | null;
  archiveLibrary: string | null;
  tablespaces: { oid: string; name: string; location: string }[];
}

/** What a physical backup records in its snapshot's `source`. */
export interface PhysicalSnapshotDetails {
  cluster: string;
  systemIdentifier: string;
  serverVersion: number;
  /** 0 when the files were read directly. */
  pgBasebackupMajor: number;
  /** How the files were read; absent in snapshots older than the choice: pg_basebackup. */
  method?: PhysicalMethod;
  timeline: number;
  startLsn: string;
  stopLsn: string;
  checkpointLsn: string;
  /** backup_label as pg_basebackup wrote it; a restore puts it back in the data directory. */
  backupLabel: string;
  /** By oid: what tablespace_map said, with the tablespace's name. */
  tablespaces: Record<string, { name: string; location: string }>;
  dataChecksums: boolean;
  walSegmentSize: number;
  /** The WAL from start to stop is in data/pg_wal: the backup is consistent without an archive. */
  walIncluded: boolean;
  startTime: string;
  stopTime: string;
}

/** WAL is neither archived nor included: the backup alone could not be restored. */
export class ArchivingNotConfiguredError extends ConfigError {
  constructor(
    readonly cluster: string,
    readonly archiveMode: string | null,
  ) {
    super(
      `${cluster} does not archive its WAL (archive_mode ${archiveMode ?? 'unknown'}${archiveMode === 'off' ? '' : ', no archive_command or archive_library'}): a physical backup without the WAL written during it cannot be restored`,
      {
        hint: 'Configure WAL archiving (archive_mode, archive_command), or include the WAL the backup needs in it.',
      },
    );
  }
}

/** A page whose checksum does not match: the cluster has damaged data. */
export class ChecksumFailureError extends SourceError {
  constructor(
    readonly cluster: string,
    /** The server's words (pg_basebackup), or the files and blocks strongbox found. */
    readonly found: string,
  ) {
    super(
      `the backup of ${cluster} found data pages whose checksums do not match; no snapshot was written:\n${found}`,
      {
        hint: 'The cluster has damaged pages: find them (pg_checksums, amcheck) and restore or repair them before backing up.',
      },
    );
  }
}

/**
 * How the cluster's files are read: `files` from the data directory, between pg_backup_start and
 * pg_backup_stop, on the database host; `pg_basebackup` over a replication connection, from
 * anywhere; `auto` the files when they can be read here, else pg_basebackup.
 */
export type PhysicalMethod = 'files' | 'pg_basebackup';

/** The files were asked for and cannot be read here. */
export class FilesUnreadableError extends ConfigError {
  constructor(
    readonly cluster: string,
    readonly reason: string,
  ) {
    super(`cannot read the data directory of ${cluster} here: ${reason}`, {
      hint: "Run the backup on the database host as the server's user, with a role that may run pg_backup_start, or back up through pg_basebackup.",
    });
  }
}

export interface PhysicalBackupOptions {
  connection: PostgresConnection;
  /** Directory of psql. */
  binDir: string;
  /** pg_basebackup of the server's major version, looked for when it is needed. */
  findPgBasebackup: () => Promise<{ program: string; major: number }>;
  server: ServerVersion;
  /** Include the WAL the backup needs (pg_basebackup --wal-method=fetch, or read from pg_wal). */
  includeWal?: boolean;
  /** By default `auto`. */
  method?: PhysicalMethod | 'auto';
}

/** The cluster's facts, and a refusal when WAL is neither archived nor to be included. */
export async function physicalSource(options: PhysicalBackupOptions): Promise<BackupSource> {
  const { connection } = options;
  const cluster = connection.display.replace(/\/[^/]*$/, '');
  const facts = parseClusterFacts(JSON.parse(await psql(connection, options.binDir, CLUSTER_FACTS)), cluster);
  if (!options.includeWal && !archives(facts))
    throw new ArchivingNotConfiguredError(cluster, facts.archiveMode);
  const asked = options.method ?? 'auto';
  let method: PhysicalMethod = 'pg_basebackup';
  if (asked !== 'pg_basebackup') {
    const reason = await whyFilesUnreadable(facts);
    if (reason === undefined) method = 'files';
    else if (asked === 'files') throw new FilesUnreadableError(cluster, reason);
  }
  // Looked for once; now when it will be used, so that a missing one fails before the repository opens.
  let found: ReturnType<PhysicalBackupOptions['findPgBasebackup']> | undefined;
  const findPgBasebackup = () => (found ??= options.findPgBasebackup());
  if (method === 'pg_basebackup') await findPgBasebackup();
  return {
    kind: PHYSICAL_KIND,
    name: cluster,
    run: (sink, parent) =>
      new PhysicalBackup({ ...options, findPgBasebackup }, cluster, facts, sink, parent).run(
        method,
        asked === 'auto',
      ),
  };
}

/** archive_mode on (or always) and something to archive with; unreadable settings are taken on trust. */
function archives(facts: ClusterFacts): boolean {
  if (facts.archiveMode === null) return true;
  if (facts.archiveMode === 'off') return false;
  if (facts.archiveCommand === null && facts.archiveLibrary === null) return true;
  return Boolean(facts.archiveCommand || facts.archiveLibrary);
}

/** Attempts when pg_basebackup opens an archive before its pipe is in place (basebackup-pipes.ts). */
const ATTEMPTS = 3;
/** backup_label, tablespace_map: a few hundred bytes; more is refused. */
const MAX_SMALL_FILE = 64 * 1024;
/** Of the manifest, only the WAL ranges at its end are read. */
const MANIFEST_TAIL = 64 * 1024;
/** Parent directory listings kept while the archive walks on. */
const PARENT_LISTINGS_KEPT = 64;

class PhysicalBackup {
  private readonly summary = { archives: 0, files: 0, dirs: 0, symlinks: 0, relationFiles: 0 };
  private size = 0;
  private backupLabel: string | undefined;
  private tablespaceMap: string | undefined;
  private manifestTail = '';
  private readonly roots = new Map<string, TreeNode>();
  /** tablespaces/<oid>, one per tablespace archive. */
  private tablespaceNodes: TreeNode[] = [];
  private readonly previous: ParentLookup | undefined;
  /** pg_basebackup's major version; 0 when the files were read directly. */
  private pgBasebackupMajor = 0;

  constructor(
    private readonly options: PhysicalBackupOptions,
    private readonly cluster: string,
    private readonly facts: ClusterFacts,
    private readonly sink: ContentSink,
    parent: ParentTrees | undefined,
  ) {
    this.previous = parent ? new ParentLookup(parent) : undefined;
  }

  async run(method: PhysicalMethod, fallBack: boolean): Promise<SourceResult> {
    const startTime = new Date().toISOString();
    let stopLsn: string | undefined;
    if (method === 'files') {
      stopLsn = await this.readFiles(!fallBack);
      // The data directory here turned out not to be the server's: pg_basebackup, as if asked.
      if (stopLsn === undefined) method = 'pg_basebackup';
    }
    if (method === 'pg_basebackup') {
      for (let attempt = 1; ; attempt++) {
        try {
          await this.runBasebackup();
          break;
        } catch (error) {
          if (!(error instanceof PipeRaceLostError) || attempt === ATTEMPTS || this.summary.archives > 0)
            throw error;
        }
      }
    }
    const stopTime = new Date().toISOString();
    const details = this.details(method, startTime, stopTime, stopLsn);
    if (this.tablespaceNodes.length > 0)
      this.roots.set(PHYSICAL_LAYOUT.tablespaces, {
        ...metadata(PHYSICAL_LAYOUT.tablespaces, 'dir', defaultEntry()),
        subtree: await this.sink.storeTree({ nodes: this.tablespaceNodes }),
      });
    const nodes = [...this.roots.values()];
    return {
      tree: await this.sink.storeTree({ nodes }),
      size: this.size,
      paths: nodes.map((node) => node.name),
      summary: { ...this.summary, bytes: this.size },
      details: details as unknown as Record<string, unknown>,
    };
  }

  /**
   * Reads the data directory and the tablespaces between pg_backup_start and pg_backup_stop, and
   * returns the stop LSN; undefined, having read nothing, when the directory here is not the
   * server's (`required`: refused instead).
   */
  private async readFiles(required: boolean): Promise<string | undefined> {
    const { connection, binDir } = this.options;
    const { facts, cluster } = this;
    const dataDirectory = facts.dataDirectory!;
    const session = await BackupSession.start(connection, binDir, cluster);
    try {
      if (!(await session.readsSameControlFile(dataDirectory))) {
        if (required)
          throw new FilesUnreadableError(
            cluster,
            `${dataDirectory} on this host is not the server's (its pg_control differs)`,
          );
        return undefined;
      }
      const failures: PageFailure[] = [];
      const common = {
        buffers: new ReadPieces(),
        ...(facts.dataChecksums ? { checksums: { startLsn: parseLsn(session.startLsn), failures } } : {}),
      };
      const versionDirectory = `PG_${Math.floor(facts.serverVersion / 10000)}_${facts.catalogVersion}`;
      for (const tablespace of facts.tablespaces) {
        const options = {
          ...common,
          root: tablespace.location,
          isRelation: isTablespaceRelation,
          onlyTop: versionDirectory,
        };
        await this.storeEntries(
          tablespace.oid,
          withFailures(readDirectory(options), failures, tablespace.location, cluster),
        );
      }
      const data: ReadDirectoryOptions = {
        ...common,
        root: dataDirectory,
        isRelation: isDataDirectoryRelation,
        dataDirectory: true,
      };
      const stopped: { stop?: BackupStop } = {};
      await this.storeEntries(undefined, this.dataEntries(session, data, failures, stopped));
      const stop = stopped.stop!;
      const mapped = parseTablespaceMap(stop.tablespaceMap, cluster);
      const read = new Set(facts.tablespaces.map((tablespace) => tablespace.oid));
      const created = [...mapped.keys()].filter((oid) => !read.has(oid));
      if (created.length > 0)
        throw new SourceError(
          `tablespace ${created.join(', ')} of ${cluster} was created during the backup; no snapshot was written`,
          { hint: 'Run the backup again.' },
        );
      // One dropped meanwhile is not in the backup's map: its files were read for nothing.
      this.tablespaceNodes = this.tablespaceNodes.filter((node) => mapped.has(node.name));
      return stop.stopLsn;
    } finally {
      await session.close();
    }
  }

  /**
   * The data directory's entries, then (the files all read) the backup stopped and what its stop
   * gives: backup_label, tablespace_map, and the WAL when it is included.
   */
  private async *dataEntries(
    session: BackupSession,
    data: ReadDirectoryOptions,
    failures: PageFailure[],
    stopped: { stop?: BackupStop },
  ): AsyncGenerator<DirectoryEntry> {
    yield* withFailures(readDirectory(data), failures, data.root, this.cluster);
    const stop = await session.stop(this.cluster);
    stopped.stop = stop;
    // As the server writes them in a backup it makes: the data directory's owner, mode 0600.
    const owner = await fs.stat(data.root);
    yield smallFileEntry('backup_label', stop.backupLabel, owner);
    if (stop.tablespaceMap) yield smallFileEntry('tablespace_map', stop.tablespaceMap, owner);
    if (this.options.includeWal) yield* this.includedWal(data, session.startLsn, stop);
  }

  /** The WAL from the backup's start to its stop, read from pg_wal, and every timeline's history. */
  private async *includedWal(
    data: ReadDirectoryOptions,
    startLsn: string,
    stop: BackupStop,
  ): AsyncGenerator<DirectoryEntry> {
    const { walSegmentSize } = this.facts;
    const timeline = Number(parseBackupLabel(stop.backupLabel).get('START TIMELINE'));
    const size = BigInt(walSegmentSize);
    const first = Number(parseLsn(startLsn) / size);
    // The stop LSN ends the last record: a segment boundary belongs to the segment before it.
    const last = Number((parseLsn(stop.stopLsn) - 1n) / size);
    const names = (await fs.readdir(path.join(data.root, 'pg_wal')))
      .filter((name) => parseWalFileName(name)?.kind === 'history')
      .sort();
    for (let number = first; number <= last; number++)
      names.push(segmentName(timeline, number, walSegmentSize));
    for (const name of names) {
      const entry = await fileAt(data, `pg_wal/${name}`);
      if (!entry || (!name.endsWith('.history') && entry.entry.size !== walSegmentSize))
        throw new SourceError(
          `WAL segment ${name}, which the backup of ${this.cluster} needs, is ${entry ? 'not whole' : 'no longer'} in pg_wal; no snapshot was written`,
          {
            hint: 'Keep more WAL on the server (wal_keep_size), or archive it and back up without including it.',
          },
        );
      yield entry;
    }
  }

  private async runBasebackup(): Promise<void> {
    const { connection, includeWal } = this.options;
    const pgBasebackup = await this.options.findPgBasebackup();
    this.pgBasebackupMajor = pgBasebackup.major;
    const tars = ['base.tar', ...this.facts.tablespaces.map((tablespace) => `${tablespace.oid}.tar`)];
    const running = await startBasebackup({
      program: pgBasebackup.program,
      args: [
        '--format=tar',
        `--wal-method=${includeWal ? 'fetch' : 'none'}`,
        '--checkpoint=fast',
        '--no-sync',
        '--no-password',
        '--label=strongbox',
      ],
      // Its own messages in English, to find the checksum failure among them.
      env: { ...toolEnvironment(connection.env), LC_MESSAGES: 'C', PGVERBOSITY: 'verbose' },
      tars,
      manifest: true,
      failure: (reason, stderr) => this.failure(reason, stderr),
    });
    try {
      for await (const archive of running.archives) {
        this.summary.archives++;
        await this.storeArchive(archive);
      }
      await running.finished;
    } catch (error) {
      // An archive that broke off most often means pg_basebackup failed: its own words are the
      // better message. (It is killed by SIGPIPE when strongbox stops reading for its own reason.)
      const failure = await running.finished.then(
        () => undefined,
        (reason: unknown) => reason,
      );
      if (failure && ((error instanceof MalformedArchiveError && error.truncated) || isStreamError(error)))
        throw failure;
      throw error;
    } finally {
      await running.stop();
    }
  }

  private failure(reason: string, stderr: string): SourceError {
    const lines = stderr
      .split('\n')
      .map((line) => line.trim())
      .filter(Boolean);
    // XX001 is data_corrupted: the server's verdict at the end of a backup with checksum failures.
    if (
      lines.some((line) =>
        /checksum (verification failed|verification failure|error occurred)|XX001/.test(line),
      )
    )
      return new ChecksumFailureError(
        this.cluster,
        lines
          .filter((line) => /checksum/i.test(line))
          .slice(-5)
          .join('\n'),
      );
    return new SourceError(
      `pg_basebackup of ${this.cluster} ${reason.replace(/^exited with status/, 'failed, exit')}; no snapshot was written${lines.length ? `:\n${lines.slice(-5).join('\n')}` : ''}`,
      { hint: 'Fix the cause and run the backup again.' },
    );
  }

  private async storeArchive(archive: Archive): Promise<void> {
    if (archive.name === PHYSICAL_LAYOUT.manifest) {
      const node = await this.storeFile(
        PHYSICAL_LAYOUT.manifest,
        [PHYSICAL_LAYOUT.manifest],
        this.keepTail(archive.content),
        {
          mode: 0o600,
          mtime: Math.floor(Date.now() / 1000),
          uid: process.getuid?.() ?? 0,
          gid: process.getgid?.() ?? 0,
        },
      );
      this.roots.set(node.name, node);
      return;
    }
    const oid = archive.name === 'base.tar' ? undefined : /^(\d+)\.tar$/.exec(archive.name)?.[1];
    await this.storeEntries(oid, readTar(archive.content, archive.name));
  }

  /** The data directory's entries (`oid` undefined) or a tablespace's, as its tree. */
  private async storeEntries(oid: string | undefined, entries: AsyncIterable<DirectoryEntry>): Promise<void> {
    const root = oid === undefined ? [PHYSICAL_LAYOUT.data] : [PHYSICAL_LAYOUT.tablespaces, oid];
    const tree = new ArchiveTree(root, oid === undefined ? isDataDirectoryRelation : isTablespaceRelation);
    for await (const { entry, content } of entries) {
      const parts = entry.path.split('/');
      tree.first ??= entry;
      if (
        oid === undefined &&
        parts.length === 1 &&
        (entry.path === 'backup_label' || entry.path === 'tablespace_map')
      ) {
        const text = await readSmall(content, entry.path);
        if (entry.path === 'backup_label') this.backupLabel = text;
        else {
          // Laid out as pg_tblspc symlinks instead: a restore that moves a tablespace re-points its link.
          this.tablespaceMap = text;
          continue;
        }
        await tree.add(parts, await this.smallFileNode(entry, text), this.sink);
        continue;
      }
      if (entry.type === 'dir') {
        await tree.addDirectory(parts, entry, this.sink);
        this.summary.dirs++;
      } else if (entry.type === 'symlink') {
        await tree.add(
          parts,
          { ...metadata(parts.at(-1)!, 'symlink', entry), linkTarget: entry.linkTarget! },
          this.sink,
        );
        this.summary.symlinks++;
      } else {
        const relation = tree.isRelation(entry.path);
        const node = await this.storeFile(parts.at(-1)!, [...root, ...parts], content, entry, relation);
        await tree.add(parts, node, this.sink);
        this.summary.files++;
        if (relation) this.summary.relationFiles++;
      }
    }
    if (oid === undefined) {
      for (const [linkOid, location] of parseTablespaceMap(this.tablespaceMap ?? '', this.cluster)) {
        await tree.add(
          ['pg_tblspc', linkOid],
          {
            ...metadata(linkOid, 'symlink', tree.first ?? defaultEntry()),
            mode: 0o777,
            linkTarget: location,
          },
          this.sink,
        );
        this.summary.symlinks++;
      }
    }
    const stored = await tree.finish(this.sink);
    if (oid === undefined) this.roots.set(PHYSICAL_LAYOUT.data, stored);
    else this.tablespaceNodes.push(stored);
  }

  private async storeFile(
    name: string,
    snapshotPath: string[],
    content: AsyncIterable<ContentPiece>,
    entry: Pick<TarEntry, 'mode' | 'mtime' | 'uid' | 'gid'>,
    relation = false,
  ): Promise<TreeNode> {
    const previous = await this.previous?.content(snapshotPath);
    const stored = await this.sink.storeContent(
      content,
      previous,
      relation ? { fixedChunkSize: CHUNK_PAGES_BYTES } : {},
    );
    this.size += stored.size;
    return { ...metadata(name, 'file', entry), size: stored.size, content: stored.blobs };
  }

  private smallFileNode(entry: TarEntry, text: string): Promise<TreeNode> {
    return this.storeFile(entry.path, [PHYSICAL_LAYOUT.data, entry.path], oneChunk(Buffer.from(text)), entry);
  }

  private async *keepTail(content: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const piece of content) {
      this.manifestTail = (this.manifestTail + Buffer.from(piece).toString('latin1')).slice(-MANIFEST_TAIL);
      yield piece;
    }
  }

  private details(
    method: PhysicalMethod,
    startTime: string,
    stopTime: string,
    stoppedAt: string | undefined,
  ): PhysicalSnapshotDetails {
    const source = method === 'files' ? 'pg_backup_stop' : 'pg_basebackup';
    if (this.backupLabel === undefined)
      throw new SourceError(`${source} of ${this.cluster} gave no backup_label; no snapshot was written`);
    const label = parseBackupLabel(this.backupLabel);
    const last = parseWalRanges(this.manifestTail).at(-1);
    const stopLsn = stoppedAt ?? last?.['End-LSN'];
    const startLsn = label.get('START WAL LOCATION')?.split(' ')[0];
    const checkpointLsn = label.get('CHECKPOINT LOCATION');
    const timeline = Number(label.get('START TIMELINE') ?? last?.Timeline);
    if (!startLsn || !checkpointLsn || !stopLsn || !Number.isInteger(timeline))
      throw new SourceError(
        `${source} of ${this.cluster} gave a backup_label${method === 'files' ? '' : ' or manifest'} without its WAL positions; no snapshot was written`,
      );
    const names = new Map(this.facts.tablespaces.map((tablespace) => [tablespace.oid, tablespace.name]));
    const tablespaces: PhysicalSnapshotDetails['tablespaces'] = Object.create(
      null,
    ) as PhysicalSnapshotDetails['tablespaces'];
    for (const [oid, location] of parseTablespaceMap(this.tablespaceMap ?? '', this.cluster))
      tablespaces[oid] = { name: names.get(oid) ?? '', location };
    const details: PhysicalSnapshotDetails = {
      cluster: this.cluster,
      systemIdentifier: this.facts.systemIdentifier,
      serverVersion: this.facts.serverVersion,
      pgBasebackupMajor: this.pgBasebackupMajor,
      method,
      timeline,
      startLsn,
      stopLsn,
      checkpointLsn,
      backupLabel: this.backupLabel,
      tablespaces,
      dataChecksums: this.facts.dataChecksums,
      walSegmentSize: this.facts.walSegmentSize,
      walIncluded: this.options.includeWal ?? false,
      startTime,
      stopTime,
    };
    requireReadablePhysicalDetails(details, this.cluster);
    return details;
  }
}

/** Checksum failures found while `entries` were read end the backup when the reading does. */
async function* withFailures(
  entries: AsyncIterable<DirectoryEntry>,
  failures: PageFailure[],
  root: string,
  cluster: string,
): AsyncGenerator<DirectoryEntry> {
  yield* entries;
  if (failures.length === 0) return;
  const lines = failures
    .slice(0, 5)
    .map((failure) => `${path.join(root, failure.file)}, block ${failure.block}`);
  if (failures.length > 5) lines.push(`and ${failures.length - 5} more pages`);
  throw new ChecksumFailureError(cluster, lines.join('\n'));
}

function smallFileEntry(name: string, text: string, owner: { uid: number; gid: number }): DirectoryEntry {
  const bytes = Buffer.from(text);
  return {
    entry: {
      path: name,
      type: 'file',
      mode: 0o600,
      uid: owner.uid,
      gid: owner.gid,
      mtime: Math.floor(Date.now() / 1000),
      size: bytes.length,
    },
    content: oneChunk(bytes),
  };
}

function isStreamError(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === 'ECONNRESET' || code === 'EPIPE' || code === 'ERR_STREAM_PREMATURE_CLOSE';
}

async function* oneChunk(bytes: Uint8Array): AsyncGenerator<Uint8Array> {
  yield bytes;
}

async function readSmall(content: AsyncIterable<Uint8Array>, name: string): Promise<string> {
  const pieces: Buffer[] = [];
  let length = 0;
  for await (const piece of content) {
    length += piece.length;
    if (length > MAX_SMALL_FILE)
      throw new SourceError(
        `${name} from pg_basebackup is over ${MAX_SMALL_FILE} bytes; no snapshot was written`,
      );
    pieces.push(Buffer.from(piece));
  }
  return Buffer.concat(pieces).toString('utf8');
}

function metadata(
  name: string,
  type: TreeNode['type'],
  entry: Pick<TarEntry, 'mode' | 'mtime' | 'uid' | 'gid'>,
): TreeNode {
  return {
    name,
    type,
    mode: entry.mode,
    mtimeNs: (BigInt(entry.mtime) * 1_000_000_000n).toString(),
    uid: entry.uid,
    gid: entry.gid,
  };
}

function defaultEntry(): Pick<TarEntry, 'mode' | 'mtime' | 'uid' | 'gid'> {
  return {
    mode: 0o700,
    mtime: Math.floor(Date.now() / 1000),
    uid: process.getuid?.() ?? 0,
    gid: process.getgid?.() ?? 0,
  };
}

/** backup_label's "KEY: value" lines. */
export function parseBackupLabel(text: string): Map<string, string> {
  const fields = new Map<string, string>();
  for (const line of text.split('\n')) {
    const colon = line.indexOf(': ');
    if (colon > 0) fields.set(line.slice(0, colon), line.slice(colon + 2));
  }
  return fields;
}

/** The manifest's WAL-Ranges, from its tail. */
function parseWalRanges(tail: string): { Timeline: number; 'Start-LSN': string; 'End-LSN': string }[] {
  const match = /"WAL-Ranges": *(\[[^\]]*\])/.exec(tail);
  if (!match) return [];
  try {
    return JSON.parse(match[1]!) as { Timeline: number; 'Start-LSN': string; 'End-LSN': string }[];
  } catch {
    return [];
  }
}

/**
 * tablespace_map's "oid location" lines; a backslash escapes the character after it, as the
 * server reads them (a location may hold a newline).
 */
export function parseTablespaceMap(text: string, cluster: string): Map<string, string> {
  const map = new Map<string, string>();
  let line = '';
  const lines: string[] = [];
  for (let i = 0; i < text.length; i++) {
    const ch = text[i]!;
    if (ch === '\\' && i + 1 < text.length) line += text[++i];
    else if (ch === '\n') {
      lines.push(line);
      line = '';
    } else line += ch;
  }
  if (line) lines.push(line);
  for (const entry of lines) {
    const match = /^(\d+) (.+)$/s.exec(entry);
    if (!match)
      throw new SourceError(
        `the tablespace_map of ${cluster} has a line strongbox does not understand; no snapshot was written`,
      );
    map.set(match[1]!, match[2]!);
  }
  return map;
}

/**
 * One archive's entries as a tree under `root`. Directories holding a database's relation files
 * are stored as soon as the archive moves past them, so memory holds one at a time; the others
 * (global/ gets pg_control last, pg_wal/ the fetched WAL) stay open to the archive's end.
 */
class ArchiveTree {
  first: TarEntry | undefined;
  private readonly top = new Directory();
  /** The open database directory, stored when an entry outside it comes. */
  private open: { path: string; parts: string[] } | undefined;

  constructor(
    private readonly root: string[],
    readonly isRelation: (path: string) => boolean,
  ) {}

  async addDirectory(parts: string[], entry: TarEntry, sink: ContentSink): Promise<void> {
    await this.closeOutside(parts, sink);
    const directory = this.directory(parts, true);
    directory.node = metadata(parts.at(-1)!, 'dir', entry);
    // base/<oid> and a tablespace's <version>/<oid>: the directories of relation files.
    if (parts.length === 2 && (parts[0] === 'base' || parts[0]!.startsWith('PG_')) && /^\d+$/.test(parts[1]!))
      this.open = { path: parts.join('/'), parts };
  }

  async add(parts: string[], node: TreeNode, sink: ContentSink): Promise<void> {
    await this.closeOutside(parts, sink);
    const parent = this.directory(parts.slice(0, -1), false);
    if (parent.children.has(node.name))
      throw new MalformedArchiveError(this.root.join('/'), `${parts.join('/')} twice`);
    parent.children.set(node.name, node);
  }

  async finish(sink: ContentSink): Promise<TreeNode> {
    await this.close(sink);
    const node = metadata(this.root.at(-1)!, 'dir', this.first ?? defaultEntry());
    // The data directory's own mode is not in the archive; PostgreSQL wants 0700 (or 0750).
    return { ...node, mode: 0o700, subtree: await storeDirectory(this.top, sink) };
  }

  private async closeOutside(parts: string[], sink: ContentSink): Promise<void> {
    if (!this.open) return;
    const inside =
      parts.length > this.open.parts.length && this.open.parts.every((part, i) => parts[i] === part);
    if (!inside) await this.close(sink);
  }

  private async close(sink: ContentSink): Promise<void> {
    if (!this.open) return;
    const { parts } = this.open;
    this.open = undefined;
    const parent = this.directory(parts.slice(0, -1), false);
    const directory = parent.children.get(parts.at(-1)!) as Directory;
    parent.children.set(parts.at(-1)!, {
      ...(directory.node ?? metadata(parts.at(-1)!, 'dir', this.first ?? defaultEntry())),
      subtree: await storeDirectory(directory, sink),
    });
  }

  /** The directory at `parts`, made when missing (its own header, if any, follows or came before). */
  private directory(parts: string[], create: boolean): Directory {
    let directory = this.top;
    for (const [i, part] of parts.entries()) {
      let child = directory.children.get(part);
      if (child === undefined) {
        child = new Directory();
        directory.children.set(part, child);
      } else if (!(child instanceof Directory)) {
        // A stored database directory, or a file: the archive came back to it.
        throw new MalformedArchiveError(
          this.root.join('/'),
          `${parts.slice(0, i + 1).join('/')} ${child.type === 'dir' ? 'again after other entries' : 'is not a directory'}`,
        );
      } else if (create && i === parts.length - 1 && child.node) {
        throw new MalformedArchiveError(this.root.join('/'), `${parts.join('/')} twice`);
      }
      directory = child;
    }
    return directory;
  }
}

class Directory {
  node: TreeNode | undefined;
  readonly children = new Map<string, TreeNode | Directory>();
}

async function storeDirectory(directory: Directory, sink: ContentSink): Promise<string> {
  const nodes: TreeNode[] = [];
  for (const [name, child] of directory.children) {
    if (child instanceof Directory) {
      const node = child.node ?? { ...metadata(name, 'dir', defaultEntry()) };
      nodes.push({ ...node, subtree: await storeDirectory(child, sink) });
    } else nodes.push(child);
  }
  const tree: Tree = { nodes };
  return sink.storeTree(tree);
}

/** The parent snapshot's content of a path, read one directory listing at a time. */
class ParentLookup {
  private readonly listings = new Map<string, Promise<Map<string, TreeNode>>>();

  constructor(private readonly parent: ParentTrees) {}

  async content(parts: string[]): Promise<PreviousContent | undefined> {
    const directory = await this.listing(parts.slice(0, -1));
    const node = directory?.get(parts.at(-1)!);
    return node?.type === 'file' ? node.content : undefined;
  }

  private async listing(parts: string[]): Promise<Map<string, TreeNode> | undefined> {
    let tree: string | undefined = this.parent.root;
    let listing: Map<string, TreeNode> | undefined;
    for (let i = 0; i <= parts.length; i++) {
      if (tree === undefined) return undefined;
      listing = await this.read(parts.slice(0, i).join('/'), tree);
      if (i === parts.length) break;
      const node = listing.get(parts[i]!);
      tree = node?.type === 'dir' ? node.subtree : undefined;
    }
    return listing;
  }

  private read(key: string, tree: string): Promise<Map<string, TreeNode>> {
    let listing = this.listings.get(key);
    if (!listing) {
      if (this.listings.size >= PARENT_LISTINGS_KEPT)
        this.listings.delete(this.listings.keys().next().value!);
      listing = this.parent
        .readTree(tree)
        .then(({ nodes }) => new Map(nodes.map((node) => [node.name, node])));
      this.listings.set(key, listing);
    }
    return listing;
  }
}
