import type { Command } from 'commander';
import { repairIndex, type RepairIndexResult } from '../../ops/repair-index.ts';
import { globalOptions, outputFor, withRepository } from '../context.ts';
import { formatBytes, type Output } from '../output.ts';
import { count } from '../../util/plural.ts';

export function registerRepair(program: Command): void {
  const group = program.command('repair').description('rebuild what can be rebuilt from the packs');

  group
    .command('index')
    .description("rebuild the index from the packs' own tables, replacing every index file")
    .option('--dry-run', 'read and verify, but write and remove nothing')
    .option('--read-data', 'read every blob, leaving out each copy that fails authentication')
    .action(async (options: { dryRun?: boolean; readData?: boolean }, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      const result = await withRepository(global, (repository) =>
        repairIndex(repository, {
          dryRun: Boolean(options.dryRun),
          readData: Boolean(options.readData),
          onProgress: ({ step, done, total }) => output.progress(`repair index: ${step} ${done}/${total}`),
        }),
      );
      output.clearProgress();
      if (global.json) output.data(result);
      else printResult(output, result);
    });
}

function printResult(output: Output, result: RepairIndexResult): void {
  for (const { pack, size, keptBlobs } of result.unauthenticated)
    output.warn(
      `warning: left out pack ${pack.slice(0, 16)} (${formatBytes(size)}): its table cannot be authenticated (not written for this repository, or damaged)${keptBlobs > 0 ? `; kept ${count(keptBlobs, 'blob')} the old index listed there, which read back intact` : ''}`,
    );
  for (const pack of result.packsLeftOut)
    output.warn(
      `warning: left out pack ${pack.slice(0, 16)}: every blob in it fails authentication (forged with a key of this repository, or damaged)`,
    );
  const partly = result.copiesLeftOut.filter(({ pack }) => !result.packsLeftOut.includes(pack));
  if (partly.length > 0)
    output.warn(
      `warning: left out ${count(partly.length, 'copy', 'copies')} of blobs that fail authentication`,
    );
  const would = result.dryRun ? 'would list' : 'lists';
  output.info(
    `the new index ${would} ${count(result.entries, 'blob copy', 'blob copies')} in ${count(result.packs, 'pack')} of ${result.packsStored} stored (the old one listed ${count(result.previousEntries, 'entry', 'entries')})`,
  );
  output.info(
    result.dryRun
      ? `dry run: ${count(result.indexFilesWritten, 'index file')} would be written; nothing was changed`
      : `wrote ${count(result.indexFilesWritten, 'index file')}, removed ${count(result.indexFilesRemoved, 'old index file')}`,
  );
}
