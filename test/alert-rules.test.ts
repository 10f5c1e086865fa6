import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { METRICS } from '../src/monitoring/metrics.ts';
import { expectExit, runCli, tempRepo, type TempRepo } from './helpers/cli.ts';
import { promtool } from './helpers/prometheus.ts';

/**
 * The rules of `strongbox generate alerts`, run by Prometheus's own rule engine (`promtool test
 * rules`): each case feeds series and asserts which alerts fire, with which labels and text, and
 * that every other alert stays silent.
 */

let dir: TempRepo;
let rules: string;

const ALERTS = [
  'StrongboxBackupFailed',
  'StrongboxBackupMissing',
  'StrongboxBackupMetricsAbsent',
  'StrongboxBackupMetricsVanished',
  'StrongboxBackupSizeAnomaly',
  'StrongboxDrillFailed',
  'StrongboxDrillTooOld',
  'StrongboxDrillNever',
  'StrongboxDrillRtoAboveObjective',
  'StrongboxDrillRpoAboveObjective',
  'StrongboxCheckFailed',
  'StrongboxCheckTooOld',
  'StrongboxCheckNever',
  'StrongboxWalArchiveStale',
  'StrongboxWalGaps',
  'StrongboxWalArchiveFailing',
  'StrongboxWalMetricsVanished',
] as const;
type Alert = (typeof ALERTS)[number];

/** A database's group, and the labels a scrape of node_exporter's textfile collector adds. */
const GROUP = { repository: '/srv/backups', host: 'db1', kind: 'postgres', name: 'shop', env: 'production' };
const SCRAPE = { job: 'node', instance: 'db1:9100' };
const WHERE = 'shop (postgres) on db1 (env production) in repository /srv/backups';

function series(name: string, labels: Record<string, string>, values: string) {
  const pairs = Object.entries(labels).map(([label, value]) => `${label}="${value}"`);
  return { series: `${name}{${pairs.join(',')}}`, values };
}

interface Firing {
  labels: Record<string, string>;
  annotations: { summary: string; description: string };
}

interface Case {
  name: string;
  input: ReturnType<typeof series>[];
  /** When to evaluate: 25m, 1d1h… */
  at: string;
  /** Between the input series' samples: 1m unless given (under 5m, Prometheus's lookback). */
  interval?: string;
  fires?: Partial<Record<Alert, Firing[]>>;
  /** Alerts this case does not look at (they fire for reasons beside its point). */
  ignore?: Alert[];
}

/** A promtool test group: every alert not expected to fire is asserted silent. */
function testGroup(test: Case) {
  return {
    interval: test.interval ?? '1m',
    input_series: test.input,
    alert_rule_test: ALERTS.filter((alert) => !test.ignore?.includes(alert)).map((alert) => ({
      eval_time: test.at,
      alertname: alert,
      exp_alerts: (test.fires?.[alert] ?? []).map((firing) => ({
        exp_labels: firing.labels,
        exp_annotations: firing.annotations,
      })),
    })),
  };
}

/**
 * Runs `cases` through promtool, the rules evaluated every `evaluationInterval`: cases that span
 * days are evaluated hourly, as evaluating them every minute takes promtool minutes.
 */
async function runRuleTests(cases: Case[], evaluationInterval = '1m'): Promise<void> {
  const file = path.join(dir.dir, `tests-${cases[0]!.name.replace(/\W+/g, '-')}.yml`);
  await writeFile(
    file,
    stringify(
      { rule_files: [rules], evaluation_interval: evaluationInterval, tests: cases.map(testGroup) },
      { lineWidth: 0 },
    ),
  );
  const result = await promtool(['test', 'rules', file]);
  // promtool numbers failing groups from 0; say which case that is.
  const named = (result.stdout + result.stderr).replace(/group (\d+)/g, (match, index: string) => {
    const test = cases[Number(index)];
    return test ? `${match} (${test.name})` : match;
  });
  expect({ code: result.code, output: named }).toMatchObject({ code: 0 });
}

const failed = (operation: string, at: string, where = WHERE) => ({
  summary: { backup: 'Backup failed', drill: 'Restore drill failed', check: 'Repository check failed' }[
    operation
  ]!,
  description: `The last ${operation} of ${where} failed at ${at}, and none has succeeded since.`,
});

beforeAll(async () => {
  dir = await tempRepo();
  rules = path.join(dir.dir, 'alerts.yml');
  // A recovery time objective for drills run without one; none for the recovery point.
  expectExit(await runCli(['generate', 'alerts', '--output', rules, '--rto', '30m']), 0);
});

afterAll(async () => {
  await dir?.cleanup();
});

describe('strongbox generate alerts', () => {
  it('writes a rules file promtool accepts', async () => {
    const result = await promtool(['check', 'rules', rules]);
    expect({ code: result.code, output: result.stdout + result.stderr }).toMatchObject({ code: 0 });
    expect(result.stdout).toContain(`SUCCESS: ${ALERTS.length} rules found`);
    const groups = (parse(await readFile(rules, 'utf8')) as { groups: { rules: { alert: string }[] }[] })
      .groups;
    expect(groups.flatMap((group) => group.rules.map((rule) => rule.alert)).sort()).toEqual(
      [...ALERTS].sort(),
    );
  });

  it('takes thresholds from the configuration file, and flags over those', async () => {
    const config = path.join(dir.dir, 'alerts.yaml');
    await writeFile(config, 'alerts:\n  max-age: 2h\n  size-change: 30%\n  max-check-age: 3d\n');
    const fromConfig = await runCli(['--config', config, 'generate', 'alerts']);
    expectExit(fromConfig, 0);
    const text = fromConfig.stdout.toString();
    expect(text).toContain('> 7200\n');
    expect(text).toContain('> 0.3 * avg_over_time');
    expect(text).toContain('(strongbox_check_last_success_timestamp_seconds) > 259200');
    const overridden = await runCli(['--config', config, 'generate', 'alerts', '--max-age', '26h']);
    expectExit(overridden, 0);
    expect(overridden.stdout.toString()).toContain('> 93600\n');

    await writeFile(config, 'alerts:\n  max-age: 2 hours\n');
    const invalid = await runCli(['--config', config, 'generate', 'alerts']);
    expectExit(invalid, 3);
    expect(invalid.stderr).toContain('alerts.max-age: invalid duration "2 hours"');
  });
});

describe('the alert rules, under promtool test rules', () => {
  it('backup failed: a failure newer than the last success, in its group or, unnamed, on its host', async () => {
    const named = { ...GROUP, ...SCRAPE };
    const unnamed = { repository: GROUP.repository, host: 'db1', env: 'production', ...SCRAPE };
    await runRuleTests([
      {
        name: 'failed after its last success',
        input: [
          series('strongbox_backup_last_success_timestamp_seconds', named, '600x30'),
          series('strongbox_backup_last_failure_timestamp_seconds', named, '1200x30'),
        ],
        at: '25m',
        fires: {
          StrongboxBackupFailed: [
            {
              labels: { ...named, severity: 'critical' },
              annotations: failed('backup', '1970-01-01 00:20:00 +0000 UTC'),
            },
          ],
        },
      },
      {
        name: 'succeeded after it failed',
        input: [
          series('strongbox_backup_last_success_timestamp_seconds', named, '1200x30'),
          series('strongbox_backup_last_failure_timestamp_seconds', named, '600x30'),
        ],
        at: '25m',
      },
      {
        name: 'never succeeded',
        input: [series('strongbox_backup_last_failure_timestamp_seconds', named, '600x30')],
        at: '25m',
        fires: {
          StrongboxBackupFailed: [
            {
              labels: { ...named, severity: 'critical' },
              annotations: failed('backup', '1970-01-01 00:10:00 +0000 UTC'),
            },
          ],
        },
      },
      {
        name: 'unnamed failure, then a success on the same host and environment',
        input: [
          series('strongbox_backup_last_failure_timestamp_seconds', unnamed, '600x30'),
          series('strongbox_backup_last_success_timestamp_seconds', named, '1200x30'),
        ],
        at: '25m',
      },
      {
        name: 'unnamed failure after the last success on its host',
        input: [
          series('strongbox_backup_last_failure_timestamp_seconds', unnamed, '1200x30'),
          series('strongbox_backup_last_success_timestamp_seconds', named, '600x30'),
        ],
        at: '25m',
        fires: {
          StrongboxBackupFailed: [
            {
              labels: { ...unnamed, severity: 'critical' },
              annotations: failed(
                'backup',
                '1970-01-01 00:20:00 +0000 UTC',
                'on db1 (env production) in repository /srv/backups',
              ),
            },
          ],
        },
      },
      {
        name: 'unnamed failure, and successes only on another host',
        input: [
          series('strongbox_backup_last_failure_timestamp_seconds', unnamed, '600x30'),
          series('strongbox_backup_last_success_timestamp_seconds', { ...named, host: 'db2' }, '1200x30'),
        ],
        at: '25m',
        fires: {
          StrongboxBackupFailed: [
            {
              labels: { ...unnamed, severity: 'critical' },
              annotations: failed(
                'backup',
                '1970-01-01 00:10:00 +0000 UTC',
                'on db1 (env production) in repository /srv/backups',
              ),
            },
          ],
        },
      },
    ]);
  });

  it('backup missing for 24 h, from either source of backup times; metrics absent or vanished', async () => {
    const labels = { ...GROUP, ...SCRAPE };
    const missing = {
      labels: { ...GROUP, severity: 'critical' },
      annotations: {
        summary: 'No successful backup for 1d',
        description: `The last successful backup of ${WHERE} is 1d 0h 30m 0s old.`,
      },
    };
    await runRuleTests(
      [
        {
          name: 'last success 23.5 h ago',
          input: [series('strongbox_backup_last_success_timestamp_seconds', labels, '3600x400')],
          at: '24h30m',
          interval: '4m',
        },
        {
          name: 'last success 24.5 h ago',
          input: [series('strongbox_backup_last_success_timestamp_seconds', labels, '3600x400')],
          at: '25h30m',
          interval: '4m',
          fires: { StrongboxBackupMissing: [missing] },
        },
        {
          name: 'newest snapshot 24.5 h old, from strongbox metrics alone',
          input: [series('strongbox_snapshot_newest_timestamp_seconds', labels, '3600x400')],
          at: '25h30m',
          interval: '4m',
          fires: { StrongboxBackupMissing: [missing] },
        },
        {
          name: 'an old last success, but a recent snapshot',
          input: [
            series('strongbox_backup_last_success_timestamp_seconds', labels, '3600x400'),
            series(
              'strongbox_snapshot_newest_timestamp_seconds',
              { ...labels, instance: 'exporter:9100' },
              '86000x400',
            ),
          ],
          at: '25h30m',
          interval: '4m',
        },
        {
          name: 'no backup metrics at all for an hour',
          input: [
            series(
              'strongbox_check_last_success_timestamp_seconds',
              { repository: GROUP.repository },
              '0x200',
            ),
          ],
          at: '2h',
          fires: {
            StrongboxBackupMetricsAbsent: [
              {
                labels: { severity: 'critical' },
                annotations: {
                  summary: 'No backup metrics at all',
                  description:
                    'Neither strongbox_backup_last_success_timestamp_seconds nor strongbox_snapshot_newest_timestamp_seconds exists: backups are not running, or their metrics are not published or not scraped.',
                },
              },
            ],
          },
        },
        {
          name: "a group's metrics gone for 25 minutes",
          input: [series('strongbox_backup_last_success_timestamp_seconds', labels, '0+60x60')],
          at: '90m',
          fires: {
            StrongboxBackupMetricsVanished: [
              {
                labels: { ...GROUP, severity: 'warning' },
                annotations: {
                  summary: 'Backup metrics of a group have vanished',
                  description: `The backups of ${WHERE} were reported within the last 1w and are no longer: their metrics file or Pushgateway group is gone, or the group's snapshots were all removed.`,
                },
              },
            ],
          },
        },
        {
          name: "a group's metrics there all along",
          input: [series('strongbox_backup_last_success_timestamp_seconds', labels, '0+60x100')],
          at: '90m',
        },
      ],
      '5m',
    );
  });

  it('backup size more than 50 % off its 7-day average', async () => {
    const labels = { ...GROUP, ...SCRAPE };
    const timeLabels = (values: string) => [
      series('strongbox_backup_last_success_timestamp_seconds', labels, values),
    ];
    const fresh = '0+240x800';
    await runRuleTests(
      [
        {
          name: 'doubled after two days',
          input: [...timeLabels(fresh), series('strongbox_backup_size_bytes', labels, '1000x720 2000x15')],
          at: '48h30m',
          interval: '4m',
          ignore: ['StrongboxDrillNever', 'StrongboxCheckNever'],
          fires: {
            StrongboxBackupSizeAnomaly: [
              {
                labels: { ...labels, severity: 'warning' },
                annotations: {
                  summary: 'Backup size more than 50% off its 1w average',
                  description: `The last backup of ${WHERE} read 990.4B more or less than its 1w average.`,
                },
              },
            ],
          },
        },
        {
          name: 'halved after two days',
          input: [...timeLabels(fresh), series('strongbox_backup_size_bytes', labels, '1000x720 400x15')],
          at: '48h30m',
          interval: '4m',
          ignore: ['StrongboxDrillNever', 'StrongboxCheckNever'],
          fires: {
            StrongboxBackupSizeAnomaly: [
              {
                labels: { ...labels, severity: 'warning' },
                annotations: {
                  summary: 'Backup size more than 50% off its 1w average',
                  description: `The last backup of ${WHERE} read 594.2B more or less than its 1w average.`,
                },
              },
            ],
          },
        },
        {
          name: 'grown by a fifth',
          input: [...timeLabels(fresh), series('strongbox_backup_size_bytes', labels, '1000x720 1200x15')],
          at: '48h30m',
          interval: '4m',
          ignore: ['StrongboxDrillNever', 'StrongboxCheckNever'],
        },
      ],
      '5m',
    );
  });

  it('drill failed: a failure newer than the last success', async () => {
    const labels = { ...GROUP, ...SCRAPE };
    await runRuleTests([
      {
        name: 'drill failed after its last success',
        input: [
          series('strongbox_drill_last_success_timestamp_seconds', labels, '600x30'),
          series('strongbox_drill_last_failure_timestamp_seconds', labels, '1200x30'),
        ],
        at: '25m',
        fires: {
          StrongboxDrillFailed: [
            {
              labels: { ...labels, severity: 'critical' },
              annotations: failed('drill', '1970-01-01 00:20:00 +0000 UTC'),
            },
          ],
        },
      },
      {
        name: 'drill succeeded after it failed',
        input: [
          series('strongbox_drill_last_success_timestamp_seconds', labels, '1200x30'),
          series('strongbox_drill_last_failure_timestamp_seconds', labels, '600x30'),
        ],
        at: '25m',
      },
    ]);
  });

  it('drill too old, or never done on a database backed up for as long', async () => {
    const labels = { ...GROUP, ...SCRAPE };
    // Values that follow the clock: a backup or drill that succeeds all the time.
    const backedUp = series('strongbox_backup_last_success_timestamp_seconds', labels, '0+240x2600');
    await runRuleTests(
      [
        {
          name: 'last drill 6 days ago',
          input: [series('strongbox_drill_last_success_timestamp_seconds', labels, '0x2600')],
          at: '6d',
          interval: '4m',
          ignore: ['StrongboxBackupMetricsAbsent'],
        },
        {
          name: 'last drill 7 days and an hour ago',
          input: [series('strongbox_drill_last_success_timestamp_seconds', labels, '0x2600')],
          at: '7d1h',
          interval: '4m',
          ignore: ['StrongboxBackupMetricsAbsent'],
          fires: {
            StrongboxDrillTooOld: [
              {
                labels: { ...GROUP, severity: 'warning' },
                annotations: {
                  summary: 'No successful restore drill for 1w',
                  description: `The last successful drill of ${WHERE} is 7d 1h 0m 0s old.`,
                },
              },
            ],
          },
        },
        {
          name: 'a database backed up for a week, never drilled nor checked',
          input: [
            backedUp,
            series(
              'strongbox_backup_last_success_timestamp_seconds',
              { ...labels, kind: 'files', name: '/etc' },
              '0+240x2600',
            ),
          ],
          at: '7d1h',
          interval: '4m',
          fires: {
            StrongboxDrillNever: [
              {
                labels: { ...GROUP, severity: 'warning' },
                annotations: {
                  summary: 'A database backed up for 1w was never proven restorable',
                  description: `${WHERE}: backed up, but no restore drill has succeeded.`,
                },
              },
            ],
            StrongboxCheckNever: [
              {
                labels: { repository: GROUP.repository, severity: 'warning' },
                annotations: {
                  summary: 'A repository backed up to for 1w was never checked',
                  description: 'Backups in repository /srv/backups, but no successful `strongbox check`.',
                },
              },
            ],
          },
        },
        {
          name: 'a database backed up for six days, never drilled',
          input: [backedUp],
          at: '6d',
          interval: '4m',
        },
        {
          name: 'a database backed up, drilled and checked all week',
          input: [
            backedUp,
            series('strongbox_drill_last_success_timestamp_seconds', labels, '0+240x2600'),
            series(
              'strongbox_check_last_success_timestamp_seconds',
              { repository: GROUP.repository },
              '0+240x2600',
            ),
          ],
          at: '7d1h',
          interval: '4m',
        },
      ],
      '1h',
    );
  });

  it('recovery time and point above their objectives: the drill’s own, or the default one', async () => {
    const labels = { ...GROUP, ...SCRAPE };
    const objectives = (rto: string, rpo: string) => [
      series('strongbox_drill_rto_objective_seconds', labels, rto),
      series('strongbox_drill_rpo_objective_seconds', labels, rpo),
    ];
    const over = (what: 'time' | 'point', value: string) => ({
      labels: { ...labels, severity: 'warning' },
      annotations: {
        summary: `Drill recovery ${what} above its objective`,
        description: `The last drill of ${WHERE} measured a recovery ${what} of ${value}, above its objective.`,
      },
    });
    await runRuleTests([
      {
        name: 'both above the objectives the drill was given',
        input: [
          ...objectives('1800x30', '86400x30'),
          series('strongbox_drill_rto_seconds', labels, '2000x30'),
          series('strongbox_drill_rpo_seconds', labels, '90000x30'),
        ],
        at: '25m',
        ignore: ['StrongboxBackupMetricsAbsent'],
        fires: {
          StrongboxDrillRtoAboveObjective: [over('time', '33m 20s')],
          StrongboxDrillRpoAboveObjective: [over('point', '1d 1h 0m 0s')],
        },
      },
      {
        name: 'both within the objectives the drill was given',
        input: [
          ...objectives('1800x30', '86400x30'),
          series('strongbox_drill_rto_seconds', labels, '1000x30'),
          series('strongbox_drill_rpo_seconds', labels, '3600x30'),
        ],
        at: '25m',
        ignore: ['StrongboxBackupMetricsAbsent'],
      },
      {
        name: 'no objective given: the generated default (--rto 30m), and none for the recovery point',
        input: [
          series('strongbox_drill_rto_seconds', labels, '2000x30'),
          series('strongbox_drill_rpo_seconds', labels, '999999x30'),
        ],
        at: '25m',
        ignore: ['StrongboxBackupMetricsAbsent'],
        fires: { StrongboxDrillRtoAboveObjective: [over('time', '33m 20s')] },
      },
      {
        name: 'no objective given, within the default',
        input: [series('strongbox_drill_rto_seconds', labels, '1700x30')],
        at: '25m',
        ignore: ['StrongboxBackupMetricsAbsent'],
      },
    ]);
  });

  it('repository check failed or too old', async () => {
    const labels = { repository: GROUP.repository, ...SCRAPE };
    await runRuleTests([
      {
        name: 'check failed after its last success',
        input: [
          series('strongbox_check_last_success_timestamp_seconds', labels, '600x30'),
          series('strongbox_check_last_failure_timestamp_seconds', labels, '1200x30'),
        ],
        at: '25m',
        ignore: ['StrongboxBackupMetricsAbsent'],
        fires: {
          StrongboxCheckFailed: [
            {
              labels: { ...labels, severity: 'critical' },
              annotations: failed('check', '1970-01-01 00:20:00 +0000 UTC', 'in repository /srv/backups'),
            },
          ],
        },
      },
      {
        name: 'check succeeded after it failed',
        input: [
          series('strongbox_check_last_success_timestamp_seconds', labels, '1200x30'),
          series('strongbox_check_last_failure_timestamp_seconds', labels, '600x30'),
        ],
        at: '25m',
        ignore: ['StrongboxBackupMetricsAbsent'],
      },
    ]);
    await runRuleTests(
      [
        {
          name: 'last check 7 days and an hour ago',
          input: [series('strongbox_check_last_success_timestamp_seconds', labels, '0x2600')],
          at: '7d1h',
          interval: '4m',
          ignore: ['StrongboxBackupMetricsAbsent'],
          fires: {
            StrongboxCheckTooOld: [
              {
                labels: { repository: GROUP.repository, severity: 'warning' },
                annotations: {
                  summary: 'No successful repository check for 1w',
                  description: 'The last successful check in repository /srv/backups is 7d 1h 0m 0s old.',
                },
              },
            ],
          },
        },
        {
          name: 'last check 6 days ago',
          input: [series('strongbox_check_last_success_timestamp_seconds', labels, '0x2600')],
          at: '6d',
          interval: '4m',
          ignore: ['StrongboxBackupMetricsAbsent'],
        },
      ],
      '1h',
    );
  });
});

describe('the WAL alert rules, under promtool test rules', () => {
  /** The WAL series of a repository's timeline, as wal status and strongbox metrics label them. */
  const WAL = { repository: GROUP.repository, kind: 'wal', timeline: '1', ...SCRAPE };
  const IN = 'in repository /srv/backups';

  it('WAL archive stale: no segment archived for 15 minutes on any timeline of a repository', async () => {
    await runRuleTests([
      {
        name: 'the newest segment follows the clock',
        input: [series('strongbox_wal_last_archived_timestamp_seconds', WAL, '0+60x40')],
        at: '30m',
      },
      {
        name: 'the newest segment 14 minutes old',
        input: [series('strongbox_wal_last_archived_timestamp_seconds', WAL, '0x40')],
        at: '14m',
      },
      {
        name: 'the newest segment 20 minutes old',
        input: [series('strongbox_wal_last_archived_timestamp_seconds', WAL, '0x40')],
        at: '20m',
        fires: {
          StrongboxWalArchiveStale: [
            {
              labels: { repository: GROUP.repository, severity: 'critical' },
              annotations: {
                summary: 'No WAL archived for 15m',
                description: `The newest WAL segment ${IN} was archived 20m 0s ago: what the cluster wrote since is lost with it. Check \`strongbox wal status --url\`, the WAL daemon and pg_stat_archiver.`,
              },
            },
          ],
        },
      },
      {
        name: 'timeline 1 stopped at a promotion, timeline 2 follows the clock',
        input: [
          series('strongbox_wal_last_archived_timestamp_seconds', WAL, '0x40'),
          series('strongbox_wal_last_archived_timestamp_seconds', { ...WAL, timeline: '2' }, '0+60x40'),
        ],
        at: '30m',
      },
    ]);
  });

  it('WAL gaps: one or more on a timeline', async () => {
    const fresh = (labels: Record<string, string>) =>
      series('strongbox_wal_last_archived_timestamp_seconds', labels, '0+60x40');
    await runRuleTests([
      {
        name: 'no gap',
        input: [fresh(WAL), series('strongbox_wal_gaps', WAL, '0x40')],
        at: '25m',
      },
      {
        name: 'two gaps on timeline 2, published from two places',
        input: [
          fresh(WAL),
          series('strongbox_wal_gaps', WAL, '0x40'),
          series('strongbox_wal_gaps', { ...WAL, timeline: '2' }, '2x40'),
          series('strongbox_wal_gaps', { ...WAL, timeline: '2', job: 'pushgateway', instance: '' }, '2x40'),
        ],
        at: '25m',
        fires: {
          StrongboxWalGaps: [
            {
              labels: { repository: GROUP.repository, timeline: '2', severity: 'critical' },
              annotations: {
                summary: 'WAL segments missing from the archive',
                description: `2 gap(s) in the WAL of timeline 2 ${IN} since its newest base backup began: a recovery replaying past one stops there. Take a new base backup.`,
              },
            },
          ],
        },
      },
    ]);
  });

  it("PostgreSQL's archive failures increasing, a counter that resets when the server restarts", async () => {
    const failures = (values: string) => [
      series('strongbox_wal_last_archived_timestamp_seconds', WAL, '0+60x40'),
      series(
        'strongbox_wal_archive_failures_total',
        { repository: GROUP.repository, kind: 'wal', ...SCRAPE },
        values,
      ),
    ];
    await runRuleTests([
      {
        name: 'no failure',
        input: failures('0x40'),
        at: '25m',
      },
      {
        name: 'failures long ago',
        input: failures('0x5 4x35'),
        at: '25m',
      },
      {
        name: 'reset to 0 by a restart',
        input: failures('7x10 0x30'),
        at: '20m',
      },
      {
        name: 'two failures in the last minutes',
        input: failures('3x20 4 5x19'),
        at: '25m',
        fires: {
          StrongboxWalArchiveFailing: [
            {
              labels: { repository: GROUP.repository, severity: 'warning' },
              annotations: {
                summary: 'PostgreSQL fails to archive WAL',
                description: `PostgreSQL counted 2 failed archive_command runs into repository /srv/backups in the last 15m (pg_stat_archiver): it keeps the segments in pg_wal and tries again.`,
              },
            },
          ],
        },
      },
    ]);
  });

  it("a repository's WAL metrics vanished", async () => {
    await runRuleTests(
      [
        {
          name: 'WAL metrics gone for 25 minutes',
          input: [series('strongbox_wal_last_archived_timestamp_seconds', WAL, '0+60x60')],
          at: '90m',
          ignore: ['StrongboxBackupMetricsAbsent'],
          fires: {
            StrongboxWalMetricsVanished: [
              {
                labels: { repository: GROUP.repository, severity: 'warning' },
                annotations: {
                  summary: 'WAL metrics of a repository have vanished',
                  description: `The WAL archived ${IN.replace('in ', 'into ')} was reported within the last 1w and is no longer: \`strongbox wal status\` or \`strongbox metrics\` no longer publishes, or is no longer scraped.`,
                },
              },
            ],
          },
        },
        {
          name: 'WAL metrics there all along',
          input: [series('strongbox_wal_last_archived_timestamp_seconds', WAL, '0+60x100')],
          at: '90m',
          ignore: ['StrongboxBackupMetricsAbsent'],
        },
      ],
      '5m',
    );
  });

  it('takes --max-wal-age, and max-wal-age from the configuration file', async () => {
    const config = path.join(dir.dir, 'wal-alerts.yaml');
    await writeFile(config, 'alerts:\n  max-wal-age: 1h\n');
    const fromConfig = await runCli(['--config', config, 'generate', 'alerts']);
    expectExit(fromConfig, 0);
    expect(fromConfig.stdout.toString()).toContain(
      'time() - max by (repository) (strongbox_wal_last_archived_timestamp_seconds) > 3600\n',
    );
    const overridden = await runCli(['--config', config, 'generate', 'alerts', '--max-wal-age', '5m']);
    expectExit(overridden, 0);
    expect(overridden.stdout.toString()).toContain('(strongbox_wal_last_archived_timestamp_seconds) > 300\n');
  });
});

describe('strongbox generate grafana', () => {
  /** PromQL's functions and keywords: every other name in an expression is a metric's. */
  const FUNCTIONS = new Set([
    'abs',
    'avg_over_time',
    'count',
    'increase',
    'max',
    'max_over_time',
    'min',
    'sum',
    'time',
    'vector',
  ]);
  const KEYWORDS = new Set([
    'by',
    'without',
    'on',
    'ignoring',
    'group_left',
    'group_right',
    'and',
    'or',
    'unless',
    'bool',
    'offset',
  ]);

  /** The metrics `expr` names: in selectors, and in {__name__=~"a|b"}. */
  function metricNames(expr: string): string[] {
    const names = [...expr.matchAll(/__name__=~"([^"]*)"/g)].flatMap((match) => match[1]!.split('|'));
    const bare = expr
      .replace(/"(?:[^"\\]|\\.)*"/g, '""')
      .replace(/\{[^}]*\}/g, '')
      .replace(/\[[^\]]*\]/g, '')
      .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '$1');
    for (const match of bare.matchAll(/[a-zA-Z_:][a-zA-Z0-9_:]*(\s*\()?/g)) {
      const [token, call] = [match[0].replace(/\s*\($/, ''), match[1]];
      // Aggregations come before `by (…)` as often as before their argument.
      if (KEYWORDS.has(token) || FUNCTIONS.has(token)) continue;
      expect(call, `${token} called in ${expr}: a function this test does not know`).toBeUndefined();
      names.push(token);
    }
    return names;
  }

  it('writes a dashboard whose every query is valid PromQL naming only metrics strongbox defines', async () => {
    const file = path.join(dir.dir, 'dashboard.json');
    expectExit(await runCli(['generate', 'grafana', '--output', file]), 0);
    const dashboard = JSON.parse(await readFile(file, 'utf8')) as {
      uid: string;
      panels: { id: number; type: string; targets?: { expr: string }[] }[];
      templating: { list: { name: string; type: string; query: unknown }[] };
    };
    expect(dashboard.uid).toBe('strongbox-backups');
    const ids = dashboard.panels.map((panel) => panel.id);
    expect(new Set(ids).size).toBe(ids.length);

    const expressions = dashboard.panels.flatMap((panel) =>
      (panel.targets ?? []).map((target) => target.expr),
    );
    // The variables' queries are label_values(SELECTOR, LABEL): the selector is PromQL.
    for (const variable of dashboard.templating.list.filter((entry) => entry.type === 'query')) {
      const query = (variable.query as { query: string }).query;
      const selector = /^label_values\((.*), (\w+)\)$/.exec(query);
      expect(selector, query).not.toBeNull();
      expressions.push(selector![1]!);
    }
    expect(expressions.length).toBeGreaterThan(20);
    const defined = new Set(METRICS.map((metric) => metric.name));
    const named = new Set<string>();
    for (const expr of expressions) {
      const names = metricNames(expr);
      expect(names, expr).not.toEqual([]);
      for (const name of names) {
        expect(defined, `${name} in ${expr}`).toContain(name);
        named.add(name);
      }
    }
    // The dashboard shows backups, drills, checks, the repository, notifications and the WAL.
    for (const name of [
      'strongbox_backup_size_bytes',
      'strongbox_drill_rto_seconds',
      'strongbox_check_last_success_timestamp_seconds',
      'strongbox_repository_size_bytes',
      'strongbox_notification_failures_total',
      'strongbox_wal_last_archived_timestamp_seconds',
      'strongbox_wal_gaps',
      'strongbox_wal_recovery_window_seconds',
      'strongbox_wal_archive_failures_total',
    ]) {
      expect(named).toContain(name);
    }

    // Prometheus's own parser: each query, its variables filled in, as a recording rule.
    const filled = expressions.map((expr) => expr.replace(/\$__range/g, '1h').replace(/\$\w+/g, '.*'));
    const rulesFile = path.join(dir.dir, 'dashboard-queries.yml');
    await writeFile(
      rulesFile,
      stringify({
        groups: [
          {
            name: 'dashboard',
            rules: filled.map((expr, index) => ({ record: `dashboard:query_${index}`, expr })),
          },
        ],
      }),
    );
    const result = await promtool(['check', 'rules', rulesFile]);
    expect({ code: result.code, output: result.stdout + result.stderr }).toMatchObject({ code: 0 });
  });
});
