import { ConfigError } from '../errors.ts';

/** Seconds in each unit of a duration, as objectives and ages are written: 30m, 24h, 7d. */
const UNIT_SECONDS: Record<string, number> = {
  ms: 0.001,
  s: 1,
  m: 60,
  h: 3600,
  d: 86400,
  w: 604800,
};

const DURATION = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$/;

/**
 * "30m", "24h", "7d", "1h30m", "90s", "500ms": a span of time, in seconds. Unlike the retention
 * policies' durations (parseRetentionDuration, where m is a month and counts follow the calendar),
 * these are fixed lengths: m is a minute, d 24 hours, w 7 days.
 */
export function parseDuration(text: string): number {
  const trimmed = text.trim();
  if (!DURATION.test(trimmed))
    throw new ConfigError(
      `invalid duration "${text}": expected a duration such as 30m, 24h, 7d or 1h30m (ms, s, m minutes, h, d, w)`,
    );
  let seconds = 0;
  for (const [, amount, unit] of trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g))
    seconds += Number(amount) * UNIT_SECONDS[unit!]!;
  if (!(seconds > 0)) throw new ConfigError(`invalid duration "${text}": it must be longer than nothing`);
  return seconds;
}

/** Seconds as a person reads them: "0.42 s", "12.3 s", "4 min 05 s", "3 h 12 min", "2 d 4 h". */
export function formatDuration(seconds: number): string {
  if (seconds < 10) return `${seconds.toFixed(2)} s`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const whole = Math.round(seconds);
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${String(whole % 60).padStart(2, '0')} s`;
  if (whole < 86400)
    return `${Math.floor(whole / 3600)} h ${String(Math.floor((whole % 3600) / 60)).padStart(2, '0')} min`;
  return `${Math.floor(whole / 86400)} d ${Math.floor((whole % 86400) / 3600)} h`;
}
