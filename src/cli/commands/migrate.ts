import type { Command } from 'commander';
import { ConfigError } from '../../errors.ts';
import { globalOptions, migrateRepositoryAt, outputFor, usesIdentityFile } from '../context.ts';
import { withSecretFile } from '../secrets.ts';

export function registerMigrate(program: Command): void {
  program
    .command('migrate')
    .description('upgrade a repository of format 1 to format 2 (metadata only: no data is rewritten)')
    .option('--identity-file-out <file>', 'when migrating with an identity file: where to write the new one')
    .action(async (options: { identityFileOut?: string }, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      if (usesIdentityFile(global) && !options.identityFileOut)
        throw new ConfigError('migrating with an identity file needs --identity-file-out', {
          hint: 'Name a new file for the key, which gets new secrets.',
        });
      const result = await withSecretFile(
        usesIdentityFile(global) ? options.identityFileOut : undefined,
        async () => {
          const migrated = await migrateRepositoryAt(global);
          return { secret: migrated.identityFile, result: migrated };
        },
      );
      const { identityFile: _secret, ...shown } = result;
      if (global.json) return output.data(shown);
      output.info(
        `migrated to format 2: ${result.snapshots} snapshots and ${result.indexFiles} index files endorsed`,
      );
      for (const name of result.skipped) output.warn(`warning: ${name} did not decode and is not trusted`);
      if (result.removedKeys.length > 1)
        output.info(
          'other keys were removed: add full keys again with `strongbox key add`, and issue new write-only keys with `strongbox key add --write-only`',
        );
    });
}
