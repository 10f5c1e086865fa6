import type { Command, Option } from 'commander';
import { publicLocation } from './outcome.ts';

/**
 * The command line as the audit log records it: every option given, and every argument, with the
 * values of only those known to hold no secret. The rule is a list of what may be shown, not of
 * what must be hidden, so that an option added later (a command whose output is a password, a
 * URL with a token) is withheld until someone decides otherwise.
 */

/** Options and arguments whose text is recorded as typed: names, ids, tags, times, sizes, paths. */
const RECORDED = new Set([
  // what is backed up and how it is labelled, which snapshots and keys
  'tag',
  'env',
  'host',
  'kind',
  'name',
  'time',
  'at',
  'exclude',
  'include',
  'table',
  'database',
  'excludeTable',
  'add',
  'remove',
  'snapshot',
  'snapshots',
  'id',
  'path',
  'paths',
  'target',
  // retention and prune
  'keepLast',
  'keepHourly',
  'keepDaily',
  'keepWeekly',
  'keepMonthly',
  'keepYearly',
  'keepWithin',
  'keepWithinHourly',
  'keepWithinDaily',
  'keepWithinWeekly',
  'keepWithinMonthly',
  'keepWithinYearly',
  'keepTag',
  'groupBy',
  'timezone',
  'policy',
  'maxUnused',
  'maxRepackSize',
  // how it runs
  'threads',
  'jobs',
  'packSize',
  'compression',
  'readDataSubset',
  'pgBin',
  'config',
  'rto',
  'rpo',
  'report',
  'last',
  'operation',
  // monitoring: where metrics go, and the thresholds of alerts and health checks
  'metricsTextfile',
  'output',
  'maxAge',
  'sizeChange',
  'sizeWindow',
  'maxDrillAge',
  'maxCheckAge',
  // the files keys and passwords are read from or written to: their paths, never what they hold
  'passwordFile',
  'identityFile',
  'newPasswordFile',
  'identityFileOut',
  'dbPasswordFile',
  'fromPasswordFile',
  'fromIdentityFile',
  'copyToPasswordFile',
  'copyToIdentityFile',
]);

/** Locations (a repository, a database server): recorded as outcomes name them (outcome.ts publicLocation). */
const LOCATIONS = new Set(['repo', 'to', 'from', 'copyTo', 'url', 'pushgateway', 'server']);

export const WITHHELD = '<withheld>';

const given = new WeakMap<Command, { option: Option; value: string | undefined }[]>();

/**
 * Listens to every option of `program` and of its commands as it is parsed, before commander
 * turns the text into values (a duration, a date), so that the record shows what was typed.
 */
export function captureArguments(program: Command): void {
  for (const option of program.options) {
    program.on(`option:${option.name()}`, (value: unknown) => {
      let list = given.get(program);
      if (!list) given.set(program, (list = []));
      list.push({ option, value: typeof value === 'string' ? value : undefined });
    });
  }
  for (const command of program.commands) captureArguments(command);
}

/** The options given to `command` and the commands above it, then its arguments, without secrets. */
export function publicArguments(command: Command): string[] {
  const chain: Command[] = [];
  for (let at: Command | null = command; at; at = at.parent) chain.unshift(at);
  const words: string[] = [];
  for (const level of chain) {
    for (const { option, value } of given.get(level) ?? []) {
      words.push(option.long ?? option.short ?? option.name());
      if (value !== undefined) words.push(publicValue(option.attributeName(), value));
    }
  }
  const declared = command.registeredArguments;
  command.args.forEach((argument, at) => {
    const name = declared[Math.min(at, declared.length - 1)]?.name() ?? '';
    words.push(publicValue(name, argument));
  });
  return words;
}

function publicValue(name: string, value: string): string {
  if (RECORDED.has(name)) return value;
  // Not a URL but `host=… password=…`, as libpq also takes: it may hold a password.
  if (LOCATIONS.has(name) && (URL.canParse(value) || !/[=\s]/.test(value))) return publicLocation(value)!;
  return WITHHELD;
}
