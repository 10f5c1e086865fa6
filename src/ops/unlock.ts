import { listLocks } from '../repository/locks.ts';
import type { Repository } from '../repository/repository.ts';

/** A writer holds no upload open longer than this, so older incomplete ones are abandoned. */
const ABANDONED_UPLOAD_AGE_MS = 24 * 60 * 60 * 1000;

export interface UnlockResult {
  /** Locks removed. */
  locks: number;
  /** Temporary objects and incomplete multipart uploads of crashed writers removed. */
  incompleteUploads: number;
}

/**
 * Removes stale locks (or, with `all`, every lock), then what crashed writers left half-uploaded:
 * everything when no lock is left (no writer can be running), otherwise only uploads a day old.
 */
export async function unlock(repository: Repository, options: { all?: boolean } = {}): Promise<UnlockResult> {
  let locks = 0;
  let remaining = 0;
  for (const lock of await listLocks(repository.backend, repository.metadataKey)) {
    if (options.all || lock.stale) {
      await repository.backend.delete(lock.name);
      locks++;
    } else {
      remaining++;
    }
  }
  const startedBefore = remaining === 0 ? new Date() : new Date(Date.now() - ABANDONED_UPLOAD_AGE_MS);
  const incompleteUploads = await repository.backend.removeIncompleteUploads(startedBefore);
  return { locks, incompleteUploads };
}
