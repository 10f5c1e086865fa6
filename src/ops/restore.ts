import { SnapshotKindError } from '../errors.ts';
import type { Repository, SnapshotFilter } from '../repository/repository.ts';
import { CLUSTER_KIND } from '../sources/postgres/cluster.ts';
import { restoreFiles } from './restore-files.ts';

export interface RestoreFilesOptions {
  include?: string[];
  overwrite?: boolean;
  filter?: SnapshotFilter;
  onProgress?: (bytes: number) => void;
}

/** Snapshots that hold a database's archive: restored into a database, not as files. */
const DATABASE_KINDS = new Set(['postgres', CLUSTER_KIND]);

/** Restores the files of a snapshot (`latest`, an id or an id prefix) under `target`. */
export async function restoreSnapshotFiles(
  repository: Repository,
  reference: string,
  target: string,
  options: RestoreFilesOptions = {},
) {
  return repository.withReadLock('restore', async () => {
    const { id, header } = await repository.findSnapshot(reference, options.filter);
    if (DATABASE_KINDS.has(header.kind)) throw new SnapshotKindError(id, header.kind, header.name, 'files');
    const { body } = await repository.loadSnapshot(id);
    await repository.loadIndex();
    const stats = await restoreFiles(repository, body.tree, target, {
      ...(options.include ? { include: options.include } : {}),
      ...(options.overwrite ? { overwrite: true } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      onWarning: (message) => repository.onWarning(message),
    });
    return { snapshot: id, ...stats };
  });
}
