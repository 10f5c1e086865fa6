import type { Command } from 'commander';
import { restoreSnapshotFiles } from '../../ops/restore.ts';
import { globalOptions, outputFor, withRepository } from '../context.ts';
import { formatBytes } from '../output.ts';
import { filterOptions, snapshotFilter, type FilterOptions } from './filters.ts';

const collect = (value: string, previous: string[]) => [...previous, value];

export function registerRestore(program: Command): void {
  const group = program.command('restore').description('restore a snapshot');
  filterOptions(group.command('files'))
    .description('restore files and directories under a target directory')
    .argument('<snapshot>', 'snapshot id, id prefix, or latest')
    .requiredOption('--target <dir>', 'directory to restore into (must be empty unless --overwrite)')
    .option('--include <glob>', 'restore only matching paths (repeatable)', collect, [])
    .option('--overwrite', 'replace existing files in the target')
    .action(
      async (
        reference: string,
        options: FilterOptions & { target: string; include: string[]; overwrite?: boolean },
        command: Command,
      ) => {
        const global = globalOptions(command);
        const output = outputFor(global);
        const result = await withRepository(global, (repository) =>
          restoreSnapshotFiles(repository, reference, options.target, {
            filter: snapshotFilter(options),
            ...(options.include.length ? { include: options.include } : {}),
            ...(options.overwrite ? { overwrite: true } : {}),
            onProgress: (bytes) => output.progress(`restore: ${formatBytes(bytes)} written`),
          }),
        );
        output.clearProgress();
        if (global.json) output.data(result);
        else
          output.info(
            `restored snapshot ${result.snapshot.slice(0, 8)} to ${options.target}: ${result.files} files, ${result.dirs} directories, ${result.symlinks} symlinks, ${formatBytes(result.bytes)}`,
          );
      },
    );
}
