import { ConfigError } from '../errors.ts';

/** Seconds in each unit a duration may use, largest first. */
const UNITS = [
  ['w', 7 * 86_400],
  ['d', 86_400],
  ['h', 3_600],
  ['m', 60],
  ['s', 1],
] as const;

const EXAMPLES = 'such as 90s, 30m, 26h, 1h30m or 7d (w weeks, d days, h hours, m minutes, s seconds)';

/**
 * "30m", "26h", "1h30m", "7d": a span of time in seconds, as thresholds and objectives are given
 * (--rto 30m, --max-age 26h). Units go from largest to smallest, each at most once; a bare 0 is
 * zero. Calendar spans (months, years) are retention's business, not this one's.
 */
export function parseDuration(text: string, what = 'duration'): number {
  const trimmed = text.trim();
  const invalid = () => new ConfigError(`invalid ${what} "${trimmed}": expected a duration ${EXAMPLES}`);
  if (trimmed === '0') return 0;
  const match = /^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(trimmed);
  if (!match || trimmed === '') throw invalid();
  let seconds = 0;
  UNITS.forEach(([, unit], index) => {
    const digits = match[index + 1];
    if (digits !== undefined) seconds += Number(digits) * unit;
  });
  if (!Number.isSafeInteger(seconds)) throw invalid();
  return seconds;
}

/** 5400 → "1h30m", 0 → "0s": the shortest form parseDuration reads back, and Prometheus too. */
export function formatDuration(seconds: number): string {
  let rest = Math.round(seconds);
  let text = '';
  for (const [unit, size] of UNITS) {
    if (rest >= size) {
      text += `${Math.floor(rest / size)}${unit}`;
      rest %= size;
    }
  }
  return text || '0s';
}

/** "50%" or "50": a share in percent, as --size-change takes it. */
export function parsePercent(text: string, what = 'percentage'): number {
  const trimmed = text.trim();
  const match = /^(\d+(?:\.\d+)?)%?$/.exec(trimmed);
  if (!match) throw new ConfigError(`invalid ${what} "${trimmed}": expected a percentage such as 50%`);
  return Number(match[1]);
}
