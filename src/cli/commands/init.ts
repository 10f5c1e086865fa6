import type { Command } from 'commander';
import { releaseRepository } from '../audit.ts';
import { globalOptions, initRepository, outputFor } from '../context.ts';

export function registerInit(program: Command): void {
  program
    .command('init')
    .description('create a repository in an empty location')
    .option('--pack-size <MiB>', 'target size of pack files', (value) => Number(value), 16)
    .option(
      '--compression <level>',
      'zstd level for new data, 0 to store uncompressed',
      (value) => Number(value),
      1,
    )
    .action(async (options: { packSize: number; compression: number }, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      const repository = await initRepository(global, {
        packSize: options.packSize * 1024 * 1024,
        compressionLevel: options.compression,
      });
      const [key] = await repository.listKeys();
      if (global.json)
        output.data({ id: repository.config.id, location: repository.backend.location, key: key?.id });
      else
        output.info(
          `created repository ${repository.config.id.slice(0, 8)} at ${repository.backend.location}`,
        );
      await releaseRepository(repository);
    });
}
