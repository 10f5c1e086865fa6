import { readMark, SCRATCH_PREFIX } from './restore-names.ts';
import type { DatabaseFound, RestoreTarget } from './target.ts';

/**
 * A database a restore left behind on a server. A restore killed at any moment leaves at most
 * these: the target itself is always whole under its name (the swap is one transaction).
 */
export interface RestoreLeftover {
  database: string;
  /**
   * scratch: loaded by a restore that never swapped it in; replaced: swapped out by a restore
   * with --drop-old that died before dropping it; closed: a database that accepts no connections
   * (an older strongbox closed databases while swapping them), reported, never changed.
   */
  kind: 'scratch' | 'replaced' | 'closed';
  /** The database it was restored for, when recorded. */
  target?: string;
  /** Its size, when this user may connect to it. */
  bytes?: number;
  /** A running restore holds it: not a leftover yet, left alone. */
  running: boolean;
}

/** What restores left on the server `target` reaches, and which of those are still running. */
export async function findRestoreLeftovers(target: RestoreTarget): Promise<RestoreLeftover[]> {
  return (await target.leftovers()).flatMap(describe);
}

function describe(found: DatabaseFound): RestoreLeftover[] {
  const mark = readMark(found.comment);
  const kind =
    mark?.kind ??
    (found.database.startsWith(SCRATCH_PREFIX) ? 'scratch' : found.allowsConnections ? undefined : 'closed');
  if (!kind) return [];
  return [
    {
      database: found.database,
      kind,
      ...(mark ? { target: mark.target } : {}),
      ...(found.bytes === null ? {} : { bytes: Number(found.bytes) }),
      running: found.held,
    },
  ];
}

/** Whether `leftover` is one strongbox removes: its own databases that no running restore holds. */
export function removable(leftover: RestoreLeftover): boolean {
  return leftover.kind !== 'closed' && !leftover.running;
}

/**
 * Drops the removable leftovers, ending sessions still connected to them (the remains of the
 * restore that died, such as a pg_restore still exiting). Returns the ones dropped.
 */
export async function removeRestoreLeftovers(
  target: RestoreTarget,
  leftovers: readonly RestoreLeftover[],
): Promise<RestoreLeftover[]> {
  const removed: RestoreLeftover[] = [];
  for (const leftover of leftovers.filter(removable)) {
    await target.drop(leftover.database, true);
    removed.push(leftover);
  }
  return removed;
}
