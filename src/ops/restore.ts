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
  const lock = await repository.lock(false, 'restore');
  try {
    const { id } = await repository.findSnapshot(reference, options.filter);
    const { body } = await repository.loadSnapshot(id);
    await repository.loadIndex();
    const stats = await restoreFiles(repository, body.tree, target, {
      ...(options.include ? { include: options.include } : {}),
      ...(options.overwrite ? { overwrite: true } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      onWarning: (message) => repository.onWarning(message),
    });
    return { snapshot: id, ...stats };
  } finally {
    await lock.release();
  }
}
