import { readFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { z } from 'zod';
import { ConfigError } from '../errors.ts';
import {
  DEFAULT_GROUP_BY,
  isEmptyPolicy,
  parseRetentionDuration,
  type GroupKey,
  type RetentionPolicy,
} from '../retention/policy.ts';
import type { NotificationTarget } from '../notify/schema.ts';
import { printable } from '../util/printable.ts';
import type { AlertsSection, MetricsSection } from './monitoring-schema.ts';
import { auditSchema, configFileSchema, syslogServer, type PolicyEntry } from './schema.ts';
import { yaml } from '../util/yaml.ts';

/** The environment variable naming the configuration file when --config is not given. */
export const CONFIG_FILE_VARIABLE = 'STRONGBOX_CONFIG';

/** Which snapshots a policy applies to: those with the tag env=NAME and every tag listed. */
export interface PolicyFilter {
  env?: string;
  tags?: string[];
}

export interface NamedPolicy {
  name: string;
  /** Where it comes from: 'built-in', or the path of the file that defines it. */
  source: string;
  policy: RetentionPolicy;
  filter: PolicyFilter;
  groupBy: GroupKey[];
  timeZone?: string;
}

export interface StrongboxConfig {
  /** The file read; absent when none was given and only the built-in settings apply. */
  file?: string;
  version: number;
  /** By name: the built-in ones, replaced or joined by the file's. */
  policies: Record<string, NamedPolicy>;
  metrics?: MetricsSection;
  alerts?: AlertsSection;
  /** Where notifications go (the `notifications:` section); none without it. */
  notifications?: NotificationTarget[];
  /** Where audit records are mirrored besides the repository; absent: nowhere. */
  audit?: AuditSettings;
  /** What `drill` runs beyond its own checks. */
  drill: { checks: DrillSqlCheck[] };
}

export interface AuditSettings {
  /** A file each record is appended to as a line of JSON (relative to the configuration file). */
  file?: string;
  /** A syslog: the local one (/dev/log), or a server's. */
  syslog?: 'local' | { protocol: 'udp' | 'tcp'; host: string; port: number };
}

/** An SQL check of the file's `drill.checks`, which every drill runs in the database it restored. */
export interface DrillSqlCheck {
  name: string;
  query: string;
  /** The text the first column of the first row must show; null for SQL's NULL. */
  expected: string | null;
  /** The query's statement_timeout. */
  timeoutSeconds: number;
}

/** How long a drill check's query may run when its entry does not say. */
export const DEFAULT_DRILL_CHECK_TIMEOUT_SECONDS = 60;

/** The seeds' retention: 30 days of production backups, 14 of staging, 7 of development. */
export const BUILT_IN_POLICIES: Readonly<Record<string, NamedPolicy>> = Object.freeze(
  Object.fromEntries(
    (
      [
        ['production', '30d'],
        ['staging', '14d'],
        ['development', '7d'],
      ] as const
    ).map(([name, within]) => [
      name,
      {
        name,
        source: 'built-in',
        policy: { within: parseRetentionDuration(within) },
        filter: { env: name },
        groupBy: [...DEFAULT_GROUP_BY],
      },
    ]),
  ),
);

/** The settings when no configuration file is given. */
export function defaultConfig(): StrongboxConfig {
  return { version: 1, policies: { ...BUILT_IN_POLICIES }, drill: { checks: [] } };
}

/** The file `--config` names, else STRONGBOX_CONFIG; there is no default path. */
export function configFileFrom(
  options: { config?: string | undefined },
  env: NodeJS.ProcessEnv = process.env,
): string | undefined {
  return options.config || env[CONFIG_FILE_VARIABLE] || undefined;
}

/** Reads and validates a configuration file: any problem is a ConfigError naming the file. */
export async function loadConfigFile(path: string): Promise<StrongboxConfig> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : String(cause);
    throw new ConfigError(`cannot read the configuration file ${path}: ${why}`, { cause });
  }
  return parseConfigFile(text, path);
}

/** The configuration in `text`, read from `path` (which messages name). */
export function parseConfigFile(text: string, path: string): StrongboxConfig {
  const document = yaml().parseDocument(text);
  const yamlError = document.errors[0];
  if (yamlError) {
    // The first line says what and where ("… at line 4, column 5:"); the next ones quote the file.
    const what = yamlError.message.split('\n')[0]!.replace(/:$/, '');
    throw new ConfigError(`invalid configuration file ${path}: ${printable(what)}`);
  }
  const content = document.toJS() ?? {};
  const parsed = configFileSchema.safeParse(content, { reportInput: false });
  if (!parsed.success) {
    throw new ConfigError(`invalid configuration file ${path}: ${problems(parsed.error).join('; ')}`);
  }
  const config: StrongboxConfig = {
    file: path,
    version: parsed.data.version ?? 1,
    policies: { ...BUILT_IN_POLICIES },
    ...(parsed.data.metrics ? { metrics: parsed.data.metrics } : {}),
    ...(parsed.data.alerts ? { alerts: parsed.data.alerts } : {}),
    ...(parsed.data.notifications ? { notifications: parsed.data.notifications } : {}),
    ...(parsed.data.audit ? { audit: auditSettings(parsed.data.audit, path) } : {}),
    drill: {
      checks: (parsed.data.drill?.checks ?? []).map(({ timeout, ...check }) => ({
        ...check,
        timeoutSeconds: timeout ?? DEFAULT_DRILL_CHECK_TIMEOUT_SECONDS,
      })),
    },
  };
  for (const [name, entry] of Object.entries(parsed.data.policies ?? {})) {
    const named = namedPolicyOf(name, entry, path);
    if (isEmptyPolicy(named.policy)) {
      throw new ConfigError(
        `invalid configuration file ${path}: policies.${name}: an empty policy (no keep-* key) would remove every snapshot`,
      );
    }
    config.policies[name] = named;
  }
  return config;
}

/** Every problem as `path: what`, an unknown key named with its full path. */
function problems(error: z.ZodError): string[] {
  return error.issues.flatMap((issue) => {
    const where = (path: readonly PropertyKey[]) => (path.length ? path.join('.') : 'top level');
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => printable(`${where([...issue.path, key])}: unknown key`));
    }
    if (issue.code === 'invalid_key') {
      return [printable(`${where(issue.path)}: ${issue.issues[0]?.message ?? issue.message}`)];
    }
    const message = issue.message.startsWith('Invalid input: expected')
      ? issue.message.replace('Invalid input: ', '')
      : issue.message;
    return [printable(`${where(issue.path)}: ${message}`)];
  });
}

function auditSettings(entry: z.output<typeof auditSchema>, configFile: string): AuditSettings {
  const server = entry['syslog-server'] === undefined ? undefined : syslogServer(entry['syslog-server']);
  return {
    ...(entry.file !== undefined ? { file: resolve(dirname(configFile), entry.file) } : {}),
    ...(server ? { syslog: server } : entry.syslog ? { syslog: 'local' } : {}),
  };
}

function namedPolicyOf(name: string, entry: PolicyEntry, source: string): NamedPolicy {
  const policy: RetentionPolicy = {};
  const assign = <K extends keyof RetentionPolicy>(field: K, value: RetentionPolicy[K] | undefined) => {
    if (value !== undefined) policy[field] = value;
  };
  assign('last', entry['keep-last']);
  assign('hourly', entry['keep-hourly']);
  assign('daily', entry['keep-daily']);
  assign('weekly', entry['keep-weekly']);
  assign('monthly', entry['keep-monthly']);
  assign('yearly', entry['keep-yearly']);
  assign('within', entry['keep-within']);
  assign('withinHourly', entry['keep-within-hourly']);
  assign('withinDaily', entry['keep-within-daily']);
  assign('withinWeekly', entry['keep-within-weekly']);
  assign('withinMonthly', entry['keep-within-monthly']);
  assign('withinYearly', entry['keep-within-yearly']);
  assign('keepTags', entry['keep-tag']?.map(tagList));
  return {
    name,
    source,
    policy,
    filter: {
      ...(entry.env !== undefined ? { env: entry.env } : {}),
      ...(entry.tags?.length ? { tags: entry.tags } : {}),
    },
    groupBy: (entry['group-by'] as GroupKey[] | undefined) ?? [...DEFAULT_GROUP_BY],
    ...(entry.timezone !== undefined ? { timeZone: entry.timezone } : {}),
  };
}

/** "keep,env=production": the tags a snapshot must all carry, as --keep-tag takes them. */
export function tagList(text: string): string[] {
  return text.split(',').map((tag) => tag.trim());
}

/** The policy called `name`; an unknown name is a ConfigError listing those there are. */
export function namedPolicy(config: StrongboxConfig, name: string): NamedPolicy {
  const found = Object.hasOwn(config.policies, name) ? config.policies[name] : undefined;
  if (found) return found;
  const names = Object.keys(config.policies).sort();
  throw new ConfigError(
    `no policy called "${printable(name)}": the policies are ${names.join(', ')}` +
      (config.file ? ` (built in, or in ${config.file})` : ' (built in; no configuration file given)'),
  );
}
