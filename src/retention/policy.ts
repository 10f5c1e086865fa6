import { ConfigError } from '../errors.ts';

/**
 * Which snapshots a retention policy keeps, with the semantics of restic's `forget`: calendar
 * buckets counted over the periods that have snapshots, every rule ORed, `within` durations
 * relative to the newest snapshot of the group. Pure: no clock, no storage.
 */

export interface RetentionDuration {
  years: number;
  months: number;
  days: number;
  hours: number;
}

export interface RetentionPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  within?: RetentionDuration;
  withinHourly?: RetentionDuration;
  withinDaily?: RetentionDuration;
  withinWeekly?: RetentionDuration;
  withinMonthly?: RetentionDuration;
  withinYearly?: RetentionDuration;
  /** Snapshots carrying every tag of any one of these lists are kept (restic --keep-tag a,b). */
  keepTags?: string[][];
}

export interface PolicySnapshot {
  id: string;
  time: Date;
  tags: readonly string[];
}

export interface Decision<T extends PolicySnapshot> {
  snapshot: T;
  keep: boolean;
  reasons: string[];
}

export interface PolicyOptions {
  /** IANA time zone of the calendar buckets and of `within` arithmetic; UTC when absent. */
  timeZone?: string;
  /**
   * The current time: snapshots after it (a writer's clock ahead) do not move the `within`
   * windows, as in restic. Absent, the newest snapshot of the group is the reference.
   */
  now?: Date;
}

/** A count that keeps every bucket: restic's `unlimited`. */
export const UNLIMITED = Number.POSITIVE_INFINITY;

export const COUNT_RULES = ['last', 'hourly', 'daily', 'weekly', 'monthly', 'yearly'] as const;
export type CountRule = (typeof COUNT_RULES)[number];

export const WITHIN_RULES = [
  'within',
  'withinHourly',
  'withinDaily',
  'withinWeekly',
  'withinMonthly',
  'withinYearly',
] as const;
export type WithinRule = (typeof WITHIN_RULES)[number];

const DURATION_UNITS = [
  ['years', 'y'],
  ['months', 'm'],
  ['days', 'd'],
  ['hours', 'h'],
] as const;

const DURATION_EXAMPLES = 'such as 30d, 1y6m or 2y5m7d3h (y years, m months, d days, h hours)';

/** "30d", "1y6m", "2y5m7d3h": restic's durations (units in any order, each at most once). */
export function parseRetentionDuration(text: string): RetentionDuration {
  const invalid = () =>
    new ConfigError(`invalid duration "${text}": expected a duration ${DURATION_EXAMPLES}`);
  const trimmed = text.trim();
  if (!/^(\d+[ymdh])+$/.test(trimmed)) throw invalid();
  const duration: RetentionDuration = { years: 0, months: 0, days: 0, hours: 0 };
  const seen = new Set<string>();
  for (const [, digits, letter] of trimmed.matchAll(/(\d+)([ymdh])/g)) {
    const field = DURATION_UNITS.find(([, unit]) => unit === letter)![0];
    const value = Number(digits);
    if (seen.has(field) || !Number.isSafeInteger(value)) throw invalid();
    seen.add(field);
    duration[field] = value;
  }
  return duration;
}

export function formatRetentionDuration(duration: RetentionDuration): string {
  const text = DURATION_UNITS.filter(([field]) => duration[field] !== 0)
    .map(([field, letter]) => `${duration[field]}${letter}`)
    .join('');
  return text || '0h';
}

function isZeroDuration(duration: RetentionDuration | undefined): boolean {
  return !duration || DURATION_UNITS.every(([field]) => duration[field] === 0);
}

/** A policy that keeps nothing by any rule: forgetting with it would remove every snapshot. */
export function isEmptyPolicy(policy: RetentionPolicy): boolean {
  return (
    COUNT_RULES.every((rule) => !policy[rule]) &&
    WITHIN_RULES.every((rule) => isZeroDuration(policy[rule])) &&
    !policy.keepTags?.length
  );
}

/** Refuses what no command line or file should produce: negative or fractional counts and durations. */
function checkPolicy(policy: RetentionPolicy): void {
  for (const rule of COUNT_RULES) {
    const count = policy[rule];
    if (count !== undefined && !(count === UNLIMITED || (Number.isSafeInteger(count) && count >= 0))) {
      throw new ConfigError(`invalid count for keep ${rule}: ${count} (a whole number, or unlimited)`);
    }
  }
  for (const rule of WITHIN_RULES) {
    const duration = policy[rule];
    if (
      duration &&
      !DURATION_UNITS.every(([field]) => Number.isSafeInteger(duration[field]) && duration[field] >= 0)
    ) {
      throw new ConfigError(`invalid duration for keep ${rule}: ${JSON.stringify(duration)}`);
    }
  }
}

/** The calendar fields of an instant where the buckets are counted. */
interface WallClock {
  year: number;
  month: number;
  day: number;
  hour: number;
  minute: number;
  second: number;
  millisecond: number;
}

type Calendar = (time: Date) => WallClock;

const utcCalendar: Calendar = (time) => ({
  year: time.getUTCFullYear(),
  month: time.getUTCMonth() + 1,
  day: time.getUTCDate(),
  hour: time.getUTCHours(),
  minute: time.getUTCMinutes(),
  second: time.getUTCSeconds(),
  millisecond: time.getUTCMilliseconds(),
});

function zoneCalendar(timeZone: string): Calendar {
  let format: Intl.DateTimeFormat;
  try {
    format = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
      era: 'short',
      numberingSystem: 'latn',
    });
  } catch (error) {
    throw new ConfigError(`unknown time zone "${timeZone}"`, {
      hint: 'Give an IANA time zone name such as Europe/Berlin or America/New_York, or UTC.',
      cause: error,
    });
  }
  return (time) => {
    const fields: Record<string, string> = {};
    for (const { type, value } of format.formatToParts(time)) fields[type] = value;
    const year = Number(fields.year);
    return {
      year: fields.era === 'BC' ? 1 - year : year,
      month: Number(fields.month),
      day: Number(fields.day),
      hour: Number(fields.hour),
      minute: Number(fields.minute),
      second: Number(fields.second),
      millisecond: time.getUTCMilliseconds(),
    };
  };
}

const wallClockAsUtc = (wall: WallClock) =>
  Date.UTC(wall.year, wall.month - 1, wall.day, wall.hour, wall.minute, wall.second, wall.millisecond);

/** Monday-based ISO 8601 week, as Go's Time.ISOWeek: the week belongs to the year of its Thursday. */
export function isoWeek(year: number, month: number, day: number): { year: number; week: number } {
  const date = new Date(Date.UTC(year, month - 1, day));
  const mondayBased = (date.getUTCDay() + 6) % 7;
  const thursday = new Date(date.getTime() + (3 - mondayBased) * 86_400_000);
  const weekYear = thursday.getUTCFullYear();
  const week = 1 + Math.floor((thursday.getTime() - Date.UTC(weekYear, 0, 1)) / (7 * 86_400_000));
  return { year: weekYear, week };
}

type Bucket = (wall: WallClock, position: number) => number;

const BUCKETS: Record<CountRule, Bucket> = {
  last: (_wall, position) => position,
  hourly: (wall) => ((wall.year * 100 + wall.month) * 100 + wall.day) * 100 + wall.hour,
  daily: (wall) => (wall.year * 100 + wall.month) * 100 + wall.day,
  weekly: (wall) => {
    const { year, week } = isoWeek(wall.year, wall.month, wall.day);
    return year * 100 + week;
  },
  monthly: (wall) => wall.year * 100 + wall.month,
  yearly: (wall) => wall.year,
};

const WITHIN_BUCKETS = {
  withinHourly: 'hourly',
  withinDaily: 'daily',
  withinWeekly: 'weekly',
  withinMonthly: 'monthly',
  withinYearly: 'yearly',
} as const satisfies Record<Exclude<WithinRule, 'within'>, CountRule>;

/**
 * The instant `duration` before `reference`, by the calendar as Go's AddDate counts it (years,
 * months and days on the wall clock, overflowing days carried: 31 March less a month is 3 March,
 * or 2 March in a leap year), then the hours as elapsed time.
 */
function cutoff(reference: Date, duration: RetentionDuration, calendar: Calendar): number {
  const wall = calendar(reference);
  const shifted = wallClockAsUtc({
    ...wall,
    year: wall.year - duration.years,
    month: wall.month - duration.months,
    day: wall.day - duration.days,
  });
  return instantOfWallClock(shifted, calendar) - duration.hours * 3_600_000;
}

/** The instant `duration` before `reference`, counted as the `within` rules count (in `timeZone`, UTC when absent). */
export function durationBefore(reference: Date, duration: RetentionDuration, timeZone?: string): Date {
  return new Date(cutoff(reference, duration, timeZone ? zoneCalendar(timeZone) : utcCalendar));
}

/**
 * The instant whose wall clock reads `wallMs` (a wall clock written as if it were UTC). A wall
 * clock skipped by a DST change is read with the offset before the change; one that occurs twice
 * is the first.
 */
function instantOfWallClock(wallMs: number, calendar: Calendar): number {
  const offsetAt = (instant: number) => wallClockAsUtc(calendar(new Date(instant))) - instant;
  const candidates = [...new Set([offsetAt(wallMs - 86_400_000), offsetAt(wallMs + 86_400_000)])]
    .map((offset) => wallMs - offset)
    .filter((instant) => wallClockAsUtc(calendar(new Date(instant))) === wallMs)
    .sort((a, b) => a - b);
  return candidates[0] ?? wallMs - offsetAt(wallMs - 86_400_000);
}

function hasTags(snapshot: PolicySnapshot, list: readonly string[]): boolean {
  // restic: an empty tag in a list matches snapshots with no tags at all.
  return list.every((tag) => (tag === '' ? snapshot.tags.length === 0 : snapshot.tags.includes(tag)));
}

function describeTagList(list: readonly string[]): string {
  return list.every((tag) => tag === '') ? 'untagged' : `tag ${list.filter(Boolean).join(',')}`;
}

/** Newest first; equal times by id, so that the result does not depend on the order of listing. */
function newestFirst<T extends PolicySnapshot>(snapshots: readonly T[]): T[] {
  return [...snapshots].sort(
    (a, b) => b.time.getTime() - a.time.getTime() || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0),
  );
}

/** The newest snapshot not after `now`: the reference of the `within` rules. */
function referenceTime(sorted: readonly PolicySnapshot[], now: Date | undefined): Date | undefined {
  return now === undefined ? sorted[0]?.time : sorted.find((snapshot) => snapshot.time <= now)?.time;
}

/**
 * One group's snapshots in, each with keep/remove and the rules that keep it ("daily", "weekly",
 * "within 30d", "tag keep", "last", "oldest daily"…), newest first.
 *
 * A count rule walks the snapshots newest first and keeps the newest snapshot of each period
 * (hour, day, ISO week, month, year; "last" counts every snapshot) until its count is used up;
 * periods without snapshots are not counted. A rule with count left when the oldest snapshot is
 * reached keeps that one too ("oldest daily"), as restic does, so the history reaches as far back
 * as the counts allow. The `within` rules keep snapshots taken after the newest snapshot less the
 * duration (strictly after: one exactly at the boundary is not kept); `withinDaily` and the like
 * keep the newest snapshot of each period in that window.
 */
export function applyPolicy<T extends PolicySnapshot>(
  snapshots: readonly T[],
  policy: RetentionPolicy,
  options: PolicyOptions = {},
): Decision<T>[] {
  checkPolicy(policy);
  const calendar = options.timeZone === undefined ? utcCalendar : zoneCalendar(options.timeZone);
  const sorted = newestFirst(snapshots);
  const reference = referenceTime(sorted, options.now);
  const cutoffOf = (duration: RetentionDuration | undefined) =>
    isZeroDuration(duration)
      ? undefined
      : reference === undefined
        ? Number.NEGATIVE_INFINITY
        : cutoff(reference, duration!, calendar);

  const counters = COUNT_RULES.filter((rule) => policy[rule]).map((rule) => ({
    rule,
    left: policy[rule]!,
    bucket: BUCKETS[rule],
    lastKept: undefined as number | undefined,
  }));
  const withinAll = cutoffOf(policy.within);
  const windows = (Object.keys(WITHIN_BUCKETS) as (keyof typeof WITHIN_BUCKETS)[])
    .map((rule) => ({ rule, duration: policy[rule], after: cutoffOf(policy[rule]) }))
    .filter((window) => window.after !== undefined)
    .map((window) => ({
      ...window,
      name: WITHIN_BUCKETS[window.rule],
      bucket: BUCKETS[WITHIN_BUCKETS[window.rule]],
      lastKept: undefined as number | undefined,
    }));

  return sorted.map((snapshot, position) => {
    const reasons: string[] = [];
    const oldest = position === sorted.length - 1;
    const wall = calendar(snapshot.time);
    const time = snapshot.time.getTime();
    for (const list of policy.keepTags ?? []) {
      if (hasTags(snapshot, list)) reasons.push(describeTagList(list));
    }
    if (withinAll !== undefined && time > withinAll) {
      reasons.push(`within ${formatRetentionDuration(policy.within!)}`);
    }
    for (const counter of counters) {
      if (counter.left <= 0) continue;
      const bucket = counter.bucket(wall, position);
      if (bucket === counter.lastKept && !oldest) continue;
      reasons.push(bucket === counter.lastKept ? `oldest ${counter.rule}` : counter.rule);
      counter.lastKept = bucket;
      counter.left -= 1;
    }
    for (const window of windows) {
      if (!(time > window.after!)) continue;
      const bucket = window.bucket(wall, position);
      if (bucket === window.lastKept && !oldest) continue;
      const name = `${window.name} within ${formatRetentionDuration(window.duration!)}`;
      reasons.push(bucket === window.lastKept ? `oldest ${name}` : name);
      window.lastKept = bucket;
    }
    return { snapshot, keep: reasons.length > 0, reasons };
  });
}

export type GroupKey = 'host' | 'kind' | 'name' | 'tags';
export const GROUP_KEYS: readonly GroupKey[] = ['host', 'kind', 'name', 'tags'];
/** Each database's (each host's, kind's and name's) backups are a history of their own. */
export const DEFAULT_GROUP_BY: readonly GroupKey[] = ['host', 'kind', 'name'];

/**
 * Groups snapshots by the chosen header fields (default host,kind,name, as the seeds keep each
 * database's backups apart); tags compare as a set. An empty `by` makes one group of all. Groups
 * come in the order of their keys, each group's snapshots in the order given.
 */
export function groupSnapshots<
  T extends { host: string; kind: string; name: string; tags: readonly string[] },
>(
  snapshots: readonly T[],
  by: readonly GroupKey[],
): { key: Record<string, string | string[]>; snapshots: T[] }[] {
  const groups = new Map<string, { key: Record<string, string | string[]>; snapshots: T[]; order: string }>();
  for (const snapshot of snapshots) {
    const key: Record<string, string | string[]> = {};
    for (const field of by) {
      key[field] = field === 'tags' ? [...new Set(snapshot.tags)].sort() : snapshot[field];
    }
    const identity = JSON.stringify(by.map((field) => key[field]));
    // Sorts field by field, a list of tags before any longer list it begins.
    const order = by.map((field) => [key[field]].flat().join('\u0000')).join('\u0001');
    const group = groups.get(identity) ?? { key, snapshots: [], order };
    group.snapshots.push(snapshot);
    groups.set(identity, group);
  }
  return [...groups.values()]
    .sort((a, b) => (a.order < b.order ? -1 : a.order > b.order ? 1 : 0))
    .map(({ key, snapshots }) => ({ key, snapshots }));
}

/** "7 daily, 4 weekly, within 30d": the policy in a line of output. */
export function describePolicy(policy: RetentionPolicy): string {
  const parts: string[] = [];
  for (const rule of COUNT_RULES) {
    const count = policy[rule];
    if (!count) continue;
    if (rule === 'last') parts.push(count === UNLIMITED ? 'all' : `last ${count}`);
    else parts.push(`${count === UNLIMITED ? 'all' : count} ${rule}`);
  }
  if (!isZeroDuration(policy.within)) parts.push(`within ${formatRetentionDuration(policy.within!)}`);
  for (const [rule, name] of Object.entries(WITHIN_BUCKETS) as [keyof typeof WITHIN_BUCKETS, CountRule][]) {
    if (!isZeroDuration(policy[rule])) parts.push(`${name} within ${formatRetentionDuration(policy[rule]!)}`);
  }
  for (const list of policy.keepTags ?? []) parts.push(describeTagList(list));
  return parts.length ? parts.join(', ') : 'nothing';
}
