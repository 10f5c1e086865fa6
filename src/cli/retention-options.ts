import { InvalidArgumentError, type Command } from 'commander';
import { namedPolicy, tagList, type PolicyFilter, type StrongboxConfig } from '../config-file/config-file.ts';
import { isKnownTimeZone } from '../config-file/schema.ts';
import { ConfigError, StrongboxError } from '../errors.ts';
import {
  DEFAULT_GROUP_BY,
  GROUP_KEYS,
  isEmptyPolicy,
  parseRetentionDuration,
  UNLIMITED,
  type CountRule,
  type GroupKey,
  type RetentionDuration,
  type RetentionPolicy,
  type WithinRule,
} from '../retention/policy.ts';

/** The options `addRetentionOptions` adds, as commander parses them. */
export interface RetentionOptions {
  keepLast?: number;
  keepHourly?: number;
  keepDaily?: number;
  keepWeekly?: number;
  keepMonthly?: number;
  keepYearly?: number;
  keepWithin?: RetentionDuration;
  keepWithinHourly?: RetentionDuration;
  keepWithinDaily?: RetentionDuration;
  keepWithinWeekly?: RetentionDuration;
  keepWithinMonthly?: RetentionDuration;
  keepWithinYearly?: RetentionDuration;
  keepTag?: string[][];
  groupBy?: GroupKey[];
  timezone?: string;
  policy?: string;
  /** The snapshot filters (cli/commands/filters.ts), when the command has them. */
  env?: string;
  tag?: string[];
}

/** What a command applies: the policy, how snapshots are grouped, in which zone, to which snapshots. */
export interface RetentionChoice {
  policy: RetentionPolicy;
  groupBy: GroupKey[];
  timeZone?: string;
  filter: PolicyFilter;
  /** The --policy given, when one was. */
  policyName?: string;
}

const COUNT_FLAGS: [CountRule, keyof RetentionOptions, string][] = [
  ['last', 'keepLast', 'keep-last'],
  ['hourly', 'keepHourly', 'keep-hourly'],
  ['daily', 'keepDaily', 'keep-daily'],
  ['weekly', 'keepWeekly', 'keep-weekly'],
  ['monthly', 'keepMonthly', 'keep-monthly'],
  ['yearly', 'keepYearly', 'keep-yearly'],
];

const WITHIN_FLAGS: [WithinRule, keyof RetentionOptions, string][] = [
  ['within', 'keepWithin', 'keep-within'],
  ['withinHourly', 'keepWithinHourly', 'keep-within-hourly'],
  ['withinDaily', 'keepWithinDaily', 'keep-within-daily'],
  ['withinWeekly', 'keepWithinWeekly', 'keep-within-weekly'],
  ['withinMonthly', 'keepWithinMonthly', 'keep-within-monthly'],
  ['withinYearly', 'keepWithinYearly', 'keep-within-yearly'],
];

function parseCount(text: string): number {
  if (text === 'unlimited') return UNLIMITED;
  if (!/^\d+$/.test(text) || !Number.isSafeInteger(Number(text))) {
    throw new InvalidArgumentError('expected a whole number, or unlimited');
  }
  return Number(text);
}

/** A duration as the --keep-within options take it (30d, 1y6m, 2y5m7d3h), for commander. */
export function parseDuration(text: string): RetentionDuration {
  try {
    return parseRetentionDuration(text);
  } catch (error) {
    if (error instanceof StrongboxError) throw new InvalidArgumentError(error.message);
    throw error;
  }
}

function parseGroupBy(text: string): GroupKey[] {
  const fields = text === '' ? [] : text.split(',').map((field) => field.trim());
  for (const field of fields) {
    if (!(GROUP_KEYS as readonly string[]).includes(field)) {
      throw new InvalidArgumentError(`unknown field "${field}": group by ${GROUP_KEYS.join(', ')}`);
    }
  }
  return fields as GroupKey[];
}

function parseTimeZone(text: string): string {
  if (!isKnownTimeZone(text)) {
    throw new InvalidArgumentError('expected an IANA time zone name such as Europe/Berlin, or UTC');
  }
  return text;
}

const collectTagList = (value: string, previous: string[][] = []) => [...previous, tagList(value)];

/** Adds every --keep-* option, --group-by, --timezone and --policy to `command`. */
export function addRetentionOptions(command: Command): Command {
  for (const [rule, , flag] of COUNT_FLAGS) {
    const what = rule === 'last' ? 'snapshots' : `${rule} snapshots`;
    command.option(`--${flag} <n>`, `keep the last n ${what} (or unlimited)`, parseCount);
  }
  for (const [rule, , flag] of WITHIN_FLAGS) {
    const what =
      rule === 'within' ? 'every snapshot' : `the ${rule.slice('within'.length).toLowerCase()} snapshots`;
    command.option(
      `--${flag} <duration>`,
      `keep ${what} within this duration (30d, 1y6m, 2y5m7d3h) of the newest`,
      parseDuration,
    );
  }
  return command
    .option(
      '--keep-tag <tags>',
      'keep snapshots with all of these comma-separated tags (repeatable: any list)',
      collectTagList,
    )
    .option(
      '--group-by <fields>',
      `apply the policy to each group of snapshots alike in these fields (${GROUP_KEYS.join(',')}; default ${DEFAULT_GROUP_BY.join(',')}; '' for one group)`,
      parseGroupBy,
    )
    .option(
      '--timezone <zone>',
      'count days, weeks, months and years in this time zone (default UTC)',
      parseTimeZone,
    )
    .option('--policy <name>', 'a named policy (built in, or from the configuration file)');
}

const ALL_FLAGS = [...COUNT_FLAGS, ...WITHIN_FLAGS].map(([, , flag]) => `--${flag}`).concat('--keep-tag');

/**
 * The policy the options choose: the named policy's, each field a flag gives replaced by the
 * flag, or the flags' alone. A policy that keeps nothing is refused.
 */
export function retentionFrom(options: RetentionOptions, config: StrongboxConfig): RetentionChoice {
  const named = options.policy === undefined ? undefined : namedPolicy(config, options.policy);
  const policy: RetentionPolicy = { ...named?.policy };
  for (const [rule, option] of COUNT_FLAGS) {
    if (options[option] !== undefined) policy[rule] = options[option] as number;
  }
  for (const [rule, option] of WITHIN_FLAGS) {
    if (options[option] !== undefined) policy[rule] = options[option] as RetentionDuration;
  }
  if (options.keepTag !== undefined) policy.keepTags = options.keepTag;
  if (isEmptyPolicy(policy)) {
    throw new ConfigError(
      named
        ? `the policy "${named.name}" keeps nothing`
        : 'no retention policy given: it would remove every snapshot',
      { hint: `Give at least one of ${ALL_FLAGS.join(', ')}, or --policy <name>.` },
    );
  }
  const env = options.env ?? named?.filter.env;
  const tags = options.tag?.length ? options.tag : named?.filter.tags;
  const timeZone = options.timezone ?? named?.timeZone;
  return {
    policy,
    groupBy: options.groupBy ?? named?.groupBy ?? [...DEFAULT_GROUP_BY],
    filter: { ...(env !== undefined ? { env } : {}), ...(tags?.length ? { tags } : {}) },
    ...(timeZone !== undefined ? { timeZone } : {}),
    ...(named ? { policyName: named.name } : {}),
  };
}
