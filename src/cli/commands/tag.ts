import type { Command } from 'commander';
import { tagSnapshot } from '../../ops/tag.ts';
import { ConfigError } from '../../errors.ts';
import { globalOptions, outputFor, withRepository } from '../context.ts';

const collect = (value: string, previous: string[]) => [...previous, ...value.split(',').filter(Boolean)];

export function registerTag(program: Command): void {
  program
    .command('tag')
    .description('add or remove tags of a snapshot (full keys; `keep` pins it against forget)')
    .argument('<snapshot>', 'a snapshot id or unique prefix, or latest')
    .option('--add <tag>', 'add this tag (repeatable, or comma-separated)', collect, [])
    .option('--remove <tag>', 'remove this tag (repeatable, or comma-separated)', collect, [])
    .action(async (reference: string, options: { add: string[]; remove: string[] }, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      if (options.add.length + options.remove.length === 0)
        throw new ConfigError('nothing to change', { hint: 'Give --add <tag> or --remove <tag>.' });
      const result = await withRepository(global, (repository) =>
        tagSnapshot(repository, reference, { add: options.add, remove: options.remove }),
      );
      if (global.json) output.data(result);
      else if (!result.changed) output.info(`snapshot ${result.snapshot.slice(0, 8)} already has these tags`);
      else
        output.info(
          `snapshot ${result.previous.slice(0, 8)} is now ${result.snapshot.slice(0, 8)}, tagged ${result.tags.join(',') || '(none)'}`,
        );
    });
}
