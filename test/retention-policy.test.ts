import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/errors.ts';
import {
  applyPolicy,
  COUNT_RULES,
  describePolicy,
  groupSnapshots,
  isEmptyPolicy,
  isoWeek,
  parseRetentionDuration,
  UNLIMITED,
  type PolicySnapshot,
  type RetentionPolicy,
} from '../src/retention/policy.ts';

interface Snap extends PolicySnapshot {
  tags: string[];
}

const snap = (time: string, id = time, tags: string[] = []): Snap => ({ id, time: new Date(time), tags });

/** The kept snapshots' ids, newest first, with their reasons. */
function kept(snapshots: readonly Snap[], policy: RetentionPolicy, options = {}) {
  return applyPolicy(snapshots, policy, options)
    .filter((decision) => decision.keep)
    .map(({ snapshot, reasons }) => ({ id: snapshot.id, reasons }));
}

const keptIds = (snapshots: readonly Snap[], policy: RetentionPolicy, options = {}) =>
  kept(snapshots, policy, options).map(({ id }) => id);

describe("restic's golden cases", () => {
  interface GoldenFile {
    snapshots: { id: string; time: string; tags: string[] }[];
    cases: {
      golden: string;
      policy: Record<string, number | string | string[][]>;
      keep: { id: string; reasons: string[] }[];
    }[];
  }
  const golden = JSON.parse(
    readFileSync(new URL('fixtures/retention/restic-golden.json', import.meta.url), 'utf8'),
  ) as GoldenFile;
  const snapshots = golden.snapshots.map(({ id, time, tags }) => snap(time, id, tags));

  /** restic's counts and duration strings as our policy. */
  function policyOf(given: GoldenFile['cases'][number]['policy']): RetentionPolicy {
    const policy: RetentionPolicy = {};
    for (const [rule, value] of Object.entries(given)) {
      if (rule === 'keepTags') policy.keepTags = value as string[][];
      else if (rule.startsWith('within')) policy[rule as 'within'] = parseRetentionDuration(value as string);
      else policy[rule as 'daily'] = value === 'unlimited' ? UNLIMITED : (value as number);
    }
    return policy;
  }

  /** restic's wording of a reason ("daily snapshot", "has tags [foo, bar]") in ours ("daily", "tag foo,bar"). */
  const ourReason = (reason: string) =>
    reason
      .replace(/^(oldest )?(last|hourly|daily|weekly|monthly|yearly) snapshot$/, '$1$2')
      .replace(/^has tags \[(.*)\]$/, (_all, tags: string) => `tag ${tags.split(', ').join(',')}`);

  it.each(golden.cases.map((testCase) => [testCase.golden, testCase] as const))('%s', (_name, testCase) => {
    expect(kept(snapshots, policyOf(testCase.policy))).toEqual(
      testCase.keep.map(({ id, reasons }) => ({ id, reasons: reasons.map(ourReason) })),
    );
  });
});

describe('durations', () => {
  it('reads restic durations', () => {
    expect(parseRetentionDuration('30d')).toEqual({ years: 0, months: 0, days: 30, hours: 0 });
    expect(parseRetentionDuration('1y6m')).toEqual({ years: 1, months: 6, days: 0, hours: 0 });
    expect(parseRetentionDuration(' 2y5m7d3h ')).toEqual({ years: 2, months: 5, days: 7, hours: 3 });
    expect(parseRetentionDuration('1y1d1m')).toEqual({ years: 1, months: 1, days: 1, hours: 0 });
  });

  it.each(['', '30', 'd', '30x', '1w', '-1d', '1.5d', '1d1d', '30 d', '99999999999999999999d'])(
    'refuses %j as a ConfigError',
    (text) => {
      expect(() => parseRetentionDuration(text)).toThrow(ConfigError);
    },
  );
});

describe('calendar', () => {
  it('counts months by their last snapshot across month ends of every length', () => {
    const snapshots = [
      '2023-01-31',
      '2023-02-01',
      '2023-02-28',
      '2023-03-01',
      '2023-03-31',
      '2023-04-30',
    ].map((day) => snap(`${day}T23:59:59Z`, day));
    expect(keptIds(snapshots, { monthly: 3 })).toEqual(['2023-04-30', '2023-03-31', '2023-02-28']);
  });

  it('subtracts months as restic does: 31 March less a month is 3 March, or 2 March in a leap year', () => {
    const around = (year: number) =>
      ['01', '02', '03', '04'].map((day) => snap(`${year}-03-${day}T12:00:00Z`));
    const reference = (year: number) => snap(`${year}-03-31T12:00:00Z`);
    expect(keptIds([...around(2023), reference(2023)], { within: parseRetentionDuration('1m') })).toEqual([
      '2023-03-31T12:00:00Z',
      '2023-03-04T12:00:00Z',
    ]);
    expect(keptIds([...around(2024), reference(2024)], { within: parseRetentionDuration('1m') })).toEqual([
      '2024-03-31T12:00:00Z',
      '2024-03-04T12:00:00Z',
      '2024-03-03T12:00:00Z',
    ]);
  });

  it('gives 29 February a day of its own, and a year back from it is 1 March', () => {
    const snapshots = [
      '2023-02-28',
      '2023-03-01',
      '2023-03-02',
      '2024-02-28',
      '2024-02-29',
      '2024-03-01',
    ].map((day) => snap(`${day}T10:00:00Z`, day));
    expect(keptIds(snapshots, { daily: 3 })).toEqual(['2024-03-01', '2024-02-29', '2024-02-28']);
    const leapDay = snapshots.slice(0, 5);
    expect(keptIds(leapDay, { within: parseRetentionDuration('1y') })).toEqual([
      '2024-02-29',
      '2024-02-28',
      '2023-03-02',
    ]);
  });

  it('uses ISO weeks: week 53 spans the new year, and late December can be week 1', () => {
    expect(isoWeek(2020, 12, 31)).toEqual({ year: 2020, week: 53 });
    expect(isoWeek(2021, 1, 3)).toEqual({ year: 2020, week: 53 });
    expect(isoWeek(2021, 1, 4)).toEqual({ year: 2021, week: 1 });
    expect(isoWeek(2025, 12, 29)).toEqual({ year: 2026, week: 1 });
    expect(isoWeek(2026, 12, 31)).toEqual({ year: 2026, week: 53 });
    const snapshots = ['2020-12-27', '2020-12-28', '2020-12-31', '2021-01-03', '2021-01-04'].map((day) =>
      snap(`${day}T02:00:00Z`, day),
    );
    expect(kept(snapshots, { weekly: 3 })).toEqual([
      { id: '2021-01-04', reasons: ['weekly'] },
      { id: '2021-01-03', reasons: ['weekly'] },
      { id: '2020-12-27', reasons: ['weekly'] },
    ]);
  });

  it('counts only periods that have snapshots, and keeps the oldest while counts are left', () => {
    const snapshots = ['2025-04-01T10:00:00Z', '2025-04-01T20:00:00Z', '2025-04-10T10:00:00Z'].map((time) =>
      snap(time),
    );
    expect(kept(snapshots, { daily: 5 })).toEqual([
      { id: '2025-04-10T10:00:00Z', reasons: ['daily'] },
      { id: '2025-04-01T20:00:00Z', reasons: ['daily'] },
      { id: '2025-04-01T10:00:00Z', reasons: ['oldest daily'] },
    ]);
  });
});

describe('time zones', () => {
  it('puts days in UTC unless a zone is given', () => {
    // 23:30 UTC on 30 March is 01:30 on 31 March in Berlin (CEST began at 01:00 UTC that night).
    const snapshots = [
      snap('2024-03-29T10:00:00Z', 'fri'),
      snap('2024-03-30T10:00:00Z', 'sat'),
      snap('2024-03-30T23:30:00Z', 'sun'),
    ];
    expect(keptIds(snapshots, { daily: 2 })).toEqual(['sun', 'fri']);
    expect(keptIds(snapshots, { daily: 2 }, { timeZone: 'Europe/Berlin' })).toEqual(['sun', 'sat']);
  });

  it('makes the hour repeated when DST ends one hourly bucket', () => {
    // 00:30 and 01:30 UTC on 27 October 2024 are both 02:30 in Berlin (CEST, then CET).
    const snapshots = [snap('2024-10-27T00:30:00Z', 'first'), snap('2024-10-27T01:30:00Z', 'second')];
    expect(keptIds(snapshots, { hourly: 2 })).toEqual(['second', 'first']);
    expect(keptIds(snapshots, { hourly: 1 }, { timeZone: 'Europe/Berlin' })).toEqual(['second']);
  });

  it('counts a day back on the wall clock: across spring-forward a day is 23 hours', () => {
    // Newest: 12:00 CEST on 31 March 2024 (10:00 UTC); a day before is 12:00 CET on 30 March (11:00 UTC).
    const snapshots = [snap('2024-03-31T10:00:00Z', 'newest'), snap('2024-03-30T10:30:00Z', 'older')];
    const policy = { within: parseRetentionDuration('1d') };
    expect(keptIds(snapshots, policy)).toEqual(['newest', 'older']);
    expect(keptIds(snapshots, policy, { timeZone: 'Europe/Berlin' })).toEqual(['newest']);
  });

  it('counts years in the zone: New Year in New York is five hours after UTC', () => {
    const snapshots = [snap('2024-01-01T03:00:00Z', 'utc-2024'), snap('2023-12-31T12:00:00Z', 'dec-31')];
    expect(keptIds(snapshots, { yearly: 1 })).toEqual(['utc-2024']);
    expect(kept(snapshots, { yearly: 1 }, { timeZone: 'America/New_York' })).toEqual([
      { id: 'utc-2024', reasons: ['yearly'] },
    ]);
    expect(keptIds(snapshots, { yearly: 2 })).toEqual(['utc-2024', 'dec-31']);
    expect(kept(snapshots, { yearly: 2 }, { timeZone: 'America/New_York' })).toEqual([
      { id: 'utc-2024', reasons: ['yearly'] },
      { id: 'dec-31', reasons: ['oldest yearly'] },
    ]);
  });

  it('refuses an unknown zone as a ConfigError', () => {
    expect(() => applyPolicy([], { daily: 1 }, { timeZone: 'Mars/Olympus_Mons' })).toThrow(ConfigError);
  });
});

describe('within', () => {
  const newest = '2025-06-15T02:00:00.000Z';
  const snapshots = [
    snap(newest, 'newest'),
    snap('2025-06-08T02:00:00.001Z', 'just-inside'),
    snap('2025-06-08T02:00:00.000Z', 'at-boundary'),
  ];

  it('keeps what is strictly newer than the newest snapshot less the duration', () => {
    expect(kept(snapshots, { within: parseRetentionDuration('7d') })).toEqual([
      { id: 'newest', reasons: ['within 7d'] },
      { id: 'just-inside', reasons: ['within 7d'] },
    ]);
  });

  it('is not moved by snapshots from the future when the current time is given', () => {
    const future = [...snapshots, snap('2025-07-01T00:00:00Z', 'future')];
    const policy = { within: parseRetentionDuration('7d') };
    expect(keptIds(future, policy, { now: new Date('2025-06-16T00:00:00Z') })).toEqual([
      'future',
      'newest',
      'just-inside',
    ]);
    expect(keptIds(future, policy)).toEqual(['future']);
  });
});

describe('rules', () => {
  it('orders equal times by id and keeps the same one whatever the input order', () => {
    const a = snap('2025-01-01T00:00:00Z', 'a');
    const b = snap('2025-01-01T00:00:00Z', 'b');
    for (const order of [
      [a, b],
      [b, a],
    ]) {
      expect(applyPolicy(order, { daily: 1 }).map(({ snapshot, keep }) => [snapshot.id, keep])).toEqual([
        ['a', true],
        ['b', false],
      ]);
    }
  });

  it('keeps pinned snapshots by tag lists, all tags of a list required; an empty tag means untagged', () => {
    const snapshots = [
      snap('2025-01-05T00:00:00Z', 'plain'),
      snap('2025-01-04T00:00:00Z', 'pinned', ['env=production', 'keep']),
      snap('2025-01-03T00:00:00Z', 'production', ['env=production']),
    ];
    expect(kept(snapshots, { keepTags: [['keep']] })).toEqual([{ id: 'pinned', reasons: ['tag keep'] }]);
    expect(keptIds(snapshots, { keepTags: [['keep', 'env=staging']] })).toEqual([]);
    expect(kept(snapshots, { keepTags: [['env=production'], ['']] })).toEqual([
      { id: 'plain', reasons: ['untagged'] },
      { id: 'pinned', reasons: ['tag env=production'] },
      { id: 'production', reasons: ['tag env=production'] },
    ]);
  });

  it('knows an empty policy', () => {
    expect(isEmptyPolicy({})).toBe(true);
    expect(
      isEmptyPolicy({ daily: 0, keepTags: [], within: { years: 0, months: 0, days: 0, hours: 0 } }),
    ).toBe(true);
    expect(isEmptyPolicy({ daily: 1 })).toBe(false);
    expect(isEmptyPolicy({ keepTags: [['keep']] })).toBe(false);
    expect(isEmptyPolicy({ withinYearly: parseRetentionDuration('7y') })).toBe(false);
  });

  it('refuses negative and fractional counts', () => {
    expect(() => applyPolicy([], { daily: -1 })).toThrow(ConfigError);
    expect(() => applyPolicy([], { daily: 1.5 })).toThrow(ConfigError);
  });

  it('describes a policy in a line', () => {
    expect(
      describePolicy({
        daily: 7,
        weekly: 4,
        monthly: UNLIMITED,
        last: 3,
        within: parseRetentionDuration('30d'),
        withinYearly: parseRetentionDuration('7y'),
        keepTags: [['keep'], ['env=production', 'team=db']],
      }),
    ).toBe(
      'last 3, 7 daily, 4 weekly, all monthly, within 30d, yearly within 7y, tag keep, tag env=production,team=db',
    );
    expect(describePolicy({})).toBe('nothing');
  });
});

describe('groups', () => {
  const record = (id: string, host: string, name: string, tags: string[]) => ({
    id,
    host,
    kind: 'stdin',
    name,
    tags,
  });
  const snapshots = [
    record('1', 'db2', 'shop', ['env=production']),
    record('2', 'db1', 'shop', ['team=db', 'env=production']),
    record('3', 'db1', 'shop', ['env=production', 'team=db']),
    record('4', 'db1', 'crm', []),
  ];

  it('groups by host, kind and name, tags compared as sets, in the order of the keys', () => {
    expect(
      groupSnapshots(snapshots, ['host', 'kind', 'name']).map(({ key, snapshots }) => [
        key,
        snapshots.map(({ id }) => id),
      ]),
    ).toEqual([
      [{ host: 'db1', kind: 'stdin', name: 'crm' }, ['4']],
      [{ host: 'db1', kind: 'stdin', name: 'shop' }, ['2', '3']],
      [{ host: 'db2', kind: 'stdin', name: 'shop' }, ['1']],
    ]);
    expect(groupSnapshots(snapshots, ['tags']).map(({ key }) => key)).toEqual([
      { tags: [] },
      { tags: ['env=production'] },
      { tags: ['env=production', 'team=db'] },
    ]);
    expect(groupSnapshots(snapshots, [])).toEqual([{ key: {}, snapshots }]);
  });
});

describe('properties', () => {
  const DAY = 86_400_000;
  const start = Date.UTC(2023, 0, 1);
  const arbitrarySnapshots = fc
    .uniqueArray(
      fc.record({
        id: fc.string({ minLength: 1, maxLength: 6 }),
        offset: fc.integer({ min: 0, max: 2 * 365 * DAY }),
        tags: fc.subarray(['keep', 'env=production', 'team=db']),
      }),
      { selector: (s) => s.id, maxLength: 60 },
    )
    .map((list) =>
      list.map(({ id, offset, tags }) => snap(new Date(start + offset).toISOString(), id, tags)),
    );
  const count = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 8 }));
  const duration = fc.oneof(
    fc.constant(undefined),
    fc
      .record({
        years: fc.integer({ min: 0, max: 1 }),
        months: fc.integer({ min: 0, max: 6 }),
        days: fc.integer({ min: 0, max: 40 }),
        hours: fc.integer({ min: 0, max: 48 }),
      })
      .map((value) => value),
  );
  const arbitraryPolicy: fc.Arbitrary<RetentionPolicy> = fc.record({
    last: count,
    hourly: count,
    daily: count,
    weekly: count,
    monthly: count,
    yearly: count,
    within: duration,
    withinDaily: duration,
    withinWeekly: duration,
    keepTags: fc.subarray([['keep'], ['env=production', 'team=db']]),
  });

  it('keeps a snapshot exactly when some rule names it, each count rule within its count', () => {
    fc.assert(
      fc.property(arbitrarySnapshots, arbitraryPolicy, (snapshots, policy) => {
        const decisions = applyPolicy(snapshots, policy);
        expect(decisions).toHaveLength(snapshots.length);
        for (const { keep, reasons } of decisions) expect(keep).toBe(reasons.length > 0);
        for (const rule of COUNT_RULES) {
          const byRule = decisions.filter(({ reasons }) =>
            reasons.some((reason) => reason === rule || reason === `oldest ${rule}`),
          );
          expect(byRule.length).toBeLessThanOrEqual(policy[rule] ?? 0);
        }
        const days = new Set(snapshots.map(({ time }) => time.toISOString().slice(0, 10)));
        const keptDaily = decisions.filter(({ reasons }) =>
          reasons.some((reason) => reason.endsWith('daily')),
        );
        expect(keptDaily.length).toBeGreaterThanOrEqual(Math.min(policy.daily ?? 0, days.size));
      }),
    );
  });

  it('keeps the union of what each rule alone keeps', () => {
    fc.assert(
      fc.property(arbitrarySnapshots, arbitraryPolicy, (snapshots, policy) => {
        const union = new Set<string>();
        for (const [rule, value] of Object.entries(policy)) {
          for (const id of keptIds(snapshots, { [rule]: value })) union.add(id);
        }
        expect(new Set(keptIds(snapshots, policy))).toEqual(union);
      }),
    );
  });

  it('keeps a superset when a count grows', () => {
    fc.assert(
      fc.property(
        arbitrarySnapshots,
        arbitraryPolicy,
        fc.constantFrom(...COUNT_RULES),
        fc.integer({ min: 1, max: 5 }),
        (snapshots, policy, rule, more) => {
          const before = keptIds(snapshots, policy);
          const after = new Set(keptIds(snapshots, { ...policy, [rule]: (policy[rule] ?? 0) + more }));
          for (const id of before) expect(after.has(id)).toBe(true);
          const unlimited = new Set(keptIds(snapshots, { ...policy, [rule]: UNLIMITED }));
          for (const id of after) expect(unlimited.has(id)).toBe(true);
        },
      ),
    );
  });
});

describe('a year of daily snapshots against the seeds’ policies', () => {
  /** One snapshot a day at 02:00 UTC, 1 January to 31 December 2023 (365 days; 31 December is a Sunday). */
  const year = Array.from({ length: 365 }, (_, day) => {
    const time = new Date(Date.UTC(2023, 0, 1 + day, 2));
    return snap(time.toISOString(), time.toISOString().slice(0, 10));
  });
  /** Every day from `first` to `last` of 2023, newest first. */
  const days = (first: string, last: string) =>
    year
      .map(({ id }) => id)
      .filter((id) => id >= first && id <= last)
      .reverse();
  const monthEnds = (through: number) =>
    [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
      .slice(0, through)
      .map((day, month) => `2023-${String(month + 1).padStart(2, '0')}-${day}`)
      .reverse();
  const newestFirst = (ids: string[]) => [...ids].sort().reverse();

  it.each([
    ['development', '7d', '2023-12-25'],
    ['staging', '14d', '2023-12-18'],
    ['production', '30d', '2023-12-02'],
  ])('%s: keep-within %s keeps every day after the newest less the duration', (_env, within, first) => {
    expect(keptIds(year, { within: parseRetentionDuration(within) })).toEqual(days(first, '2023-12-31'));
  });

  it('7 daily + 4 weekly + 12 monthly: the last week, the Sundays before it, and each month’s last day', () => {
    const result = kept(year, { daily: 7, weekly: 4, monthly: 12 });
    expect(result.map(({ id }) => id)).toEqual(
      newestFirst([
        ...days('2023-12-25', '2023-12-31'),
        // ISO weeks end on Sunday: the newest snapshot of each of the last four weeks.
        '2023-12-24',
        '2023-12-17',
        '2023-12-10',
        ...monthEnds(11),
      ]),
    );
    expect(result[0]).toEqual({ id: '2023-12-31', reasons: ['daily', 'weekly', 'monthly'] });
    expect(result).toHaveLength(21);
  });

  it('within-daily 30d + within-weekly 90d + within-monthly 1y + within-yearly 7y', () => {
    const result = kept(year, {
      withinDaily: parseRetentionDuration('30d'),
      withinWeekly: parseRetentionDuration('90d'),
      withinMonthly: parseRetentionDuration('1y'),
      withinYearly: parseRetentionDuration('7y'),
    });
    expect(result.map(({ id }) => id)).toEqual(
      newestFirst([
        // After 1 December 02:00: every day.
        ...days('2023-12-02', '2023-12-31'),
        // After 2 October 02:00: each ISO week's Sunday (those of December are days already).
        ...['2023-11-26', '2023-11-19', '2023-11-12', '2023-11-05', '2023-10-29', '2023-10-22'],
        ...['2023-10-15', '2023-10-08'],
        // The whole year is within 1y: each month's last day, and the oldest snapshot, which
        // restic keeps while a window still reaches past it.
        ...monthEnds(11),
        '2023-01-01',
      ]),
    );
    expect(result.at(-1)).toEqual({
      id: '2023-01-01',
      reasons: ['oldest monthly within 1y', 'oldest yearly within 7y'],
    });
    expect(result).toHaveLength(50);
  });
});
