import type { Command } from 'commander';
import { unlock } from '../../ops/unlock.ts';
import { globalOptions, outputFor, withRepository } from '../context.ts';
import { count } from '../../util/plural.ts';

export function registerUnlock(program: Command): void {
  program
    .command('unlock')
    .description(
      'remove stale locks (of dead processes on this host, or not refreshed for 30 minutes) and abandoned uploads',
    )
    .option('--remove-all', 'remove every lock, including live ones')
    .action(async (options: { removeAll?: boolean }, command: Command) => {
      const global = globalOptions(command);
      const removed = await withRepository(global, (repository) =>
        unlock(repository, { all: Boolean(options.removeAll) }),
      );
      const output = outputFor(global);
      if (global.json) output.data({ removed: removed.locks, incompleteUploads: removed.incompleteUploads });
      else {
        output.info(`removed ${count(removed.locks, 'lock')}`);
        if (removed.incompleteUploads > 0) {
          output.info(
            `removed ${count(removed.incompleteUploads, 'incomplete upload')} of interrupted writers`,
          );
        }
      }
    });
}
