import type { Command } from 'commander';
import { verifyPostgres } from '../../postgres/verify/verify-snapshot.ts';
import { databaseCredentials, databasePasswordOption, type DatabasePasswordOptions } from '../database.ts';
import { globalOptions, outputFor, withRepository } from '../context.ts';
import { showingMismatch, verificationTable } from '../verification.ts';
import { filterOptions, snapshotFilter, type FilterOptions } from './filters.ts';

export function registerVerify(program: Command): void {
  databasePasswordOption(filterOptions(program.command('verify')))
    .description(
      'compare a PostgreSQL database with the fingerprints of a snapshot (exit 7 on any difference)',
    )
    .argument('[snapshot]', 'snapshot id, id prefix, or latest (default)', 'latest')
    .option(
      '--to <url>',
      'the database to check: postgres://user@host:port/database, without a password (default: PG*/DB_* variables)',
    )
    .option('--pg-bin <dir>', 'directory of psql')
    .action(
      async (
        reference: string,
        options: FilterOptions & DatabasePasswordOptions & { to?: string; pgBin?: string },
        command: Command,
      ) => {
        const global = globalOptions(command);
        const output = outputFor(global);
        const credentials = await databaseCredentials(options.to, options, output);
        const result = await withRepository(global, (repository) =>
          showingMismatch(
            output,
            verifyPostgres(repository, reference, {
              ...(options.to ? { to: options.to } : {}),
              ...credentials,
              ...(options.pgBin ? { pgBin: options.pgBin } : {}),
              filter: snapshotFilter(options),
            }),
          ),
        );
        if (global.json) return output.data(result);
        output.info(
          verificationTable(
            result.verification,
            `${result.target}, compared with snapshot ${result.snapshot.slice(0, 8)}`,
          ),
        );
      },
    );
}
