import type { Command } from 'commander';
import { shortName } from '../../repository/repository.ts';
import type { WriterInfo } from '../../repository/trust.ts';
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
      const { snapshots, damaged, disappeared } = await withRepository(global, (repository) =>
        repository.scanSnapshots(snapshotFilter(options)),
      );
      if (global.json) {
        output.data([
          ...snapshots.map(({ id, header, writer, future }) => ({
            id,
            ...header,
            writer,
            ...(future ? { future } : {}),
          })),
          ...damaged.map(({ id, problem, header }) => ({ id, damaged: true, problem, ...header })),
          ...disappeared.map(({ id, header }) => ({ id, disappeared: true, ...header })),
        ]);
        return;
      }
      const rows = [['ID', 'TIME', 'HOST', 'KIND', 'NAME', 'SIZE', 'STORED', 'WRITER', 'TAGS']];
      for (const { id, header, writer, future } of snapshots) {
        rows.push([
          id.slice(0, 8),
          header.time.replace('T', ' ').slice(0, 19) + (future ? ' (future!)' : ''),
          header.host,
          header.kind,
          header.name,
          formatBytes(header.size),
          formatBytes(header.stored),
          describeWriter(writer),
          header.tags.join(','),
        ]);
      }
      output.line(table(rows));
      // Below the table: nothing of a damaged snapshot's header may be known.
      for (const { id, problem } of damaged) output.line(`${shortName(id)}  damaged: ${problem}`);
      for (const { id, header } of disappeared)
        output.line(
          `${shortName(id)}  disappeared: listed here before (${header.time}), now gone from the storage`,
        );
      const notes = [
        damaged.length ? `${damaged.length} damaged` : '',
        disappeared.length ? `${disappeared.length} disappeared` : '',
      ].filter(Boolean);
      output.info(
        `${count(snapshots.length, 'snapshot')}${notes.length ? `, and ${notes.join(' and ')} (see \`strongbox check\`)` : ''}`,
      );
    });
}

/** The key that wrote a snapshot: its writer id, "(w)" for a write-only key, "(endorsed)" for a retired one. */
function describeWriter(writer: WriterInfo): string {
  const id = writer.id ? writer.id.slice(0, 8) : 'format-1';
  const kind = writer.kind === 'write-only' ? ' (w)' : '';
  return `${id}${kind}${writer.current ? '' : ' (retired)'}`;
}
