import { BASE_BACKUP_READERS, type BaseBackupReader } from '../monitoring/base-backups.ts';
import { splitNeededWal } from '../postgres/wal/retention.ts';
import type { Repository } from '../repository/repository.ts';
import type { WalListing } from '../repository/wal-store.ts';
import { durationBefore, formatRetentionDuration, type RetentionDuration } from '../retention/policy.ts';

/** A base backup of the repository, whatever engine wrote it, with where its WAL begins when known. */
export interface BaseBackup {
  id: string;
  /** When it ended (the record's), or the snapshot's time when the start is unknown. */
  time: string;
  startSegment?: string;
}

export interface WalFiles {
  count: number;
  bytes: number;
  first?: string;
  last?: string;
}

export interface WalExpiry {
  expired: WalFiles;
  kept: WalFiles;
  /** The kept base backup the WAL kept begins with. */
  from?: { snapshot: string; startSegment: string };
  /** Why nothing was expired, when nothing could be. */
  note?: string;
  /** The names expired (or, in a dry run, that would be). */
  names: string[];
}

/** Every base backup the repository holds, of every kind a reader knows (all groups, no filter). */
export async function listBaseBackups(
  repository: Repository,
  readers: readonly BaseBackupReader[] = BASE_BACKUP_READERS,
): Promise<BaseBackup[]> {
  const found: BaseBackup[] = [];
  for (const reader of readers) {
    const { snapshots } = await repository.scanSnapshots({ kind: reader.kind });
    for (const snapshot of snapshots) {
      // A record that does not parse is a backup whose WAL needs are unknown, not a reason to fail.
      const start = await reader.start(repository, snapshot).catch(() => undefined);
      found.push(
        start
          ? { id: snapshot.id, time: start.time, startSegment: start.startSegment }
          : { id: snapshot.id, time: snapshot.header.time },
      );
    }
  }
  return found;
}

/**
 * `--keep-wal-within D`: the newest base backup that ended at or before now − D, so that every
 * moment of the last D can still be recovered to; undefined when none ended that early.
 */
export function walWindowBackup(
  backups: readonly BaseBackup[],
  within: RetentionDuration,
  now: Date,
  timeZone?: string,
): { backup: BaseBackup; reason: string } | undefined {
  const cutoff = durationBefore(now, within, timeZone).getTime();
  const backup = backups
    .filter((candidate) => candidate.startSegment && new Date(candidate.time).getTime() <= cutoff)
    .sort((a, b) => b.time.localeCompare(a.time) || a.id.localeCompare(b.id))[0];
  return backup && { backup, reason: `wal within ${formatRetentionDuration(within)}` };
}

/**
 * The WAL no kept base backup can replay: none when no base backup is kept (WAL may be waiting for
 * a backup still to come), when a kept one's start is unknown, or when damaged snapshot files
 * might be base backups.
 */
export async function planWalExpiry(
  repository: Repository,
  listing: readonly WalListing[],
  backups: readonly BaseBackup[],
  removed: ReadonlySet<string>,
): Promise<WalExpiry> {
  if (listing.length === 0) return { expired: summary([]), kept: summary([]), names: [] };
  const kept = backups.filter((backup) => !removed.has(backup.id));
  const { damaged } = await repository.scanSnapshots();
  const note =
    kept.length === 0
      ? 'no physical backup is kept: no WAL is expired'
      : kept.some((backup) => !backup.startSegment)
        ? `the WAL a kept physical backup needs is unknown (${kept.find((backup) => !backup.startSegment)!.id.slice(0, 8)}): no WAL is expired`
        : damaged.some((snapshot) => !removed.has(snapshot.id))
          ? 'damaged snapshot files may be physical backups: no WAL is expired'
          : undefined;
  if (note !== undefined)
    return { expired: summary([]), kept: summary(listing), names: [], ...(note ? { note } : {}) };
  const oldest = kept.reduce((a, b) => (b.startSegment! < a.startSegment! ? b : a));
  const { needed, expired } = splitNeededWal(listing, [oldest.startSegment!]);
  return {
    expired: summary(expired),
    kept: summary(needed),
    from: { snapshot: oldest.id, startSegment: oldest.startSegment! },
    names: expired.map((file) => file.name),
  };
}

function summary(files: readonly WalListing[]): WalFiles {
  return {
    count: files.length,
    bytes: files.reduce((sum, file) => sum + file.size, 0),
    ...(files.length > 0 ? { first: files[0]!.name, last: files.at(-1)!.name } : {}),
  };
}
