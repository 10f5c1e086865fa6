import type { Command } from 'commander';
import { forget, type ForgetResult } from '../../ops/forget.ts';
import { ConfigError } from '../../errors.ts';
import { count } from '../../util/plural.ts';
import { globalOptions, loadedConfig, outputFor, withRepository } from '../context.ts';
import { formatBytes, table, type Output } from '../output.ts';
import {
  addRetentionOptions,
  parseDuration,
  retentionFrom,
  type RetentionOptions,
} from '../retention-options.ts';
import type { RetentionDuration } from '../../retention/policy.ts';
import { filterOptions, snapshotFilter, withEnvironment, type FilterOptions } from './filters.ts';
import { printPrune, pruneFlags, pruneOptionsFrom, type PruneFlags } from './prune.ts';
import { prune } from '../../ops/prune.ts';

type ForgetFlags = RetentionOptions &
  FilterOptions &
  PruneFlags & { dryRun?: boolean; prune?: boolean; keepWalWithin?: RetentionDuration };

export function registerForget(program: Command): void {
  const command = program
    .command('forget')
    .description('remove snapshots a retention policy does not keep, or those named (full keys)')
    .argument(
      '[snapshots...]',
      'remove exactly these snapshots (ids or unique prefixes) instead of applying a policy',
    );
  pruneFlags(addRetentionOptions(filterOptions(command)), 'with --prune: ')
    .option(
      '--keep-wal-within <duration>',
      'also keep the newest physical backup that ended this long ago (7d), and the WAL from it: point-in-time recovery reaches that far back',
      parseDuration,
    )
    .option('--dry-run', 'show what would be kept and removed, and why; remove nothing')
    .option('--prune', 'then prune: delete the data only removed snapshots used')
    .action(async (ids: string[], flags: ForgetFlags, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      const dryRun = Boolean(flags.dryRun);
      let options;
      if (ids.length > 0) {
        if (Object.keys(flags).some((key) => key.startsWith('keep') || key === 'policy'))
          throw new ConfigError('give snapshot ids or a retention policy, not both', {
            hint: 'Named snapshots are removed whatever a policy would keep.',
          });
        options = { ids, dryRun };
      } else {
        const choice = retentionFrom(
          { ...flags, tag: withEnvironment(flags.tag, undefined) },
          await loadedConfig(global),
        );
        const filter = snapshotFilter({
          ...flags,
          tag: choice.filter.tags ?? [],
          ...(choice.filter.env !== undefined ? { env: choice.filter.env } : {}),
        });
        options = {
          policy: choice.policy,
          groupBy: choice.groupBy,
          filter,
          dryRun,
          ...(choice.timeZone ? { timeZone: choice.timeZone } : {}),
          ...(flags.keepWalWithin ? { keepWalWithin: flags.keepWalWithin } : {}),
        };
      }
      const outcome = await withRepository(global, async (repository) => {
        const removal = await forget(repository, options);
        const pruned =
          flags.prune && (removal.removed.length > 0 || !dryRun)
            ? await prune(repository, {
                ...pruneOptionsFrom(flags, output, dryRun),
                ...(dryRun ? { assumeRemoved: removal.removed } : {}),
              })
            : undefined;
        return { removal, pruned };
      });
      if (global.json) {
        output.data(outcome.pruned ? { ...outcome.removal, prune: outcome.pruned } : outcome.removal);
        return;
      }
      printForget(output, outcome.removal, Boolean(flags.prune));
      if (outcome.pruned) printPrune(global, output, outcome.pruned);
    });
}

function describeKey(key: Record<string, string | string[]>): string {
  const parts = Object.entries(key).map(
    ([field, value]) => `${field} ${[value].flat().join(',') || '(none)'}`,
  );
  return parts.length ? parts.join(', ') : 'all snapshots';
}

function printForget(output: Output, result: ForgetResult, pruning: boolean): void {
  for (const group of result.groups) {
    if (group.keep.length + group.remove.length === 0) continue;
    output.line(`${describeKey(group.key)}:`);
    const rows = [['ID', 'TIME', 'DECISION', 'WHY']];
    const all = [
      ...group.keep.map((snapshot) => ({ ...snapshot, keep: true })),
      ...group.remove.map((snapshot) => ({ ...snapshot, keep: false })),
    ].sort((a, b) => b.time.localeCompare(a.time));
    for (const snapshot of all)
      rows.push([
        snapshot.id.slice(0, 8),
        snapshot.time.replace('T', ' ').slice(0, 19),
        snapshot.keep ? 'keep' : result.dryRun ? 'would remove' : 'remove',
        snapshot.reasons.join(', '),
      ]);
    output.line(table(rows));
  }
  for (const { object, retainUntil } of result.locked)
    output.warn(
      `${object}: the storage locks it${retainUntil ? ` until ${retainUntil}` : ''}; it is removed all the same and a later prune deletes the file`,
    );
  printWal(output, result);
  const kept = result.groups.reduce((sum, group) => sum + group.keep.length, 0);
  output.info(
    result.dryRun
      ? `dry run: would remove ${count(result.removed.length, 'snapshot')} and keep ${kept}; nothing was changed`
      : `removed ${count(result.removed.length, 'snapshot')}, kept ${kept}${result.removed.length && !pruning ? '; run `strongbox prune` to free their space' : ''}`,
  );
}

function printWal(output: Output, result: ForgetResult): void {
  const { expired, kept, from, note } = result.wal;
  if (expired.count + kept.count === 0 && !from) return;
  const range = (files: typeof expired) => (files.first ? `${files.first} … ${files.last}` : '');
  output.line(
    table([
      ['WAL', 'FILES', 'SIZE', 'RANGE'],
      [
        result.dryRun ? 'would expire' : 'expired',
        String(expired.count),
        formatBytes(expired.bytes),
        range(expired),
      ],
      ['kept', String(kept.count), formatBytes(kept.bytes), range(kept)],
    ]),
  );
  if (from)
    output.info(
      `WAL kept from ${from.startSegment}, where physical backup ${from.snapshot.slice(0, 8)} starts`,
    );
  if (note) output.info(note);
}
