import { ConfigError } from '../errors.ts';

/** Uploads in flight for a remote backend when the URL says nothing: enough to hide the round trips. */
export const DEFAULT_CONCURRENCY = 4;
/** Most `?concurrency=` any remote backend accepts: each upload in flight holds a pack in memory. */
export const MAX_CONCURRENCY = 64;

/**
 * A whole-number option of a repository URL's query string, `fallback` when absent; anything
 * else than a whole number from `min` to `max` is a ConfigError naming the option.
 */
export function wholeNumberOption(
  scheme: string,
  name: string,
  value: string | null | undefined,
  range: { fallback: number; min: number; max: number },
): number {
  if (value === null || value === undefined) return range.fallback;
  const number = Number(value);
  if (!Number.isInteger(number) || number < range.min || number > range.max) {
    throw new ConfigError(
      `${name}=${value} in the ${scheme}:// URL is not a whole number from ${range.min} to ${range.max}`,
    );
  }
  return number;
}
