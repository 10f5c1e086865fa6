import { DEFAULT_ALERT_THRESHOLDS, type AlertThresholds } from './alert-rules.ts';
import { NOTIFICATION_FAILURES, operationMetricNames, REPOSITORY_METRICS, WAL_METRICS } from './metrics.ts';

/**
 * The Grafana dashboard of `strongbox generate grafana`: one row each for backups, drills, the
 * repository and its WAL archive, filtered by repository, environment, host and name. Its queries name only metrics
 * of metrics.ts (a test holds it to that).
 */

const backup = operationMetricNames('backup');
const drill = operationMetricNames('drill');
const check = operationMetricNames('check');

const GROUP = 'repository, host, kind, name, env';
/** The dashboard's variables as label matchers. */
const FILTER = 'repository=~"$repository", env=~"$env", host=~"$host", name=~"$name"';
const REPOSITORY_FILTER = 'repository=~"$repository"';
const BACKUP_TIMES = `{__name__=~"${backup.lastSuccess}|${REPOSITORY_METRICS.newestTime.name}", ${FILTER}}`;

const DATASOURCE = { type: 'prometheus', uid: '${datasource}' };

interface Target {
  expr: string;
  legendFormat?: string;
  instant?: boolean;
  format?: 'table' | 'time_series';
}

interface PanelOptions {
  title: string;
  description: string;
  targets: Target[];
  unit: string;
  /** Values from which a cell turns orange and then red. */
  thresholds?: [number, number];
}

const GROUP_LEGEND = '{{name}} ({{kind}}) {{host}} {{env}}';

function grid(width: number, height: number, row: { y: number; x: number }) {
  const position = { h: height, w: width, x: row.x, y: row.y };
  row.x += width;
  if (row.x >= 24) {
    row.x = 0;
    row.y += height;
  }
  return position;
}

function thresholdSteps(thresholds: [number, number] | undefined) {
  return {
    mode: 'absolute',
    steps: [
      { color: 'green', value: null },
      ...(thresholds
        ? [
            { color: 'orange', value: thresholds[0] },
            { color: 'red', value: thresholds[1] },
          ]
        : []),
    ],
  };
}

function targets(list: Target[]) {
  return list.map((target, index) => ({
    datasource: DATASOURCE,
    refId: String.fromCharCode(65 + index),
    ...target,
  }));
}

/** A table of one instant value per group. */
function table(options: PanelOptions, at: { y: number; x: number }, width = 12) {
  return {
    type: 'table',
    title: options.title,
    description: options.description,
    datasource: DATASOURCE,
    gridPos: grid(width, 8, at),
    targets: targets(options.targets.map((target) => ({ ...target, instant: true, format: 'table' }))),
    fieldConfig: {
      defaults: {
        unit: options.unit,
        thresholds: thresholdSteps(options.thresholds),
        custom: { cellOptions: { type: 'color-background' } },
      },
      overrides: [],
    },
    transformations: [
      {
        id: 'organize',
        options: { excludeByName: { Time: true, job: true, instance: true, __name__: true } },
      },
    ],
    options: { showHeader: true, sortBy: [{ displayName: 'Value', desc: true }] },
  };
}

function timeseries(options: PanelOptions, at: { y: number; x: number }, width = 12) {
  return {
    type: 'timeseries',
    title: options.title,
    description: options.description,
    datasource: DATASOURCE,
    gridPos: grid(width, 8, at),
    targets: targets(options.targets),
    fieldConfig: {
      defaults: {
        unit: options.unit,
        thresholds: thresholdSteps(options.thresholds),
        custom: { lineInterpolation: 'stepAfter' },
      },
      overrides: [],
    },
    options: { legend: { displayMode: 'table', placement: 'bottom', calcs: ['lastNotNull'] } },
  };
}

function stat(options: PanelOptions, at: { y: number; x: number }, width = 6) {
  return {
    type: 'stat',
    title: options.title,
    description: options.description,
    datasource: DATASOURCE,
    gridPos: { ...grid(width, 4, at), h: 4 },
    targets: targets(options.targets.map((target) => ({ ...target, instant: true }))),
    fieldConfig: {
      defaults: { unit: options.unit, thresholds: thresholdSteps(options.thresholds) },
      overrides: [],
    },
    options: {
      reduceOptions: { calcs: ['lastNotNull'], fields: '', values: false },
      colorMode: 'background',
    },
  };
}

function row(title: string, at: { y: number; x: number }) {
  const panel = { type: 'row', title, collapsed: false, panels: [], gridPos: { h: 1, w: 24, x: 0, y: at.y } };
  at.y += 1;
  at.x = 0;
  return panel;
}

function variable(name: string, label: string, query: string) {
  return {
    name,
    label,
    type: 'query',
    datasource: DATASOURCE,
    query: { query, refId: `${name}-query` },
    definition: query,
    refresh: 2,
    multi: true,
    includeAll: true,
    allValue: '.*',
    current: { selected: true, text: ['All'], value: ['$__all'] },
    sort: 1,
  };
}

/** The dashboard, as Grafana imports it (Dashboards → New → Import). */
export function grafanaDashboard(
  thresholds: AlertThresholds = DEFAULT_ALERT_THRESHOLDS,
): Record<string, unknown> {
  const at = { y: 0, x: 0 };
  const maxAge = thresholds.maxAgeSeconds;
  const maxWalAge = thresholds.maxWalAgeSeconds;
  const panels = [
    row('Backups', at),
    stat(
      {
        title: 'Oldest newest backup',
        description: 'Age of the newest successful backup of the group that has gone longest without one.',
        targets: [{ expr: `max(time() - max by (${GROUP}) (${BACKUP_TIMES}))` }],
        unit: 's',
        thresholds: [maxAge * 0.75, maxAge],
      },
      at,
    ),
    stat(
      {
        title: 'Failing groups',
        description: 'Groups whose last backup failed after their last success.',
        targets: [
          {
            expr: `count(${backup.lastFailure}{${FILTER}} > (${backup.lastSuccess}{${FILTER}} or ${backup.lastFailure}{${FILTER}} * 0)) or vector(0)`,
          },
        ],
        unit: 'none',
        thresholds: [1, 1],
      },
      at,
    ),
    stat(
      {
        title: 'Backups in range',
        description: 'Successful backups in the dashboard\u2019s time range.',
        targets: [{ expr: `sum(increase(${backup.total}{${FILTER}, result="success"}[$__range]))` }],
        unit: 'none',
      },
      at,
    ),
    stat(
      {
        title: 'Failed backups in range',
        description: 'Failed backups in the dashboard\u2019s time range.',
        targets: [{ expr: `sum(increase(${backup.total}{${FILTER}, result="failure"}[$__range]))` }],
        unit: 'none',
        thresholds: [1, 1],
      },
      at,
    ),
    table(
      {
        title: 'Time since the last successful backup',
        description: `Per group; red beyond ${maxAge} s (the StrongboxBackupMissing alert).`,
        targets: [{ expr: `time() - max by (${GROUP}) (${BACKUP_TIMES})` }],
        unit: 's',
        thresholds: [maxAge * 0.75, maxAge],
      },
      at,
    ),
    table(
      {
        title: 'Last failed backup',
        description: 'Groups whose last backup failed: when it failed.',
        targets: [
          {
            expr: `(${backup.lastFailure}{${FILTER}} > (${backup.lastSuccess}{${FILTER}} or ${backup.lastFailure}{${FILTER}} * 0)) * 1000`,
          },
        ],
        unit: 'dateTimeAsIso',
      },
      at,
    ),
    timeseries(
      {
        title: 'Backup size',
        description: `Bytes read from the source by each successful backup, and its ${thresholds.sizeWindowSeconds / 86_400}-day average (the size anomaly alert compares the two).`,
        targets: [
          { expr: `strongbox_backup_size_bytes{${FILTER}}`, legendFormat: GROUP_LEGEND },
          {
            expr: `avg_over_time(strongbox_backup_size_bytes{${FILTER}}[${thresholds.sizeWindowSeconds}s])`,
            legendFormat: `average ${GROUP_LEGEND}`,
          },
        ],
        unit: 'bytes',
      },
      at,
    ),
    timeseries(
      {
        title: 'Stored per backup',
        description: 'Bytes each backup added to the repository, after deduplication and compression.',
        targets: [{ expr: `strongbox_backup_stored_bytes{${FILTER}}`, legendFormat: GROUP_LEGEND }],
        unit: 'bytes',
      },
      at,
    ),
    timeseries(
      {
        title: 'Backup duration',
        description: 'Seconds the last backup of each group took.',
        targets: [{ expr: `${backup.duration}{${FILTER}}`, legendFormat: GROUP_LEGEND }],
        unit: 's',
      },
      at,
    ),
    timeseries(
      {
        title: 'Backups by result',
        description: 'Backups per hour, by result.',
        targets: [
          {
            expr: `sum by (result) (increase(${backup.total}{${FILTER}}[1h]))`,
            legendFormat: '{{result}}',
          },
        ],
        unit: 'none',
      },
      at,
    ),
    row('Restore drills', at),
    table(
      {
        title: 'Time since the last successful drill',
        description: `Per database; red beyond ${thresholds.maxDrillAgeSeconds} s (the StrongboxDrillTooOld alert).`,
        targets: [{ expr: `time() - max by (${GROUP}) (${drill.lastSuccess}{${FILTER}})` }],
        unit: 's',
        thresholds: [thresholds.maxDrillAgeSeconds * 0.75, thresholds.maxDrillAgeSeconds],
      },
      at,
    ),
    table(
      {
        title: 'Last failed drill',
        description: 'Databases whose last drill failed: when it failed.',
        targets: [
          {
            expr: `(${drill.lastFailure}{${FILTER}} > (${drill.lastSuccess}{${FILTER}} or ${drill.lastFailure}{${FILTER}} * 0)) * 1000`,
          },
        ],
        unit: 'dateTimeAsIso',
      },
      at,
    ),
    timeseries(
      {
        title: 'Recovery time (RTO)',
        description: 'Measured by each drill (fetch, restore, verify), beside the objective it was held to.',
        targets: [
          { expr: `strongbox_drill_rto_seconds{${FILTER}}`, legendFormat: GROUP_LEGEND },
          {
            expr: `strongbox_drill_rto_objective_seconds{${FILTER}}`,
            legendFormat: `objective ${GROUP_LEGEND}`,
          },
        ],
        unit: 's',
      },
      at,
    ),
    timeseries(
      {
        title: 'Recovery point (RPO)',
        description: 'Age of the newest restorable data at each drill, beside the objective it was held to.',
        targets: [
          { expr: `strongbox_drill_rpo_seconds{${FILTER}}`, legendFormat: GROUP_LEGEND },
          {
            expr: `strongbox_drill_rpo_objective_seconds{${FILTER}}`,
            legendFormat: `objective ${GROUP_LEGEND}`,
          },
        ],
        unit: 's',
      },
      at,
    ),
    row('Repository', at),
    stat(
      {
        title: 'Repository size',
        description: 'Bytes of every stored object (`strongbox metrics`).',
        targets: [{ expr: `sum(${REPOSITORY_METRICS.size.name}{${REPOSITORY_FILTER}})` }],
        unit: 'bytes',
      },
      at,
    ),
    stat(
      {
        title: 'Snapshots',
        description: 'Snapshots in the repository (`strongbox metrics`).',
        targets: [{ expr: `sum(${REPOSITORY_METRICS.snapshots.name}{${REPOSITORY_FILTER}})` }],
        unit: 'none',
      },
      at,
    ),
    stat(
      {
        title: 'Since the last successful check',
        description: `Red beyond ${thresholds.maxCheckAgeSeconds} s (the StrongboxCheckTooOld alert).`,
        targets: [{ expr: `max(time() - max by (repository) (${check.lastSuccess}{${REPOSITORY_FILTER}}))` }],
        unit: 's',
        thresholds: [thresholds.maxCheckAgeSeconds * 0.75, thresholds.maxCheckAgeSeconds],
      },
      at,
    ),
    stat(
      {
        title: 'Failed notifications in range',
        description: 'Notifications that could not be delivered in the dashboard\u2019s time range.',
        targets: [
          {
            expr: `sum(increase(${NOTIFICATION_FAILURES.name}{${REPOSITORY_FILTER}}[$__range])) or vector(0)`,
          },
        ],
        unit: 'none',
        thresholds: [1, 1],
      },
      at,
    ),
    timeseries(
      {
        title: 'Repository size over time',
        description: 'Bytes of every stored object, as `strongbox metrics` reported them.',
        targets: [
          { expr: `${REPOSITORY_METRICS.size.name}{${REPOSITORY_FILTER}}`, legendFormat: '{{repository}}' },
        ],
        unit: 'bytes',
      },
      at,
    ),
    table(
      {
        title: 'Snapshots per group',
        description: 'How many snapshots each group keeps, and its newest one\u2019s size.',
        targets: [
          { expr: `${REPOSITORY_METRICS.groupSnapshots.name}{${FILTER}}` },
          { expr: `${REPOSITORY_METRICS.newestSize.name}{${FILTER}}` },
        ],
        unit: 'none',
      },
      at,
    ),
    row('WAL archive', at),
    stat(
      {
        title: 'Since the last archived WAL',
        description: `Age of the newest WAL segment in the repositories shown; red beyond ${maxWalAge} s (the StrongboxWalArchiveStale alert).`,
        targets: [
          {
            expr: `max(time() - max by (repository) (${WAL_METRICS.lastArchived.name}{${REPOSITORY_FILTER}}))`,
          },
        ],
        unit: 's',
        thresholds: [maxWalAge / 2, maxWalAge],
      },
      at,
    ),
    stat(
      {
        title: 'WAL gaps',
        description:
          'Runs of missing segments since the newest base backup began, every timeline (the StrongboxWalGaps alert).',
        targets: [
          {
            expr: `sum(max by (repository, timeline) (${WAL_METRICS.gaps.name}{${REPOSITORY_FILTER}})) or vector(0)`,
          },
        ],
        unit: 'none',
        thresholds: [1, 1],
      },
      at,
    ),
    stat(
      {
        title: 'Archive failures in range',
        description:
          'Failed archive_command runs PostgreSQL counted in the dashboard\u2019s time range (pg_stat_archiver, from `wal status --url`).',
        targets: [
          {
            expr: `sum(increase(${WAL_METRICS.archiveFailures.name}{${REPOSITORY_FILTER}}[$__range])) or vector(0)`,
          },
        ],
        unit: 'none',
        thresholds: [1, 1],
      },
      at,
    ),
    stat(
      {
        title: 'Recovery window',
        description:
          'The span a point-in-time recovery can reach, in the repository shown whose span is shortest (its widest timeline); 0 without a base backup.',
        targets: [
          {
            expr: `min(max by (repository) (${WAL_METRICS.recoveryWindow.name}{${REPOSITORY_FILTER}}))`,
          },
        ],
        unit: 's',
      },
      at,
    ),
    table(
      {
        title: 'WAL per timeline',
        description: 'Segments archived, gaps and the recovery window of each timeline.',
        targets: [
          { expr: `${WAL_METRICS.segments.name}{${REPOSITORY_FILTER}}` },
          { expr: `${WAL_METRICS.gaps.name}{${REPOSITORY_FILTER}}` },
          { expr: `${WAL_METRICS.recoveryWindow.name}{${REPOSITORY_FILTER}}` },
        ],
        unit: 'none',
      },
      at,
    ),
    timeseries(
      {
        title: 'Time since the last archived WAL',
        description: `Per repository; the StrongboxWalArchiveStale alert fires beyond ${maxWalAge} s.`,
        targets: [
          {
            expr: `time() - max by (repository) (${WAL_METRICS.lastArchived.name}{${REPOSITORY_FILTER}})`,
            legendFormat: '{{repository}}',
          },
        ],
        unit: 's',
        thresholds: [maxWalAge / 2, maxWalAge],
      },
      at,
    ),
  ];
  const groupSelector = `{__name__=~"${backup.lastSuccess}|${REPOSITORY_METRICS.newestTime.name}"}`;
  return {
    title: 'strongbox backups',
    uid: 'strongbox-backups',
    description: 'Backups, restore drills, repositories and WAL archives of strongbox (docs/METRICS.md).',
    tags: ['strongbox', 'backup'],
    editable: true,
    schemaVersion: 39,
    version: 1,
    time: { from: 'now-7d', to: 'now' },
    refresh: '5m',
    timezone: '',
    annotations: { list: [] },
    templating: {
      list: [
        {
          name: 'datasource',
          label: 'Data source',
          type: 'datasource',
          query: 'prometheus',
          current: {},
          hide: 0,
        },
        variable('repository', 'Repository', `label_values(${groupSelector}, repository)`),
        variable('env', 'Environment', `label_values(${groupSelector}, env)`),
        variable('host', 'Host', `label_values(${groupSelector}, host)`),
        variable('name', 'Name', `label_values(${groupSelector}, name)`),
      ],
    },
    // Grafana wants each panel's id unique within the dashboard.
    panels: panels.map((panel, index) => ({ id: index + 1, ...panel })),
  };
}

/** The dashboard as the JSON file Grafana imports. */
export function renderGrafanaDashboard(thresholds?: AlertThresholds): string {
  return `${JSON.stringify(grafanaDashboard(thresholds), null, 2)}\n`;
}
