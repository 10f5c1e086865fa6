import { SnapshotKindError } from '../errors.ts';
import type { Repository, SnapshotFilter } from '../repository/repository.ts';
import { restoreFiles } from './restore-files.ts';

export interface RestoreFilesOptions {
  include?: string[];
  overwrite?: boolean;
  filter?: SnapshotFilter;
  onProgress?: (bytes: number) => void;
}

/** Restores the files of a snapshot (`latest`, an id or an id prefix) under `target`. */
export async function restoreSnapshotFiles(
  repository: Repository,
  reference: string,
  target: string,
  options: RestoreFilesOptions = {},
) {
  return repository.withReadLock('restore', async () => {
    const { id, header } = await repository.findSnapshot(reference, options.filter);
    const { body } = await repository.loadSnapshot(id);
    // A snapshot whose engine recorded its source (a database's archive) is restored by that
    // engine, into a database, not as files.
    if (body.source !== undefined) throw new SnapshotKindError(id, header.kind, header.name, 'files');
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
