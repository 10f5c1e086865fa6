import { Command, CommanderError } from 'commander';
import { describe, expect, it } from 'vitest';
import { addRetentionOptions, retentionFrom, type RetentionOptions } from '../src/cli/retention-options.ts';
import { filterOptions } from '../src/cli/commands/filters.ts';
import { defaultConfig, parseConfigFile } from '../src/config-file/config-file.ts';
import { ConfigError } from '../src/errors.ts';
import { parseRetentionDuration, UNLIMITED } from '../src/retention/policy.ts';

/** A tiny program with the retention options and the snapshot filters, as a forget command has them. */
async function parse(args: string[]): Promise<RetentionOptions> {
  let parsed: RetentionOptions | undefined;
  const program = new Command('test').exitOverride().configureOutput({ writeErr: () => undefined });
  addRetentionOptions(filterOptions(program.command('run')))
    .exitOverride()
    .action((options: RetentionOptions) => {
      parsed = options;
    });
  await program.parseAsync(['run', ...args], { from: 'user' });
  return parsed!;
}

const config = parseConfigFile(
  `
policies:
  production:
    env: production
    tags: [team=db]
    keep-daily: 30
    keep-within: 30d
    group-by: [host, name]
    timezone: Europe/Berlin
`,
  'test.yaml',
);

describe('retention options', () => {
  it('reads every --keep-* flag', async () => {
    const options = await parse([
      ...['--keep-last', '2', '--keep-hourly', '3', '--keep-daily', '7', '--keep-weekly', '4'],
      ...['--keep-monthly', '12', '--keep-yearly', 'unlimited', '--keep-within', '30d'],
      ...['--keep-within-hourly', '2d', '--keep-within-daily', '30d', '--keep-within-weekly', '90d'],
      ...['--keep-within-monthly', '1y', '--keep-within-yearly', '7y'],
      ...['--keep-tag', 'keep', '--keep-tag', 'release,env=production'],
      ...['--group-by', 'host,tags', '--timezone', 'America/New_York'],
    ]);
    expect(retentionFrom(options, defaultConfig())).toEqual({
      policy: {
        last: 2,
        hourly: 3,
        daily: 7,
        weekly: 4,
        monthly: 12,
        yearly: UNLIMITED,
        within: parseRetentionDuration('30d'),
        withinHourly: parseRetentionDuration('2d'),
        withinDaily: parseRetentionDuration('30d'),
        withinWeekly: parseRetentionDuration('90d'),
        withinMonthly: parseRetentionDuration('1y'),
        withinYearly: parseRetentionDuration('7y'),
        keepTags: [['keep'], ['release', 'env=production']],
      },
      groupBy: ['host', 'tags'],
      timeZone: 'America/New_York',
      filter: {},
    });
  });

  it('groups by host, kind and name by default, and all together with an empty --group-by', async () => {
    expect(retentionFrom(await parse(['--keep-daily', '7']), defaultConfig()).groupBy).toEqual([
      'host',
      'kind',
      'name',
    ]);
    expect(
      retentionFrom(await parse(['--keep-daily', '7', '--group-by', '']), defaultConfig()).groupBy,
    ).toEqual([]);
  });

  it.each([
    [['--keep-daily', 'seven'], /--keep-daily <n>.*expected a whole number, or unlimited/],
    [['--keep-daily', '-1'], /--keep-daily <n>.*expected a whole number/],
    [['--keep-within', '1w'], /--keep-within <duration>.*invalid duration "1w"/],
    [['--group-by', 'host,path'], /--group-by <fields>.*unknown field "path"/],
    [['--timezone', 'Berlin'], /--timezone <zone>.*IANA time zone/],
  ])('refuses %j as a usage error', async (args, message) => {
    const error = await parse(args).then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(error).toBeInstanceOf(CommanderError);
    expect((error as CommanderError).message).toMatch(message);
  });

  it('refuses an empty policy, listing the flags', async () => {
    const attempt = async (args: string[]) => retentionFrom(await parse(args), defaultConfig());
    await expect(attempt([])).rejects.toThrow(ConfigError);
    await expect(attempt(['--keep-daily', '0', '--env', 'production'])).rejects.toMatchObject({
      message: 'no retention policy given: it would remove every snapshot',
      hint: expect.stringContaining('--keep-last, --keep-hourly, --keep-daily') as unknown,
    });
  });

  it('takes a named policy, the flags replacing its fields of the same name', async () => {
    expect(retentionFrom(await parse(['--policy', 'production']), config)).toEqual({
      policy: { daily: 30, within: parseRetentionDuration('30d') },
      groupBy: ['host', 'name'],
      timeZone: 'Europe/Berlin',
      filter: { env: 'production', tags: ['team=db'] },
      policyName: 'production',
    });
    const overridden = await parse([
      ...['--policy', 'production', '--keep-daily', '7', '--keep-weekly', '4', '--timezone', 'UTC'],
      ...['--env', 'staging', '--tag', 'team=web', '--group-by', 'host'],
    ]);
    expect(retentionFrom(overridden, config)).toEqual({
      policy: { daily: 7, weekly: 4, within: parseRetentionDuration('30d') },
      groupBy: ['host'],
      timeZone: 'UTC',
      filter: { env: 'staging', tags: ['team=web'] },
      policyName: 'production',
    });
  });

  it('has the built-in policies without a file', async () => {
    expect(retentionFrom(await parse(['--policy', 'staging']), defaultConfig())).toEqual({
      policy: { within: parseRetentionDuration('14d') },
      groupBy: ['host', 'kind', 'name'],
      filter: { env: 'staging' },
      policyName: 'staging',
    });
  });

  it('names the policies there are when --policy names none', async () => {
    const options = await parse(['--policy', 'prod']);
    expect(() => retentionFrom(options, config)).toThrow(
      'no policy called "prod": the policies are development, production, staging (built in, or in test.yaml)',
    );
  });
});
