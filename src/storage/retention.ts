import { ConfigError } from '../errors.ts';

const DAY_MS = 24 * 60 * 60 * 1000;
/** A hundred years: longer is a typo, and S3 and Azure would keep the objects, and bill them, that long. */
const MAX_RETENTION_DAYS = 36500;

/** How long a storage keeps objects put with `retain` immutable, and in which of its modes. */
export interface Retention<Mode extends string> {
  mode: Mode;
  days: number;
}

/**
 * Reads the pair of location options that make a storage lock what it keeps (`object-lock` and
 * `object-lock-days` for s3://, `immutability` and `immutability-days` for azure://): both or
 * neither, each given once, the mode one of `modes`, the days a whole number from 1 to 36500.
 */
export function retentionOption<Mode extends string>(
  scheme: string,
  query: URLSearchParams,
  names: { mode: string; days: string },
  modes: readonly Mode[],
): Retention<Mode> | undefined {
  const mode = singleValue(scheme, query, names.mode);
  const days = singleValue(scheme, query, names.days);
  if (mode === undefined && days === undefined) return undefined;
  const modeChoices = modes.map((choice) => `${names.mode}=${choice}`).join(' or ');
  if (mode === undefined) {
    throw new ConfigError(`${names.days}=${days} in the ${scheme}:// location needs ${modeChoices}`, {
      hint: `Add &${names.mode}=${modes[0]} (or ${modes.slice(1).join(', ')}) to the location, or remove ${names.days}.`,
    });
  }
  if (!(modes as readonly string[]).includes(mode)) {
    throw new ConfigError(`${names.mode}=${mode} in the ${scheme}:// location must be ${modes.join(' or ')}`);
  }
  if (days === undefined) {
    throw new ConfigError(`${names.mode}=${mode} in the ${scheme}:// location needs ${names.days}=N`, {
      hint: `Add &${names.days}=N, the days each backup object stays locked: at least the longest time a retention policy keeps a snapshot, plus the prune grace.`,
    });
  }
  const count = /^[0-9]+$/.test(days) ? Number(days) : Number.NaN;
  if (!Number.isSafeInteger(count) || count < 1 || count > MAX_RETENTION_DAYS) {
    throw new ConfigError(
      `${names.days}=${days} in the ${scheme}:// location is not a whole number of days from 1 to ${MAX_RETENTION_DAYS}`,
    );
  }
  return { mode: mode as Mode, days: count };
}

/** The value of `name`, refusing an empty or repeated one: with a lock, any doubt must stop the command. */
function singleValue(scheme: string, query: URLSearchParams, name: string): string | undefined {
  const values = query.getAll(name);
  if (values.length === 0) return undefined;
  if (values.length > 1) {
    throw new ConfigError(`${name} is given ${values.length} times in the ${scheme}:// location`);
  }
  if (values[0] === '') throw new ConfigError(`${name} in the ${scheme}:// location has no value`);
  return values[0];
}

/** When an object put now with `retention` may be deleted again. */
export function retainUntil(retention: Retention<string>, now = new Date()): Date {
  return new Date(now.getTime() + retention.days * DAY_MS);
}
