import { ConfigError } from '../errors.ts';

/** Seconds in each unit a duration may use, largest first. */
const UNITS = [
  ['w', 7 * 86_400],
  ['d', 86_400],
  ['h', 3_600],
  ['m', 60],
  ['s', 1],
  ['ms', 0.001],
] as const;

const EXAMPLES = 'such as 90s, 30m, 26h, 1h30m or 7d (w weeks, d days, h hours, m minutes, s seconds, ms)';

/**
 * "30m", "26h", "1h30m", "7d": a span of time in seconds, as thresholds and objectives are given
 * (--rto 30m, --max-age 26h). Units go from largest to smallest, each at most once; a bare 0 is
 * zero unless `positive` refuses it (an objective of nothing). Calendar spans (months, years) are
 * retention's business, not this one's.
 */
export function parseDuration(text: string, what = 'duration', { positive = false } = {}): number {
  const trimmed = text.trim();
  const invalid = () => new ConfigError(`invalid ${what} "${trimmed}": expected a duration ${EXAMPLES}`);
  const match = /^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?$/.exec(trimmed);
  if (trimmed === '0' && !positive) return 0;
  if (!match || trimmed === '') throw invalid();
  let seconds = 0;
  UNITS.forEach(([, unit], index) => {
    const digits = match[index + 1];
    if (digits !== undefined) seconds += Number(digits) * unit;
  });
  if (!Number.isSafeInteger(Math.round(seconds * 1000))) throw invalid();
  if (positive && seconds === 0)
    throw new ConfigError(`invalid ${what} "${trimmed}": it must be longer than nothing`);
  return seconds;
}

/** Seconds as a person reads them: "0.42 s", "12.3 s", "4 min 05 s", "3 h 12 min", "2 d 4 h". */
export function formatElapsed(seconds: number): string {
  if (seconds < 10) return `${seconds.toFixed(2)} s`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const whole = Math.round(seconds);
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${String(whole % 60).padStart(2, '0')} s`;
  if (whole < 86400)
    return `${Math.floor(whole / 3600)} h ${String(Math.floor((whole % 3600) / 60)).padStart(2, '0')} min`;
  return `${Math.floor(whole / 86400)} d ${Math.floor((whole % 86400) / 3600)} h`;
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
