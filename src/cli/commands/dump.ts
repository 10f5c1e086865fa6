import type { Command } from 'commander';
import { pipeline } from 'node:stream/promises';
import { Readable } from 'node:stream';
import { ConfigError } from '../../errors.ts';
import { findDatabaseSnapshot } from '../../postgres/database-snapshot.ts';
import { catFile } from '../../ops/read-content.ts';
import { globalOptions, withRepository } from '../context.ts';
import { filterOptions, snapshotFilter, type FilterOptions } from './filters.ts';

export function registerDump(program: Command): void {
  filterOptions(program.command('dump'))
    .description(
      'write the original pg_dump archive of a PostgreSQL snapshot (one database of a cluster snapshot: --name) to standard output, for pg_restore',
    )
    .argument('<snapshot>', 'snapshot id, id prefix, or latest')
    .action(async (reference: string, options: FilterOptions, command: Command) => {
      await withRepository(globalOptions(command), async (repository) => {
        const found = await findDatabaseSnapshot(repository, reference, snapshotFilter(options));
        if (process.stdout.isTTY)
          throw new ConfigError('refusing to write a binary archive to a terminal', {
            hint: 'Redirect it: strongbox dump ID > db.dump',
          });
        await pipeline(Readable.from(catFile(repository, found.snapshot.id, found.path)), process.stdout);
      });
    });
}
