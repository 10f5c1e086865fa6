import { z } from 'zod';
import { StrongboxError } from '../errors.ts';
import { notificationsSchema } from '../notify/schema.ts';
import { GROUP_KEYS, parseRetentionDuration, UNLIMITED } from '../retention/policy.ts';
import { alertsSchema, metricsSchema } from './monitoring-schema.ts';
import { parseDuration } from '../util/duration.ts';

/**
 * The configuration file's schema. Keys are kebab-case like the flags they stand for; every
 * object is strict, so a misspelt key is an error rather than a setting silently ignored. Later
 * sections (schedules, alerts, notifications, drills) join `policies` at the top level.
 */

/** A keep-* count: a whole number, or `unlimited`. */
const COUNT_EXPECTED = { error: 'expected a whole number of at least 0, or unlimited' };
const keepCount = z
  .union([z.number().int(COUNT_EXPECTED).min(0, COUNT_EXPECTED), z.literal('unlimited')], COUNT_EXPECTED)
  .transform((value) => (value === 'unlimited' ? UNLIMITED : value));

/** Text read by `parse`, whose StrongboxError becomes the problem reported at its path. */
function textParsedBy<T>(parse: (text: string) => T, expected: string) {
  return z.string({ error: expected }).transform((text, context) => {
    try {
      return parse(text);
    } catch (error) {
      if (!(error instanceof StrongboxError)) throw error;
      context.addIssue({ code: 'custom', message: error.message, input: text });
      return z.NEVER;
    }
  });
}

/** A keep-within* duration: 30d, 1y6m, 2y5m7d3h. */
const keepDuration = textParsedBy(parseRetentionDuration, 'expected a duration such as 30d or 1y6m');

const tag = z
  .string({ error: 'expected a tag (key=value)' })
  .min(1, { error: 'expected a tag, not empty text' });

/** An IANA time zone name that this Node.js knows. */
export function isKnownTimeZone(zone: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: zone });
    return true;
  } catch {
    return false;
  }
}

const timeZone = z
  .string({ error: 'expected a time zone name such as Europe/Berlin' })
  .refine(isKnownTimeZone, { error: (issue) => `unknown time zone ${JSON.stringify(issue.input)}` });

export const policySchema = z.strictObject({
  /** The environment it applies to: snapshots tagged env=NAME. */
  env: z.string({ error: 'expected an environment name' }).min(1).optional(),
  /** Further tags every snapshot it applies to carries. */
  tags: z.array(tag, { error: 'expected a list of tags' }).optional(),
  'keep-last': keepCount.optional(),
  'keep-hourly': keepCount.optional(),
  'keep-daily': keepCount.optional(),
  'keep-weekly': keepCount.optional(),
  'keep-monthly': keepCount.optional(),
  'keep-yearly': keepCount.optional(),
  'keep-within': keepDuration.optional(),
  'keep-within-hourly': keepDuration.optional(),
  'keep-within-daily': keepDuration.optional(),
  'keep-within-weekly': keepDuration.optional(),
  'keep-within-monthly': keepDuration.optional(),
  'keep-within-yearly': keepDuration.optional(),
  /** Each item as --keep-tag takes it: comma-separated tags, all of which a snapshot must carry. */
  'keep-tag': z.array(z.string({ error: 'expected tags separated by commas' })).optional(),
  'group-by': z
    .array(
      z.enum(GROUP_KEYS as [string, ...string[]], { error: `expected one of ${GROUP_KEYS.join(', ')}` }),
      {
        error: 'expected a list of host, kind, name, tags',
      },
    )
    .optional(),
  timezone: timeZone.optional(),
});

export type PolicyEntry = z.output<typeof policySchema>;

/** A drill's duration: 30s, 5m; in seconds. */
const drillDuration = textParsedBy(
  (text) => parseDuration(text, 'duration', { positive: true }),
  'expected a duration such as 30s or 5m',
);

/** The longest query a drill check may hold: a check is one query, not a script. */
const MAX_QUERY_LENGTH = 65536;

/**
 * One SQL check a drill runs in the restored database (docs/CLI.md, drill): its query, and the
 * text its first column's first row must show. A number is compared as it is written, true and
 * false as PostgreSQL prints them (t, f), null with SQL's NULL.
 */
export const drillCheckSchema = z.strictObject({
  name: z
    .string({ error: 'expected a name for the check' })
    .min(1, { error: 'expected a name, not empty text' }),
  query: z
    .string({ error: 'expected an SQL query' })
    .min(1, { error: 'expected an SQL query, not empty text' })
    .max(MAX_QUERY_LENGTH, { error: `expected a query of at most ${MAX_QUERY_LENGTH} characters` })
    // psql would run a backslash command (\! runs a shell) instead of sending it to the server.
    .refine((query) => !query.trimStart().startsWith('\\'), { error: 'expected SQL, not a psql command' }),
  expected: z
    .union([z.string(), z.number(), z.boolean(), z.null()], {
      error: 'expected the text the first column of the first row shows, a number, true, false or null',
    })
    .transform((value) =>
      typeof value === 'boolean' ? (value ? 't' : 'f') : value === null ? null : String(value),
    ),
  /** How long the query may run (statement_timeout); a minute by default. */
  timeout: drillDuration.optional(),
});

export type DrillCheckEntry = z.output<typeof drillCheckSchema>;

/** Names as a command line types them after --policy. */
export const POLICY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

/** Where the audit log is mirrored, beside the repository (docs/CLI.md, "Audit log"). */
export const auditSchema = z.strictObject({
  /** A file that gets each record as a line of JSON. */
  file: z.string({ error: 'expected a file path' }).min(1, { error: 'expected a file path' }).optional(),
  /** The local syslog (/dev/log), through logger(1). */
  syslog: z.boolean({ error: 'expected true or false' }).optional(),
  /** A remote syslog server instead: udp://host[:port] or tcp://host[:port] (port 514 by default). */
  'syslog-server': z
    .string({ error: 'expected udp://host:port or tcp://host:port' })
    .refine((text) => syslogServer(text) !== undefined, {
      error: 'expected udp://host:port or tcp://host:port',
    })
    .optional(),
});

/** A syslog server URL's parts, or undefined when it is not one. */
export function syslogServer(
  text: string,
): { protocol: 'udp' | 'tcp'; host: string; port: number } | undefined {
  if (!URL.canParse(text)) return undefined;
  const url = new URL(text);
  if ((url.protocol !== 'udp:' && url.protocol !== 'tcp:') || !url.hostname) return undefined;
  if (url.username || url.password || (url.pathname && url.pathname !== '/') || url.search || url.hash)
    return undefined;
  return {
    protocol: url.protocol === 'udp:' ? 'udp' : 'tcp',
    host: url.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: url.port ? Number(url.port) : 514,
  };
}

export const CURRENT_VERSION = 1;

export const configFileSchema = z.strictObject({
  version: z
    .literal(CURRENT_VERSION, {
      error: (issue) =>
        `version ${JSON.stringify(issue.input)} is not one this strongbox reads (it reads version ${CURRENT_VERSION})`,
    })
    .optional(),
  policies: z
    .record(
      z.string().regex(POLICY_NAME, {
        error: 'a policy name is letters, digits, dots, dashes and underscores',
      }),
      policySchema,
      { error: (issue) => (issue.code === 'invalid_type' ? 'expected policies by name' : undefined) },
    )
    .optional(),
  metrics: metricsSchema.optional(),
  alerts: alertsSchema.optional(),
  notifications: notificationsSchema.optional(),
  audit: auditSchema.optional(),
  drill: z
    .strictObject({ checks: z.array(drillCheckSchema, { error: 'expected a list of checks' }).optional() })
    .optional(),
});

export type ConfigFileContent = z.output<typeof configFileSchema>;
