import type { Repository } from '../repository/repository.ts';
import type { ObjectLockedError } from '../storage/backend.ts';
import type { SnapshotFilter } from '../repository/snapshot-store.ts';
import {
  applyPolicy,
  DEFAULT_GROUP_BY,
  groupSnapshots,
  isEmptyPolicy,
  type GroupKey,
  type RetentionDuration,
  type RetentionPolicy,
} from '../retention/policy.ts';
import { ConfigError } from '../errors.ts';
import type { BaseBackupReader } from '../monitoring/base-backups.ts';
import { listBaseBackups, planWalExpiry, walWindowBackup, type WalExpiry } from './wal-expiry.ts';

/**
 * `forget`: removes snapshots, those a retention policy does not keep or those named, and expires
 * the WAL no kept physical backup can replay (ops/wal-expiry.ts). Removal is
 * `Repository.removeSnapshots` (full keys only): one signed removal record naming both, then the
 * snapshot files and the WAL objects. The data the snapshots alone used stays until `prune`.
 */
export type ForgetOptions = (
  | {
      policy: RetentionPolicy;
      /** Header fields that make a group; the policy applies to each group apart. */
      groupBy?: readonly GroupKey[];
      /** IANA zone of the policy's calendar; UTC when absent. */
      timeZone?: string;
      filter?: SnapshotFilter;
      /** Also keep the newest physical backup that ended at least this long ago, and its WAL. */
      keepWalWithin?: RetentionDuration;
    }
  | { ids: readonly string[] }
) & { dryRun?: boolean; now?: Date; baseBackupReaders?: readonly BaseBackupReader[] };

export interface ForgetSnapshot {
  id: string;
  time: string;
  /** Why it is kept ("daily", "within 30d", "tag keep"…); empty for one removed. */
  reasons: string[];
}

export interface ForgetGroup {
  key: Record<string, string | string[]>;
  keep: ForgetSnapshot[];
  remove: ForgetSnapshot[];
}

export interface ForgetResult {
  dryRun: boolean;
  groups: ForgetGroup[];
  /** Ids removed (or, in a dry run, that would be). */
  removed: string[];
  /** Snapshot files and WAL objects the storage keeps locked for now: deleted by a later prune. */
  locked: { object: string; retainUntil?: string }[];
  /** The WAL expired (or, in a dry run, that would be) and kept. */
  wal: Omit<WalExpiry, 'names'>;
}

export async function forget(repository: Repository, options: ForgetOptions): Promise<ForgetResult> {
  repository.requireReader('forget snapshots');
  if ('policy' in options && isEmptyPolicy(options.policy))
    throw new ConfigError('the retention policy keeps nothing: refusing to remove every snapshot', {
      hint: 'Give at least one --keep-* option, or a --policy.',
    });
  return repository.withLock('forget', { exclusive: false }, async () => {
    const now = options.now ?? new Date();
    const groups =
      'ids' in options ? await named(repository, options.ids) : await byPolicy(repository, options, now);
    const keepWalWithin = 'policy' in options ? options.keepWalWithin : undefined;
    const walFiles = await repository.wal.list();
    // Reading every physical backup's record is only worth it when there is WAL to judge.
    const backups =
      walFiles.length > 0 || keepWalWithin
        ? await listBaseBackups(repository, options.baseBackupReaders)
        : [];
    if ('policy' in options && options.keepWalWithin) {
      const window = walWindowBackup(backups, options.keepWalWithin, now, options.timeZone);
      if (window) keepForWal(groups, window.backup.id, window.reason);
    }
    const removed = groups.flatMap((group) => group.remove.map((snapshot) => snapshot.id));
    const { names, ...wal } = await planWalExpiry(repository, walFiles, backups, new Set(removed));
    const locked = options.dryRun ? [] : await repository.removeSnapshots(removed, 'forget', names);
    return {
      dryRun: Boolean(options.dryRun),
      groups,
      removed,
      locked: locked.map((error: ObjectLockedError) => ({
        object: error.objectName,
        ...(error.retainUntil ? { retainUntil: error.retainUntil.toISOString() } : {}),
      })),
      wal,
    };
  });
}

/** Moves a snapshot the policy would remove to the kept ones of its group, saying why. */
function keepForWal(groups: ForgetGroup[], id: string, reason: string): void {
  for (const group of groups) {
    const index = group.remove.findIndex((snapshot) => snapshot.id === id);
    if (index < 0) continue;
    const [snapshot] = group.remove.splice(index, 1);
    group.keep.push({ ...snapshot!, reasons: [reason] });
    group.keep.sort((a, b) => b.time.localeCompare(a.time));
  }
}

async function byPolicy(
  repository: Repository,
  options: Extract<ForgetOptions, { policy: RetentionPolicy }>,
  now: Date,
): Promise<ForgetGroup[]> {
  const { snapshots } = await repository.scanSnapshots(options.filter ?? {});
  const entries = snapshots.map((snapshot) => ({
    id: snapshot.id,
    time: new Date(snapshot.header.time),
    tags: snapshot.header.tags,
    host: snapshot.header.host,
    kind: snapshot.header.kind,
    name: snapshot.header.name,
  }));
  return groupSnapshots(entries, options.groupBy ?? DEFAULT_GROUP_BY).map(({ key, snapshots: members }) => {
    const decisions = applyPolicy(members, options.policy, {
      now,
      ...(options.timeZone ? { timeZone: options.timeZone } : {}),
    });
    const describe = (decision: (typeof decisions)[number]): ForgetSnapshot => ({
      id: decision.snapshot.id,
      time: decision.snapshot.time.toISOString(),
      reasons: decision.reasons,
    });
    return {
      key,
      keep: decisions.filter((decision) => decision.keep).map(describe),
      remove: decisions.filter((decision) => !decision.keep).map(describe),
    };
  });
}

/**
 * Snapshots named by id or unique prefix: trusted ones, and also damaged or untrusted files
 * (which prune otherwise refuses to work around), but only by their whole id.
 */
async function named(repository: Repository, references: readonly string[]): Promise<ForgetGroup[]> {
  const { damaged } = await repository.scanSnapshots();
  const remove: ForgetSnapshot[] = [];
  for (const reference of references) {
    const bad = damaged.find((snapshot) => snapshot.id === reference.toLowerCase());
    if (bad) {
      remove.push({ id: bad.id, time: bad.header?.time ?? '', reasons: [] });
      continue;
    }
    const found = await repository.findSnapshot(reference);
    remove.push({ id: found.id, time: found.header.time, reasons: [] });
  }
  const unique = [...new Map(remove.map((snapshot) => [snapshot.id, snapshot])).values()];
  return [{ key: {}, keep: [], remove: unique }];
}
