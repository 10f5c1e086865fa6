import type { AlertsSection } from '../config-file/monitoring-schema.ts';
import { formatDuration } from '../util/duration.ts';
import { operationMetricNames, REPOSITORY_METRICS, WAL_METRICS, type Operation } from './metrics.ts';
import { yaml } from '../util/yaml.ts';

/** The thresholds of the generated alert rules, in seconds and percent. */
export interface AlertThresholds {
  /** No successful backup of a group for this long. */
  maxAgeSeconds: number;
  /** A backup's size this many percent off its average over `sizeWindowSeconds`. */
  sizeChangePercent: number;
  sizeWindowSeconds: number;
  /** No successful drill of a database for this long. */
  maxDrillAgeSeconds: number;
  /** No successful check of a repository for this long. */
  maxCheckAgeSeconds: number;
  /** No WAL segment archived into a repository for this long (health warns at half of it). */
  maxWalAgeSeconds: number;
  /** Objectives for drills run without --rto or --rpo; without one, only a drill's own objective counts. */
  rtoSeconds?: number;
  rpoSeconds?: number;
}

export const DEFAULT_ALERT_THRESHOLDS: Readonly<AlertThresholds> = Object.freeze({
  maxAgeSeconds: 24 * 3600,
  sizeChangePercent: 50,
  sizeWindowSeconds: 7 * 86_400,
  maxDrillAgeSeconds: 7 * 86_400,
  maxCheckAgeSeconds: 7 * 86_400,
  maxWalAgeSeconds: 15 * 60,
});

/** The thresholds: `overrides` (the flags), over the configuration file's `alerts` section, over the defaults. */
export function alertThresholds(
  section: AlertsSection = {},
  overrides: Partial<AlertThresholds> = {},
): AlertThresholds {
  const fromFile: Partial<AlertThresholds> = {
    maxAgeSeconds: section['max-age'],
    sizeChangePercent: section['size-change'],
    sizeWindowSeconds: section['size-window'],
    maxDrillAgeSeconds: section['max-drill-age'],
    maxCheckAgeSeconds: section['max-check-age'],
    maxWalAgeSeconds: section['max-wal-age'],
    rtoSeconds: section.rto,
    rpoSeconds: section.rpo,
  };
  const thresholds: AlertThresholds = { ...DEFAULT_ALERT_THRESHOLDS };
  for (const layer of [fromFile, overrides]) {
    for (const [key, value] of Object.entries(layer) as [keyof AlertThresholds, number | undefined][]) {
      if (value !== undefined) thresholds[key] = value;
    }
  }
  return thresholds;
}

/** One rule of a Prometheus rules file. */
export interface AlertRule {
  alert: string;
  expr: string;
  for?: string;
  labels: { severity: 'critical' | 'warning' };
  annotations: { summary: string; description: string };
}

export interface RuleGroup {
  name: string;
  rules: AlertRule[];
}

/** The labels that tell one group of snapshots from another. */
const GROUP = 'repository, host, kind, name, env';
/** The labels a series about one host's environment has when its failure came before it knew its database. */
const HOST_ENV = 'repository, host, env';

const backup = operationMetricNames('backup');
const drill = operationMetricNames('drill');
const check = operationMetricNames('check');
const newestSnapshot = REPOSITORY_METRICS.newestTime.name;
/** Both places a backup's time comes from: the run's own metrics, and `strongbox metrics`. */
const backupTimes = (matchers = '') =>
  `{__name__=~"${backup.lastSuccess}|${newestSnapshot}"${matchers ? `, ${matchers}` : ''}}`;
const BACKUP_TIMES = backupTimes();

/** What a series is about, in words, whichever of its labels it has. */
const where =
  '{{ with $labels.name }}{{ . }}{{ with $labels.kind }} ({{ . }}){{ end }} {{ end }}' +
  '{{ with $labels.host }}on {{ . }} {{ end }}{{ with $labels.env }}(env {{ . }}) {{ end }}' +
  'in repository {{ $labels.repository }}';

/**
 * The rule that says an operation failed: its last failure is newer than its last success, or it
 * never succeeded. A failure that came before the command knew its group (the repository did not
 * open, so no database name yet) has no `name` label: it is compared with the newest success on
 * the same host and environment, so that it clears once the operation works there again.
 */
function failedRule(
  operation: Operation,
  alert: string,
  severity: 'critical' | 'warning',
  summary: string,
): AlertRule {
  const names = operationMetricNames(operation);
  return {
    alert,
    expr:
      `(\n  ${names.lastFailure}{name!=""}\n    > (${names.lastSuccess} or ${names.lastFailure} * 0)\n)\nor\n` +
      `(\n  ${names.lastFailure}{name=""}\n    > on(${HOST_ENV}) group_left()\n` +
      `      max by (${HOST_ENV}) (${names.lastSuccess})\n)\nor\n` +
      `(\n  ${names.lastFailure}{name=""}\n    unless on(${HOST_ENV}) ${names.lastSuccess}\n)`,
    labels: { severity },
    annotations: {
      summary,
      description: `The last ${operation} of ${where} failed at {{ $value | humanizeTimestamp }}, and none has succeeded since.`,
    },
  };
}

/** An objective rule: the measured value above the drill's own objective, or the default one. */
function objectiveRule(
  alert: string,
  measured: string,
  objective: string,
  fallbackSeconds: number | undefined,
  what: string,
): AlertRule {
  const target =
    fallbackSeconds === undefined ? objective : `(${objective} or ${measured} * 0 + ${fallbackSeconds})`;
  return {
    alert,
    expr: `${measured} > ${target}`,
    labels: { severity: 'warning' },
    annotations: {
      summary: `Drill ${what} above its objective`,
      description: `The last drill of ${where} measured a ${what} of {{ $value | humanizeDuration }}, above its objective.`,
    },
  };
}

/** The window of increase() over PostgreSQL's archive failures: a few publications of `wal status`. */
const ARCHIVE_FAILURE_WINDOW = '15m';

/** The rules about the WAL archived into a repository (metrics.ts, WAL_METRICS). */
function walRules(thresholds: AlertThresholds, window: string): RuleGroup {
  const maxWalAge = thresholds.maxWalAgeSeconds;
  const lastArchived = WAL_METRICS.lastArchived.name;
  const inRepository = 'repository {{ $labels.repository }}';
  return {
    name: 'strongbox-wal',
    rules: [
      {
        alert: 'StrongboxWalArchiveStale',
        // The newest of every timeline: the timelines before a promotion stop growing, rightly.
        expr: `time() - max by (repository) (${lastArchived}) > ${maxWalAge}`,
        labels: { severity: 'critical' },
        annotations: {
          summary: `No WAL archived for ${formatDuration(maxWalAge)}`,
          description: `The newest WAL segment in ${inRepository} was archived {{ $value | humanizeDuration }} ago: what the cluster wrote since is lost with it. Check \`strongbox wal status --url\`, the WAL daemon and pg_stat_archiver.`,
        },
      },
      {
        alert: 'StrongboxWalGaps',
        expr: `max by (repository, timeline) (${WAL_METRICS.gaps.name}) > 0`,
        labels: { severity: 'critical' },
        annotations: {
          summary: 'WAL segments missing from the archive',
          description: `{{ $value }} gap(s) in the WAL of timeline {{ $labels.timeline }} in ${inRepository} since its newest base backup began: a recovery replaying past one stops there. Take a new base backup.`,
        },
      },
      {
        alert: 'StrongboxWalArchiveFailing',
        expr: `max by (repository) (increase(${WAL_METRICS.archiveFailures.name}[${ARCHIVE_FAILURE_WINDOW}])) > 0`,
        labels: { severity: 'warning' },
        annotations: {
          summary: 'PostgreSQL fails to archive WAL',
          description: `PostgreSQL counted {{ $value | humanize }} failed archive_command runs into ${inRepository} in the last ${ARCHIVE_FAILURE_WINDOW} (pg_stat_archiver): it keeps the segments in pg_wal and tries again.`,
        },
      },
      {
        alert: 'StrongboxWalMetricsVanished',
        expr:
          `max by (repository) (max_over_time(${lastArchived}[${window}]))\n` +
          `  unless max by (repository) (${lastArchived})`,
        for: '15m',
        labels: { severity: 'warning' },
        annotations: {
          summary: 'WAL metrics of a repository have vanished',
          description: `The WAL archived into ${inRepository} was reported within the last ${window} and is no longer: \`strongbox wal status\` or \`strongbox metrics\` no longer publishes, or is no longer scraped.`,
        },
      },
    ],
  };
}

/** The rules of `strongbox generate alerts`. */
export function alertRules(thresholds: AlertThresholds = DEFAULT_ALERT_THRESHOLDS): RuleGroup[] {
  const maxAge = thresholds.maxAgeSeconds;
  const window = formatDuration(thresholds.sizeWindowSeconds);
  const share = thresholds.sizeChangePercent / 100;
  const size = 'strongbox_backup_size_bytes';
  const average = `avg_over_time(${size}[${window}])`;
  return [
    {
      name: 'strongbox-backups',
      rules: [
        failedRule('backup', 'StrongboxBackupFailed', 'critical', 'Backup failed'),
        {
          alert: 'StrongboxBackupMissing',
          expr: `time() - max by (${GROUP}) (${BACKUP_TIMES}) > ${maxAge}`,
          labels: { severity: 'critical' },
          annotations: {
            summary: `No successful backup for ${formatDuration(maxAge)}`,
            description: `The last successful backup of ${where} is {{ $value | humanizeDuration }} old.`,
          },
        },
        {
          alert: 'StrongboxBackupMetricsAbsent',
          expr: `absent(${BACKUP_TIMES})`,
          for: '1h',
          labels: { severity: 'critical' },
          annotations: {
            summary: 'No backup metrics at all',
            description: `Neither ${backup.lastSuccess} nor ${newestSnapshot} exists: backups are not running, or their metrics are not published or not scraped.`,
          },
        },
        {
          alert: 'StrongboxBackupMetricsVanished',
          expr:
            `max by (${GROUP}) (max_over_time(${BACKUP_TIMES}[${window}]))\n` +
            `  unless max by (${GROUP}) (${BACKUP_TIMES})`,
          for: '15m',
          labels: { severity: 'warning' },
          annotations: {
            summary: 'Backup metrics of a group have vanished',
            description: `The backups of ${where} were reported within the last ${window} and are no longer: their metrics file or Pushgateway group is gone, or the group's snapshots were all removed.`,
          },
        },
        {
          alert: 'StrongboxBackupSizeAnomaly',
          expr: `abs(${size} - ${average})\n  > ${share} * ${average}`,
          for: '15m',
          labels: { severity: 'warning' },
          annotations: {
            summary: `Backup size more than ${thresholds.sizeChangePercent}% off its ${window} average`,
            description: `The last backup of ${where} read {{ $value | humanize1024 }}B more or less than its ${window} average.`,
          },
        },
      ],
    },
    {
      name: 'strongbox-drills',
      rules: [
        failedRule('drill', 'StrongboxDrillFailed', 'critical', 'Restore drill failed'),
        {
          alert: 'StrongboxDrillTooOld',
          expr: `time() - max by (${GROUP}) (${drill.lastSuccess}) > ${thresholds.maxDrillAgeSeconds}`,
          labels: { severity: 'warning' },
          annotations: {
            summary: `No successful restore drill for ${formatDuration(thresholds.maxDrillAgeSeconds)}`,
            description: `The last successful drill of ${where} is {{ $value | humanizeDuration }} old.`,
          },
        },
        {
          alert: 'StrongboxDrillNever',
          expr:
            `max by (${GROUP}) (${backupTimes('kind="postgres"')})\n` +
            `  unless on(${GROUP}) max by (${GROUP}) (${drill.lastSuccess})`,
          for: formatDuration(thresholds.maxDrillAgeSeconds),
          labels: { severity: 'warning' },
          annotations: {
            summary: `A database backed up for ${formatDuration(thresholds.maxDrillAgeSeconds)} was never proven restorable`,
            description: `${where}: backed up, but no restore drill has succeeded.`,
          },
        },
        objectiveRule(
          'StrongboxDrillRtoAboveObjective',
          'strongbox_drill_rto_seconds',
          'strongbox_drill_rto_objective_seconds',
          thresholds.rtoSeconds,
          'recovery time',
        ),
        objectiveRule(
          'StrongboxDrillRpoAboveObjective',
          'strongbox_drill_rpo_seconds',
          'strongbox_drill_rpo_objective_seconds',
          thresholds.rpoSeconds,
          'recovery point',
        ),
      ],
    },
    {
      name: 'strongbox-checks',
      rules: [
        failedRule('check', 'StrongboxCheckFailed', 'critical', 'Repository check failed'),
        {
          alert: 'StrongboxCheckTooOld',
          expr: `time() - max by (repository) (${check.lastSuccess}) > ${thresholds.maxCheckAgeSeconds}`,
          labels: { severity: 'warning' },
          annotations: {
            summary: `No successful repository check for ${formatDuration(thresholds.maxCheckAgeSeconds)}`,
            description: `The last successful check ${where} is {{ $value | humanizeDuration }} old.`,
          },
        },
        {
          alert: 'StrongboxCheckNever',
          expr:
            `max by (repository) (${BACKUP_TIMES})\n` +
            `  unless on(repository) max by (repository) (${check.lastSuccess})`,
          for: formatDuration(thresholds.maxCheckAgeSeconds),
          labels: { severity: 'warning' },
          annotations: {
            summary: `A repository backed up to for ${formatDuration(thresholds.maxCheckAgeSeconds)} was never checked`,
            description: `Backups ${where}, but no successful \`strongbox check\`.`,
          },
        },
      ],
    },
    walRules(thresholds, window),
  ];
}

/** The rules file, as `promtool check rules` and Prometheus's rule_files read it. */
export function renderAlertRules(thresholds: AlertThresholds = DEFAULT_ALERT_THRESHOLDS): string {
  const document = new (yaml().Document)({ groups: alertRules(thresholds) });
  document.commentBefore =
    ' Prometheus alert rules for strongbox (`strongbox generate alerts`; docs/METRICS.md).\n' +
    ` Thresholds: backups within ${formatDuration(thresholds.maxAgeSeconds)}, size within ${thresholds.sizeChangePercent}% of its ${formatDuration(thresholds.sizeWindowSeconds)} average,` +
    ` drills within ${formatDuration(thresholds.maxDrillAgeSeconds)}, checks within ${formatDuration(thresholds.maxCheckAgeSeconds)},` +
    ` WAL archived within ${formatDuration(thresholds.maxWalAgeSeconds)}.`;
  return document.toString({ lineWidth: 0 });
}
