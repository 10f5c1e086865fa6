import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ConfigError, VerificationError } from '../../errors.ts';
import { restoreFiles } from '../../ops/restore-files.ts';
import type { Repository, SnapshotFilter } from '../../repository/repository.ts';
import { PHYSICAL_LAYOUT } from '../physical/physical.ts';
import type { WalArchive } from '../wal/archiver.ts';
import { segmentNumber, segmentOfLsn } from '../wal/segments.ts';
import { walStatus } from '../wal/status.ts';
import { serverRunning } from './start-recovery.ts';
import { chooseBaseBackup, type ChosenBackup } from './choose-backup.ts';
import {
  confLiteral,
  describeTarget,
  recoveryConf,
  type RecoverySettings,
  type RecoveryTarget,
  type TargetAction,
} from './recovery-target.ts';

export interface PhysicalRestoreOptions {
  /** The data directory to lay out: absent or empty, unless `force`. */
  pgdata: string;
  target: RecoveryTarget;
  timeline?: RecoverySettings['timeline'];
  action?: TargetAction;
  /** The restore_command written for the server (wal fetch, reaching the repository). */
  restoreCommand: string;
  /** Empty a data directory that is not empty. */
  force?: boolean;
  /** Settings appended after the recovery's, which they override (a scratch cluster's port…). */
  settings?: Record<string, string>;
  /** Where each tablespace goes, by oid; else where it was. */
  tablespaces?: Record<string, string>;
  /** Every tablespace not in `tablespaces` goes into tablespace-<oid> under this directory (a scratch cluster's). */
  tablespaceRoot?: string;
  filter?: SnapshotFilter;
  onStep?: (message: string) => void;
  onProgress?: (bytes: number) => void;
}

export interface PhysicalRestoreLayout {
  backup: ChosenBackup;
  pgdata: string;
  tablespaces: { oid: string; name: string; location: string }[];
  bytes: number;
  files: number;
}

/** The target cannot be reached with what the archive holds: WAL the recovery needs is missing. */
export class WalMissingForRecoveryError extends VerificationError {
  constructor(
    readonly missing: { from: string; to: string },
    readonly why: string,
  ) {
    super(
      `the archive lacks WAL ${missing.from}${missing.to !== missing.from ? ` to ${missing.to}` : ''}, ${why}`,
      {
        hint: '`strongbox wal status` shows the gaps; a base backup taken after the gap restores past it.',
      },
    );
  }
}

/**
 * Lays out a data directory from a physical backup for a point-in-time recovery: the backup's
 * files, its tablespaces (where they were, or where asked), the recovery settings and
 * recovery.signal. The server is not started here (start-recovery.ts does). Before anything is
 * written, the archive is checked for the WAL the backup needs to be consistent, and, to replay to
 * the end, for a gap after it: recovery would stop there and open a database older than asked.
 */
export async function layOutPhysicalRestore(
  repository: Repository,
  reference: string | undefined,
  options: PhysicalRestoreOptions,
): Promise<PhysicalRestoreLayout> {
  const step = options.onStep ?? (() => undefined);
  return repository.withReadLock('restore', async () => {
    const backup = await chooseBaseBackup(repository, reference, options.target, options.filter);
    step(
      `base backup ${backup.id.slice(0, 8)} of ${backup.details.cluster} (${backup.details.stopTime}), recovering to ${describeTarget(options.target)}`,
    );
    if (!backup.details.walIncluded || options.target.kind === 'end')
      await requireArchivedWal(repository.wal, backup, options.target);

    const pgdata = path.resolve(options.pgdata);
    const locations = await tablespaceLocations(backup, options, pgdata);
    await prepareDataDirectory(pgdata, Boolean(options.force));
    await repository.loadIndex();
    const root = await repository.readTree(backup.tree);
    const subtree = (name: string) => {
      const node = root.nodes.find((candidate) => candidate.name === name);
      return node?.type === 'dir' ? node.subtree : undefined;
    };
    const dataTree = subtree(PHYSICAL_LAYOUT.data);
    if (!dataTree)
      throw new VerificationError(`base backup ${backup.id.slice(0, 8)} holds no data directory`);
    let bytes = 0;
    let files = 0;
    const progress = (written: number) => options.onProgress?.(bytes + written);
    step(`restore the data directory into ${pgdata}`);
    const data = await restoreFiles(repository, dataTree, pgdata, {
      overwrite: true,
      onProgress: progress,
      onWarning: (message) => repository.onWarning(message),
    });
    bytes += data.bytes;
    files += data.files;
    // A data directory this process made belongs to the server's user, who owns what it holds.
    if (process.getuid?.() === 0) {
      const server = await fs.stat(path.join(pgdata, 'PG_VERSION'));
      await fs.chown(pgdata, server.uid, server.gid);
    }

    const tablespaces: PhysicalRestoreLayout['tablespaces'] = [];
    const tablespacesTree = subtree(PHYSICAL_LAYOUT.tablespaces);
    const tablespaceNodes = tablespacesTree ? (await repository.readTree(tablespacesTree)).nodes : [];
    for (const [oid, recorded] of Object.entries(backup.details.tablespaces)) {
      const location = locations.get(oid)!;
      const node = tablespaceNodes.find((candidate) => candidate.name === oid);
      step(`restore tablespace ${recorded.name || oid} into ${location}`);
      await prepareDataDirectory(location, Boolean(options.force));
      if (node?.type === 'dir') {
        const restored = await restoreFiles(repository, node.subtree!, location, {
          overwrite: true,
          onProgress: progress,
          onWarning: (message) => repository.onWarning(message),
        });
        bytes += restored.bytes;
        files += restored.files;
      }
      await matchOwner(location, pgdata);
      // The backup holds pg_tblspc/<oid> as a link to where the tablespace was: to where it is now.
      const link = path.join(pgdata, 'pg_tblspc', oid);
      await fs.rm(link, { force: true });
      await fs.mkdir(path.dirname(link), { recursive: true });
      await fs.symlink(location, link);
      await matchOwner(link, pgdata);
      tablespaces.push({ oid, name: recorded.name, location });
    }
    await fs.appendFile(
      path.join(pgdata, 'postgresql.auto.conf'),
      recoveryConf({
        target: options.target,
        timeline: options.timeline ?? 'latest',
        action: options.action ?? 'promote',
        restoreCommand: options.restoreCommand,
      }) +
        Object.entries(options.settings ?? {})
          .map(([name, value]) => `${name} = ${confLiteral(value)}\n`)
          .join(''),
    );
    await fs.writeFile(path.join(pgdata, 'recovery.signal'), '');
    // pg_wal must exist even where the backup left it out; PostgreSQL refuses a data directory
    // anyone else may read.
    await fs.mkdir(path.join(pgdata, 'pg_wal', 'archive_status'), { recursive: true });
    await fs.chmod(pgdata, 0o700);
    for (const file of [
      'postgresql.auto.conf',
      'recovery.signal',
      'tablespace_map',
      'pg_wal',
      'pg_wal/archive_status',
    ])
      await matchOwner(path.join(pgdata, file), pgdata).catch(() => undefined);
    return { backup, pgdata, tablespaces, bytes, files };
  });
}

/**
 * Where each tablespace of the backup goes, checked before anything is written: a tablespace
 * left where it was must find that directory absent or empty, as one that holds files is most
 * likely the live cluster's own (refused even with `force`, which empties only what was named);
 * one moved elsewhere must find an empty directory unless `force`; none may be the data directory
 * or another's.
 */
async function tablespaceLocations(
  backup: ChosenBackup,
  options: PhysicalRestoreOptions,
  pgdata: string,
): Promise<Map<string, string>> {
  const recordedSpaces = backup.details.tablespaces;
  for (const oid of Object.keys(options.tablespaces ?? {}))
    if (!Object.hasOwn(recordedSpaces, oid))
      throw new ConfigError(`base backup ${backup.id.slice(0, 8)} has no tablespace ${oid}`, {
        hint: `Its tablespaces: ${Object.keys(recordedSpaces).join(', ') || 'none'}.`,
      });
  const locations = new Map<string, string>();
  for (const [oid, recorded] of Object.entries(recordedSpaces)) {
    const mapped = options.tablespaces && Object.hasOwn(options.tablespaces, oid);
    const moved = mapped || options.tablespaceRoot !== undefined;
    const location = path.resolve(
      mapped
        ? options.tablespaces![oid]!
        : options.tablespaceRoot !== undefined
          ? path.join(options.tablespaceRoot, `tablespace-${oid}`)
          : recorded.location,
    );
    const inside = (outer: string) => location === outer || location.startsWith(outer + path.sep);
    const clash = [...locations.entries()].find(
      ([, other]) => inside(other) || other.startsWith(location + path.sep),
    );
    if (inside(pgdata) || pgdata.startsWith(location + path.sep) || clash)
      throw new ConfigError(
        `tablespace ${recorded.name || oid} would be restored into ${location}, which overlaps ${clash ? `tablespace ${clash[0]}'s ${clash[1]}` : `the data directory ${pgdata}`}`,
        { hint: 'Give each tablespace a directory of its own, outside the data directory.' },
      );
    const entries = await fs.readdir(location).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT') return [];
      throw new ConfigError(`cannot use ${location}: ${error.message}`);
    });
    if (entries.length > 0 && !moved) throw new TablespaceInUseError(oid, recorded.name, location);
    if (entries.length > 0 && !options.force)
      throw new ConfigError(`${location}, where tablespace ${recorded.name || oid} would go, is not empty`, {
        hint: 'Restore it into an empty directory, or empty that one first (force).',
      });
    locations.set(oid, location);
  }
  return locations;
}

/**
 * A tablespace would be restored where it was, and that directory holds files: most likely the
 * live cluster's tablespace, which a restore must never write into or empty.
 */
export class TablespaceInUseError extends ConfigError {
  constructor(
    readonly oid: string,
    readonly tablespace: string,
    readonly location: string,
  ) {
    super(
      `tablespace ${tablespace || oid} (oid ${oid}) would be restored where it was, into ${location}, which is not empty: it may be the live cluster's`,
      { hint: 'Restore the tablespace into another, empty directory.' },
    );
  }
}

/** Refuses a data directory that is not empty, unless told to empty it. */
async function prepareDataDirectory(directory: string, force: boolean): Promise<void> {
  let entries: string[];
  try {
    entries = await fs.readdir(directory);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      await fs.mkdir(directory, { recursive: true, mode: 0o700 });
      return;
    }
    throw new ConfigError(`cannot use ${directory}: ${(error as Error).message}`);
  }
  if (entries.length === 0) return;
  if (!force)
    throw new ConfigError(`${directory} is not empty`, {
      hint: 'Restore into an empty directory, or empty it first (force).',
    });
  if (await serverRunning(directory))
    throw new ConfigError(`${directory} holds a running PostgreSQL server (postmaster.pid)`, {
      hint: 'Stop the server before restoring over its data directory.',
    });
  for (const entry of entries) await fs.rm(path.join(directory, entry), { recursive: true, force: true });
}

/** Gives `file` the owner of the data directory, as the server must own everything it reads. */
async function matchOwner(file: string, pgdata: string): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const owner = await fs.stat(pgdata);
  await fs.lchown(file, owner.uid, owner.gid);
}

/**
 * The WAL a recovery needs, checked in the archive before anything is written: every segment from
 * the backup's start to its end (without them it is not consistent), and, to replay to the end of
 * the archive, no gap after it on its timeline.
 */
async function requireArchivedWal(
  store: WalArchive & Parameters<typeof walStatus>[0],
  backup: ChosenBackup,
  target: RecoveryTarget,
): Promise<void> {
  const { details } = backup;
  const size = details.walSegmentSize;
  const first = segmentOfLsn(details.timeline, details.startLsn, size);
  const last = segmentOfLsn(details.timeline, details.stopLsn, size);
  const status = await walStatus(store);
  const timeline = status.timelines.find((entry) => entry.timeline === details.timeline);
  const holds = (name: string) =>
    timeline !== undefined &&
    timeline.first <= name &&
    name <= timeline.last &&
    !timeline.gaps.some((gap) => gap.from <= name && name <= gap.to);
  if (!details.walIncluded) {
    for (const name of [first, last])
      if (!holds(name))
        throw new WalMissingForRecoveryError(
          { from: first, to: last },
          `which base backup ${backup.id.slice(0, 8)} needs to be consistent`,
        );
    const gap = timeline!.gaps.find((entry) => entry.to >= first && entry.from <= last);
    if (gap)
      throw new WalMissingForRecoveryError(
        gap,
        `which base backup ${backup.id.slice(0, 8)} needs to be consistent`,
      );
  }
  if (target.kind === 'end' && timeline) {
    const gap = timeline.gaps.find((entry) => segmentNumber(entry.to, size) >= segmentNumber(first, size));
    if (gap)
      throw new WalMissingForRecoveryError(
        gap,
        'and replay to the end of the archive would stop there: give a target before it, or restore from a base backup taken after it',
      );
  }
}
