import type { Command } from 'commander';
import {
  check,
  type CheckName,
  type CheckProblem,
  type CheckResult,
  type PackProblemCause,
  type UnindexedPackCause,
} from '../../ops/check.ts';
import { ConfigError, VerificationError } from '../../errors.ts';
import { globalOptions, outputFor, withRepository } from '../context.ts';
import { formatBytes, type Output } from '../output.ts';
import { count } from '../../util/plural.ts';

const CHECK_NAMES: Record<CheckName, string> = {
  'index-files': 'index files',
  'pack-sizes': 'packs present at their size',
  'snapshot-files': 'snapshot files',
  'snapshot-contents': 'snapshot contents and trees',
  'pack-tables': 'pack tables',
  'blob-data': 'blob data',
  'wal-files': 'WAL files (signature, header, name, size)',
  'wal-data': 'WAL file contents',
};

/** What to do about a problem with a pack, after what is wrong with it. */
const PACK_ADVICE: Record<PackProblemCause, string> = {
  'index-disagrees': 'run `strongbox repair index`',
  'unauthenticated-table': '`strongbox check --read-data` tells whether its blobs still read',
  'blobs-fail-authentication': '`strongbox repair index --read-data` leaves them out of the index',
};

/** Why packs no index file lists are there, after "N packs (size) in no index file". */
const UNINDEXED: Record<UnindexedPackCause, string> = {
  'interrupted-backup':
    'left by interrupted backups (every blob in them is indexed in another pack or used by no snapshot); they cost space only',
  'lost-index-file':
    'they hold blobs snapshots use, listed by an index file that was lost; run `strongbox repair index` to index them again',
  'unauthenticated-table':
    'their tables cannot be authenticated (not written for this repository, or damaged); nothing reads them',
  'blobs-fail-authentication':
    'their blobs fail authentication (forged with a key of this repository, or damaged); nothing reads them',
  'not-examined':
    'not examined (a write-only key cannot read pack tables); `strongbox check` with a full key tells why they are there',
};

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
      else printResult(output, result);
      if (result.problems.length > 0) {
        const repair = result.problems.some((problem) => problem.cause === 'index-disagrees');
        const wal = result.problems.some((problem) => problem.walFile !== undefined);
        const snapshots = result.problems.some((problem) => problem.walFile === undefined);
        throw new VerificationError(`check found ${count(result.problems.length, 'problem')}`, {
          hint: [
            ...(snapshots
              ? [
                  repair
                    ? 'Run `strongbox repair index` to rebuild the index from the packs; restore affected snapshots from another copy, or make a new backup.'
                    : 'Restore affected snapshots from another copy, or make a new backup; then forget the affected snapshots and run `strongbox repair index`, so that the index stops listing what is gone.',
                ]
              : []),
            ...(wal
              ? [
                  'Do not recover through a damaged WAL file: find out who wrote it, remove it, and push it again from pg_wal (or a copy of the repository) if it is still there; otherwise take a new base backup.',
                ]
              : []),
          ].join(' '),
        });
      }
      // A write-only key checks the structure alone (exit 0: nothing it could check is wrong), and says so.
      if (!global.json && result.skipped) output.info('nothing wrong in what a write-only key can check');
      else if (!global.json) output.info('no errors were found');
    });
}

function printResult(output: Output, result: CheckResult): void {
  for (const problem of result.problems) output.warn(`error: ${problemLine(problem)}`);
  output.info(
    `${count(result.snapshots, 'snapshot')}, ${count(result.indexFiles, 'index file')}, ${count(result.packs, 'pack')}, ${count(result.blobs, 'blob')} checked; ${count(result.packsRead, 'pack')} read`,
  );
  if (result.walFiles > 0 || result.walFilesRead > 0)
    output.info(
      `${count(result.walFiles, 'WAL file')} checked; ${result.walFilesRead} of them decrypted and authenticated`,
    );
  if (result.skipped) {
    const names = (checks: readonly CheckName[]) => checks.map((name) => CHECK_NAMES[name]).join(', ');
    output.info(
      `checked: ${names(result.checks)}; not checked with a write-only key: ${names(result.skipped.checks)} (${count(result.skipped.snapshots, 'snapshot')}) — use a full key`,
    );
  }
  const byCause = new Map<UnindexedPackCause, { packs: number; bytes: number }>();
  for (const { cause, size } of result.unindexedPacks) {
    const total = byCause.get(cause) ?? { packs: 0, bytes: 0 };
    byCause.set(cause, { packs: total.packs + 1, bytes: total.bytes + size });
  }
  for (const [cause, { packs, bytes }] of byCause)
    output.info(`${count(packs, 'pack')} (${formatBytes(bytes)}) in no index file: ${UNINDEXED[cause]}`);
}

function problemLine(problem: CheckProblem): string {
  const affected = problem.snapshots.length
    ? ` (affects snapshots ${problem.snapshots.map((id) => id.slice(0, 8)).join(', ')})`
    : '';
  const advice = problem.cause ? PACK_ADVICE[problem.cause] : '';
  return `${problem.object}: ${problem.message}${affected}${advice ? `; ${advice}` : ''}`;
}

function parseFraction(text: string): number {
  const value = text.endsWith('%') ? Number(text.slice(0, -1)) / 100 : Number(text);
  if (!(value > 0 && value <= 1))
    throw new ConfigError(`--read-data-subset ${text} is not a fraction between 0 and 100%`);
  return value;
}
