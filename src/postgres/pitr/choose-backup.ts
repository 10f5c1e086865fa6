import { ConfigError, VerificationError } from '../../errors.ts';
import type { Repository, SnapshotFilter } from '../../repository/repository.ts';
import { PHYSICAL_KIND, type PhysicalSnapshotDetails } from '../physical/physical.ts';
import { parsePhysicalSource } from '../record-schema.ts';
import { parseLsn } from '../wal/segments.ts';
import { describeTarget, type RecoveryTarget } from './recovery-target.ts';

export interface ChosenBackup {
  id: string;
  time: string;
  tree: string;
  details: PhysicalSnapshotDetails;
}

/** A recovery target no base backup can reach: before the end of every one, or of the one named. */
export class TargetBeforeBackupError extends VerificationError {
  constructor(
    readonly target: string,
    readonly snapshot: string | undefined,
    readonly backupEnd: string | undefined,
  ) {
    super(
      snapshot
        ? `${target} is before the end of base backup ${snapshot.slice(0, 8)} (${backupEnd}): recovery cannot stop there`
        : `${target} is before the end of every base backup: recovery cannot stop there`,
      { hint: 'Choose a later target, or an older base backup.' },
    );
  }
}

/**
 * The base backup a recovery starts from: the one named, else, of the physical snapshots the
 * filter admits, the newest that ends before the target (a time or an LSN; for a transaction id or a
 * restore point, whose position is unknown until replay, and for the end of the archive, the newest).
 */
export async function chooseBaseBackup(
  repository: Repository,
  reference: string | undefined,
  target: RecoveryTarget,
  filter: SnapshotFilter = {},
): Promise<ChosenBackup> {
  const load = async (id: string): Promise<ChosenBackup> => {
    const { header, body } = await repository.loadSnapshot(id);
    if (header.kind !== PHYSICAL_KIND)
      throw new ConfigError(
        `snapshot ${id.slice(0, 8)} is a ${header.kind} snapshot, not a physical backup`,
        {
          hint: 'A point-in-time restore starts from a physical backup (backup postgres --physical).',
        },
      );
    return { id, time: header.time, tree: body.tree, details: parsePhysicalSource(body.source, id) };
  };
  if (reference && reference !== 'latest') {
    const chosen = await load(
      (await repository.findSnapshot(reference, { ...filter, kind: PHYSICAL_KIND })).id,
    );
    if (!endsBefore(chosen.details, target))
      throw new TargetBeforeBackupError(describeTarget(target), chosen.id, chosen.details.stopTime);
    return chosen;
  }
  const { snapshots } = await repository.scanSnapshots({ ...filter, kind: PHYSICAL_KIND });
  if (snapshots.length === 0)
    throw new ConfigError('the repository holds no physical backup', {
      hint: 'Take one with `strongbox backup postgres --physical`.',
    });
  const newestFirst = [...snapshots].sort((a, b) => Date.parse(b.header.time) - Date.parse(a.header.time));
  for (const snapshot of newestFirst) {
    const candidate = await load(snapshot.id);
    if (endsBefore(candidate.details, target)) return candidate;
  }
  throw new TargetBeforeBackupError(describeTarget(target), undefined, undefined);
}

function endsBefore(details: PhysicalSnapshotDetails, target: RecoveryTarget): boolean {
  if (target.kind === 'time') return Date.parse(details.stopTime) <= target.time.getTime();
  if (target.kind === 'lsn') return parseLsn(details.stopLsn) <= parseLsn(target.lsn);
  return true;
}
