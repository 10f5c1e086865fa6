import type { Command } from 'commander';
import { check } from '../../ops/check.ts';
import { ConfigError, VerificationError } from '../../errors.ts';
import { globalOptions, outputFor, withRepository } from '../context.ts';
import { formatBytes } from '../output.ts';
import { count } from '../../util/plural.ts';

export function registerCheck(program: Command): void {
  program
    .command('check')
    .description('verify the repository; with --read-data, decrypt and authenticate every blob')
    .option('--read-data', 'read and verify all data')
    .option('--read-data-subset <fraction>', 'read and verify a random part of the data, e.g. 10% or 0.1')
    .action(async (options: { readData?: boolean; readDataSubset?: string }, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      const readData = options.readData
        ? 1
        : options.readDataSubset
          ? parseFraction(options.readDataSubset)
          : 0;
      const result = await withRepository(global, (repository) => {
        // Otherwise a write-only key would read nothing and still report that no errors were found.
        if (readData > 0) repository.requireReader('read data (--read-data)');
        return check(repository, { readData, onProgress: (message) => output.progress(`check: ${message}`) });
      });
      output.clearProgress();
      if (global.json) output.data(result);
      else {
        for (const problem of result.problems) {
          const affected = problem.snapshots.length
            ? ` (affects snapshots ${problem.snapshots.map((id) => id.slice(0, 8)).join(', ')})`
            : '';
          output.warn(`error: ${problem.object}: ${problem.message}${affected}`);
        }
        output.info(
          `${count(result.snapshots, 'snapshot')}, ${count(result.indexFiles, 'index file')}, ${count(result.packs, 'pack')}, ${count(result.blobs, 'blob')} checked; ${count(result.packsRead, 'pack')} read`,
        );
        if (result.unreferencedPacks > 0)
          output.info(
            `${count(result.unreferencedPacks, 'pack')} (${formatBytes(result.unreferencedBytes)}) in no index file: left by interrupted backups, or listed by an index file that was lost; until a later \`strongbox repair index\` indexes them again, their data is not used`,
          );
      }
      if (result.problems.length > 0) {
        throw new VerificationError(`check found ${count(result.problems.length, 'problem')}`, {
          hint: 'Restore affected snapshots from another copy, or make a new backup.',
        });
      }
      if (!global.json) output.info('no errors were found');
    });
}

function parseFraction(text: string): number {
  const value = text.endsWith('%') ? Number(text.slice(0, -1)) / 100 : Number(text);
  if (!(value > 0 && value <= 1))
    throw new ConfigError(`--read-data-subset ${text} is not a fraction between 0 and 100%`);
  return value;
}
