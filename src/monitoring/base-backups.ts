import { physicalBaseBackups } from '../postgres/physical/base-backup-reader.ts';
import type { BaseBackupStart } from '../postgres/wal/status.ts';
import type { Repository } from '../repository/repository.ts';
import type { SnapshotInfo } from '../repository/snapshot.ts';

/** The kind of the physical snapshots of a PostgreSQL cluster: the base backups WAL replays onto. */
export const PHYSICAL_SNAPSHOT_KIND = 'postgres-physical';

/**
 * Reads where the base backups of one kind of snapshot begin: the timeline and segment of their
 * start LSN, and when they ended. Only the engine that writes them knows where its record keeps
 * that, so each such engine supplies one.
 */
export interface BaseBackupReader {
  kind: string;
  /** undefined for a snapshot that cannot begin a recovery window (its record lacks the start). */
  start(repository: Repository, snapshot: SnapshotInfo): Promise<BaseBackupStart | undefined>;
}

/**
 * Where `strongbox metrics`, `health` and `wal status` read base backups, one line per kind, so
 * that none of them changes when one is added. Without a reader, no window is known.
 */
export const BASE_BACKUP_READERS: readonly BaseBackupReader[] = [physicalBaseBackups];

/**
 * The base backups the repository holds, as walStatus's `baseBackups` takes them: none when no
 * snapshot of a kind a reader knows exists.
 */
export async function readBaseBackups(
  repository: Repository,
  readers: readonly BaseBackupReader[] = BASE_BACKUP_READERS,
): Promise<BaseBackupStart[]> {
  const found: BaseBackupStart[] = [];
  for (const reader of readers) {
    const { snapshots } = await repository.scanSnapshots({ kind: reader.kind });
    for (const snapshot of snapshots) {
      const start = await reader.start(repository, snapshot);
      if (start) found.push(start);
    }
  }
  return found;
}
