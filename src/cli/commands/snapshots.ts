import type { Command } from 'commander';
import { shortName } from '../../repository/repository.ts';
import { globalOptions, outputFor, withRepository } from '../context.ts';
import { formatBytes, table } from '../output.ts';
import { filterOptions, snapshotFilter, type FilterOptions } from './filters.ts';
import { count } from '../../util/plural.ts';

export function registerSnapshots(program: Command): void {
  filterOptions(program.command('snapshots'))
    .description('list snapshots (write-only keys can too)')
    .action(async (options: FilterOptions, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      const { snapshots, damaged } = await withRepository(global, (repository) =>
        repository.scanSnapshots(snapshotFilter(options)),
      );
      if (global.json) {
        output.data([
          ...snapshots.map(({ id, header }) => ({ id, ...header })),
          ...damaged.map(({ id, problem, header }) => ({ id, damaged: true, problem, ...header })),
        ]);
        return;
      }
      const rows = [['ID', 'TIME', 'HOST', 'KIND', 'NAME', 'SIZE', 'STORED', 'TAGS']];
      for (const { id, header } of snapshots) {
        rows.push([
          id.slice(0, 8),
          header.time.replace('T', ' ').slice(0, 19),
          header.host,
          header.kind,
          header.name,
          formatBytes(header.size),
          formatBytes(header.stored),
          header.tags.join(','),
        ]);
      }
      output.line(table(rows));
      // Below the table: nothing of a damaged snapshot's header may be known.
      for (const { id, problem } of damaged) output.line(`${shortName(id)}  damaged: ${problem}`);
      output.info(
        `${count(snapshots.length, 'snapshot')}${damaged.length ? `, and ${damaged.length} damaged (see \`strongbox check\`)` : ''}`,
      );
    });
}
