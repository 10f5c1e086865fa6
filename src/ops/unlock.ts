import { listLocks } from '../repository/locks.ts';
import type { Repository } from '../repository/repository.ts';

/** Removes stale locks (or, with `all`, every lock); returns how many were removed. */
export async function unlock(repository: Repository, options: { all?: boolean } = {}): Promise<number> {
  let removed = 0;
  for (const lock of await listLocks(repository.backend, repository.metadataKey)) {
    if (options.all || lock.stale) {
      await repository.backend.delete(lock.name);
      removed++;
    }
  }
  return removed;
}
