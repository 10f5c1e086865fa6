import type { Command } from 'commander';
import { prune, type PruneOptions, type PruneResult } from '../../ops/prune.ts';
import { ConfigError } from '../../errors.ts';
import { count } from '../../util/plural.ts';
import { globalOptions, outputFor, withRepository, type GlobalOptions } from '../context.ts';
import { formatBytes, type Output } from '../output.ts';

export interface PruneFlags {
  maxUnused?: string;
  maxRepackSize?: string;
  dryRun?: boolean;
  wait?: boolean;
}

/** The prune options `prune` and `forget --prune` share. */
export function pruneFlags(command: Command, prefix = ''): Command {
  return command
    .option(
      `--max-unused <share>`,
      `${prefix}unused space tolerated after pruning, as a share of the used space (default 5%)`,
    )
    .option(`--max-repack-size <size>`, `${prefix}repack at most this much in one run (2G, 500M…)`)
    .option(
      '--no-wait',
      `${prefix}leave the plan for the next prune instead of waiting for backups that began before it`,
    );
}

export function pruneOptionsFrom(flags: PruneFlags, output: Output, dryRun: boolean): PruneOptions {
  return {
    ...(flags.maxUnused !== undefined ? { maxUnused: parseShare(flags.maxUnused) } : {}),
    ...(flags.maxRepackSize !== undefined ? { maxRepackBytes: parseSize(flags.maxRepackSize) } : {}),
    dryRun,
    wait: flags.wait !== false,
    onProgress: (message) => output.progress(`prune: ${message}`),
  };
}

function parseShare(value: string): number {
  const match = /^(\d+(?:\.\d+)?)(%?)$/.exec(value.trim());
  if (!match) throw new ConfigError(`--max-unused ${value} is not a share such as 5% or 0.05`);
  const share = match[2] ? Number(match[1]) / 100 : Number(match[1]);
  if (!(share >= 0)) throw new ConfigError(`--max-unused ${value} is not a share such as 5% or 0.05`);
  return share;
}

const UNITS: Record<string, number> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

function parseSize(value: string): number {
  const match = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(value.trim());
  if (!match) throw new ConfigError(`--max-repack-size ${value} is not a size such as 2G or 500M`);
  return Math.floor(Number(match[1]) * UNITS[match[2]!.toUpperCase()]!);
}

export function registerPrune(program: Command): void {
  pruneFlags(program.command('prune'))
    .description('delete data no snapshot needs; backups keep running meanwhile (full keys)')
    .option('--dry-run', 'report what would be deleted and repacked; change nothing')
    .action(async (flags: PruneFlags, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      const result = await runPrune(global, output, flags);
      printPrune(global, output, result);
    });
}

export function runPrune(global: GlobalOptions, output: Output, flags: PruneFlags): Promise<PruneResult> {
  return withRepository(global, (repository) =>
    prune(repository, pruneOptionsFrom(flags, output, Boolean(flags.dryRun))),
  );
}

export function printPrune(global: GlobalOptions, output: Output, result: PruneResult): void {
  output.clearProgress();
  if (global.json) {
    output.data(result);
    return;
  }
  for (const { object, retainUntil } of result.locked)
    output.warn(
      `kept ${object}: the storage locks it${retainUntil ? ` until ${retainUntil}` : ''}; a later prune deletes it`,
    );
  if (result.resumedPlans > 0)
    output.info(`finished ${count(result.resumedPlans, 'plan')} of an earlier prune`);
  const { packs, bytes } = result;
  if (result.dryRun) {
    output.info(
      `dry run: would delete ${count(packs.deleted - packs.repacked, 'unused pack')} and ${count(packs.orphansDeleted, 'pack')} in no index file, and repack ${count(packs.repacked, 'pack')}: ${formatBytes(bytes.deleted)} of ${formatBytes(bytes.before)}`,
    );
    return;
  }
  if (result.outcome === 'waiting') {
    output.info('the plan is written and waits for backups that began before it; the next prune finishes it');
    return;
  }
  output.info(
    `deleted ${count(packs.deleted - packs.repacked, 'unused pack')} and ${count(packs.orphansDeleted, 'pack')} in no index file, repacked ${count(packs.repacked, 'pack')}: ${formatBytes(bytes.deleted)} freed, ${formatBytes(bytes.written)} written` +
      (packs.spared > 0 ? `; ${count(packs.spared, 'pack')} spared` : '') +
      (result.waitedMs > 1000 ? `; waited ${(result.waitedMs / 1000).toFixed(1)} s for earlier backups` : ''),
  );
}
