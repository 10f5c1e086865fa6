import type { Command } from 'commander';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { catFile } from '../../ops/read-content.ts';
import { globalOptions, withRepository } from '../context.ts';

export function registerCat(program: Command): void {
  program
    .command('cat')
    .description('write the raw content of a file in a snapshot to standard output')
    .argument('<snapshot>', 'snapshot id, id prefix, or latest')
    .argument('[path]', 'the file (absolute, as backed up); optional when the snapshot holds one file')
    .action(async (reference: string, path: string | undefined, _options: unknown, command: Command) => {
      await withRepository(globalOptions(command), async (repository) => {
        const { id } = await repository.findSnapshot(reference);
        await pipeline(Readable.from(catFile(repository, id, path)), process.stdout);
      });
    });
}
