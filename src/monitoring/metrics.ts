/**
 * Every metric strongbox publishes (docs/METRICS.md), and the Prometheus text exposition format
 * they are written in: node_exporter's textfile collector and the Pushgateway read it, and
 * `strongbox metrics` prints it. Nothing here does input or output.
 */

export type MetricType = 'counter' | 'gauge' | 'untyped';

export interface MetricDefinition {
  name: string;
  type: MetricType;
  help: string;
  /** The labels its series carry, in the order they are written; a label without a value is left out. */
  labels: readonly string[];
}

export type Labels = Readonly<Record<string, string>>;

/** One series' value: a line of the exposition format. */
export interface Sample {
  name: string;
  labels: Labels;
  value: number;
}

/** The operations whose every run is counted and timed. */
export const OPERATIONS = ['backup', 'restore', 'drill', 'check', 'forget', 'prune', 'copy'] as const;
export type Operation = (typeof OPERATIONS)[number];

/** What a series is about: the repository, and the group (host, kind, name, env) of its snapshots. */
export const GROUP_LABELS = ['repository', 'host', 'kind', 'name', 'env'] as const;
export type GroupLabel = (typeof GROUP_LABELS)[number];
export type GroupLabels = Partial<Record<GroupLabel, string>>;

const PLURAL: Record<Operation, string> = {
  backup: 'backups',
  restore: 'restores',
  drill: 'drills',
  check: 'checks',
  forget: 'forgets',
  prune: 'prunes',
  copy: 'copies',
};

/** The names of the four series every operation has. */
export function operationMetricNames(operation: Operation) {
  return {
    lastSuccess: `strongbox_${operation}_last_success_timestamp_seconds`,
    lastFailure: `strongbox_${operation}_last_failure_timestamp_seconds`,
    duration: `strongbox_${operation}_duration_seconds`,
    total: `strongbox_${PLURAL[operation]}_total`,
  };
}

function operationMetrics(operation: Operation): MetricDefinition[] {
  const names = operationMetricNames(operation);
  return [
    {
      name: names.lastSuccess,
      type: 'gauge',
      help: `Unix time the last successful ${operation} ended.`,
      labels: GROUP_LABELS,
    },
    {
      name: names.lastFailure,
      type: 'gauge',
      help: `Unix time the last failed ${operation} ended.`,
      labels: GROUP_LABELS,
    },
    {
      name: names.duration,
      type: 'gauge',
      help: `Seconds the last ${operation} took, whether it succeeded or not.`,
      labels: GROUP_LABELS,
    },
    {
      name: names.total,
      type: 'counter',
      help: `Runs of ${operation}, by result (success or failure).`,
      labels: [...GROUP_LABELS, 'result'],
    },
  ];
}

const gauge = (name: string, help: string, labels: readonly string[] = GROUP_LABELS): MetricDefinition => ({
  name,
  type: 'gauge',
  help,
  labels,
});

/**
 * An operation's figures (CommandOutcome.figures) that become gauges of their own: the figure
 * F of operation OP is the gauge strongbox_OP_F. Figures without a gauge here are not published.
 */
const FIGURE_METRICS: readonly MetricDefinition[] = [
  gauge('strongbox_backup_size_bytes', 'Bytes read from the source by the last successful backup.'),
  gauge(
    'strongbox_backup_stored_bytes',
    'Bytes the last successful backup added to the repository (after deduplication, compression).',
  ),
  gauge(
    'strongbox_drill_rto_seconds',
    'Recovery time measured by the last drill: fetch, restore and verify.',
  ),
  gauge(
    'strongbox_drill_rpo_seconds',
    'Recovery point of the last drill: the age of the newest restorable data when it ran.',
  ),
  gauge('strongbox_drill_rto_objective_seconds', 'The recovery time objective the last drill was held to.'),
  gauge('strongbox_drill_rpo_objective_seconds', 'The recovery point objective the last drill was held to.'),
];

/** Gauges of the repository as a whole, computed on demand by `strongbox metrics`. */
export const REPOSITORY_METRICS = {
  size: gauge('strongbox_repository_size_bytes', 'Bytes of every object stored in the repository.', [
    'repository',
  ]),
  snapshots: gauge('strongbox_repository_snapshots', 'Snapshots in the repository.', ['repository']),
  groupSnapshots: gauge('strongbox_snapshots', 'Snapshots of the group in the repository.'),
  newestTime: gauge(
    'strongbox_snapshot_newest_timestamp_seconds',
    "Unix time of the group's newest snapshot (the time it records).",
  ),
  newestSize: gauge(
    'strongbox_snapshot_newest_size_bytes',
    "Bytes read from the source by the group's newest snapshot.",
  ),
} as const;

/** What a WAL series is about: the repository a cluster archives into, and the timeline. */
export const WAL_LABELS = ['repository', 'kind', 'timeline'] as const;
/** The kind label of every WAL series, as `wal push` names its subject. */
export const WAL_KIND = 'wal';

/**
 * The WAL archive of the cluster archiving into a repository, per timeline: what `wal status`
 * finds (postgres/wal/status.ts), published by `strongbox metrics` and `wal status`.
 */
export const WAL_METRICS = {
  lastArchived: gauge(
    'strongbox_wal_last_archived_timestamp_seconds',
    "Unix time the timeline's newest segment was archived.",
    WAL_LABELS,
  ),
  segments: gauge('strongbox_wal_segments', 'Segments of the timeline in the archive.', WAL_LABELS),
  gaps: gauge(
    'strongbox_wal_gaps',
    'Runs of missing segments on the timeline since its newest base backup began (all of them without one): replay stops at each.',
    WAL_LABELS,
  ),
  recoveryWindow: gauge(
    'strongbox_wal_recovery_window_seconds',
    'Seconds of the timeline a point-in-time recovery can reach: from the end of the oldest base backup replayable without a gap to the newest segment; 0 without one.',
    WAL_LABELS,
  ),
  archiveFailures: {
    name: 'strongbox_wal_archive_failures_total',
    type: 'counter',
    help: 'Failed attempts to archive a WAL file, as PostgreSQL counts them (pg_stat_archiver.failed_count, since its statistics were reset); from wal status --url.',
    labels: ['repository', 'kind'],
  },
} as const satisfies Record<string, MetricDefinition>;

export const NOTIFICATION_FAILURES = {
  name: 'strongbox_notification_failures_total',
  type: 'counter',
  help: 'Notifications that could not be delivered, by channel.',
  labels: [...GROUP_LABELS, 'channel'],
} as const satisfies MetricDefinition;

/** Every metric strongbox publishes under its own names, in the order they are written. */
export const METRICS: readonly MetricDefinition[] = [
  ...OPERATIONS.flatMap(operationMetrics),
  ...FIGURE_METRICS,
  ...Object.values(REPOSITORY_METRICS),
  ...Object.values(WAL_METRICS),
  NOTIFICATION_FAILURES,
];

const DEFINITIONS = new Map(METRICS.map((definition) => [definition.name, definition]));

/** The definition of `name`, if strongbox defines such a metric. */
export function metricDefinition(name: string): MetricDefinition | undefined {
  return DEFINITIONS.get(name);
}

/** The gauge an operation's figure becomes (`strongbox_backup_size_bytes` for backup's size_bytes), if any. */
export function figureMetric(operation: Operation, figure: string): string | undefined {
  const name = `strongbox_${operation}_${figure}`;
  return FIGURE_METRICS.some((definition) => definition.name === name) ? name : undefined;
}

/** The labels of a series about `group`: those with a value, in GROUP_LABELS order. */
export function groupLabels(group: GroupLabels): Labels {
  const labels: Record<string, string> = {};
  for (const label of GROUP_LABELS) {
    const value = group[label];
    if (value) labels[label] = value;
  }
  return labels;
}

/** One run of an operation, as metrics see it. */
export interface OperationRun {
  operation: Operation;
  result: 'success' | 'failure';
  finished: Date;
  durationSeconds: number;
  group: GroupLabels;
  /** By name, as CommandOutcome.figures: those with a gauge (figureMetric) are published. */
  figures: Readonly<Record<string, number>>;
  /**
   * Of the notifications sent about the run, by channel (webhook, slack, email), how many could
   * not be delivered: 0 for a channel sent to without fault. Absent: none was sent.
   */
  notificationFailures?: Readonly<Record<string, number>>;
}

const RESULTS = ['success', 'failure'] as const;

/** Names of every series an operation's run may write: its own, and its figures'. */
export function operationSeriesNames(operation: Operation): Set<string> {
  const own = Object.values(operationMetricNames(operation));
  const figures = FIGURE_METRICS.map((definition) => definition.name).filter((name) =>
    name.startsWith(`strongbox_${operation}_`),
  );
  return new Set([...own, ...figures]);
}

/**
 * The series of `run`'s operation and group after it: what `previous` held (the last published
 * values, read back from where they went) updated by this run. Counters go on from their previous
 * values, the last success survives a failure and the other way round, and a figure this run did
 * not measure keeps its last value. Both results' counters are always there, so that rate() and
 * increase() see a failure counter start from 0.
 */
export function operationSamples(run: OperationRun, previous: readonly Sample[]): Sample[] {
  const names = operationMetricNames(run.operation);
  const labels = groupLabels(run.group);
  const key = (name: string, extra: Labels = {}) => seriesKey({ name, labels: { ...labels, ...extra } });
  const series = new Map<string, Sample>();
  const ours = operationSeriesNames(run.operation);
  for (const sample of previous) {
    const extra = sample.name === names.total ? 'result' : undefined;
    if (ours.has(sample.name) && sameLabels(sample.labels, labels, extra)) {
      if (extra && !RESULTS.includes(sample.labels.result as (typeof RESULTS)[number])) continue;
      series.set(seriesKey(sample), sample);
    }
  }
  const set = (name: string, value: number, extra: Labels = {}) =>
    series.set(key(name, extra), { name, labels: { ...labels, ...extra }, value });
  for (const result of RESULTS) {
    const before = series.get(key(names.total, { result }))?.value ?? 0;
    set(names.total, before + (result === run.result ? 1 : 0), { result });
  }
  const finished = run.finished.getTime() / 1000;
  set(run.result === 'success' ? names.lastSuccess : names.lastFailure, finished);
  set(names.duration, run.durationSeconds);
  for (const [figure, value] of Object.entries(run.figures)) {
    const name = figureMetric(run.operation, figure);
    if (name && Number.isFinite(value)) set(name, value);
  }
  return sortedSamples([...series.values()]);
}

/**
 * The notification failure counters of `group` after a run whose notifications `failures` counts
 * by channel: each channel's previous value (read back from where it went) plus this run's. Every
 * channel `previous` holds for the group is kept, as a Pushgateway replaces all of a metric's
 * series in a group at once; a channel sent to without fault is written too, so that increase()
 * sees its counter start from 0.
 */
export function notificationFailureSamples(
  group: GroupLabels,
  failures: Readonly<Record<string, number>>,
  previous: readonly Sample[],
): Sample[] {
  const labels = groupLabels(group);
  const counts = new Map<string, number>();
  for (const sample of previous) {
    if (sample.name === NOTIFICATION_FAILURES.name && sameLabels(sample.labels, labels, 'channel'))
      counts.set(sample.labels.channel!, sample.value);
  }
  for (const [channel, failed] of Object.entries(failures))
    counts.set(channel, (counts.get(channel) ?? 0) + failed);
  return sortedSamples(
    [...counts].map(([channel, value]) => ({
      name: NOTIFICATION_FAILURES.name,
      labels: { ...labels, channel },
      value,
    })),
  );
}

/** `labels` are `group` exactly, or `group` and one label more, `extra`. */
function sameLabels(labels: Labels, group: Labels, extra?: string): boolean {
  const others = Object.keys(labels).filter((label) => !(label in group));
  if (extra ? others.length !== 1 || others[0] !== extra : others.length !== 0) return false;
  return Object.entries(group).every(([label, value]) => labels[label] === value);
}

function seriesKey(sample: Pick<Sample, 'name' | 'labels'>): string {
  return JSON.stringify([sample.name, ...Object.entries(sample.labels).sort(([a], [b]) => (a < b ? -1 : 1))]);
}

function sortedSamples(samples: Sample[]): Sample[] {
  const order = new Map([...METRICS, ...COMPAT_METRICS].map((definition, index) => [definition.name, index]));
  return samples.sort(
    (a, b) =>
      (order.get(a.name) ?? Infinity) - (order.get(b.name) ?? Infinity) ||
      (seriesKey(a) < seriesKey(b) ? -1 : 1),
  );
}

/**
 * The seeds' metric names (the backup scripts strongbox replaces), for dashboards and alert rules
 * that use them: `metrics: { compat: seeds }` in the configuration file. Each is computed from one
 * of ours; their labels are ours with env named `environment` and the result as `status`
 * ("success" or "failed"), as the seeds' queries select them. Names whose suffix Prometheus
 * reserves for another type (`_total` on a size, `_count` on a number of backups) are untyped, as
 * that is what they are.
 */
interface CompatMapping extends MetricDefinition {
  from: string;
  /** Only series of this kind of source (postgres_backup_* are about databases). */
  kind?: string;
}

const COMPAT_LABELS = ['repository', 'host', 'kind', 'name', 'environment'] as const;

const COMPAT: readonly CompatMapping[] = [
  {
    name: 'backup_success_total',
    type: 'counter',
    help: 'Backups by status (success or failed); strongbox_backups_total.',
    labels: [...COMPAT_LABELS, 'status'],
    from: 'strongbox_backups_total',
  },
  {
    name: 'backup_bytes_total',
    type: 'untyped',
    help: 'Size of the last successful backup in bytes; strongbox_backup_size_bytes.',
    labels: COMPAT_LABELS,
    from: 'strongbox_backup_size_bytes',
  },
  {
    name: 'backup_size_bytes',
    type: 'gauge',
    help: 'Size of the last successful backup in bytes; strongbox_backup_size_bytes.',
    labels: COMPAT_LABELS,
    from: 'strongbox_backup_size_bytes',
  },
  {
    name: 'backup_last_success_timestamp_seconds',
    type: 'gauge',
    help: 'Unix time of the last successful backup; strongbox_backup_last_success_timestamp_seconds.',
    labels: COMPAT_LABELS,
    from: 'strongbox_backup_last_success_timestamp_seconds',
  },
  {
    name: 'backup_duration_seconds',
    type: 'gauge',
    help: 'Seconds the last backup took; strongbox_backup_duration_seconds.',
    labels: COMPAT_LABELS,
    from: 'strongbox_backup_duration_seconds',
  },
  {
    name: 'postgres_backup_last_success_timestamp',
    type: 'gauge',
    help: 'Unix time of the last successful database backup; strongbox_backup_last_success_timestamp_seconds{kind="postgres"}.',
    labels: COMPAT_LABELS,
    from: 'strongbox_backup_last_success_timestamp_seconds',
    kind: 'postgres',
  },
  {
    name: 'postgres_backup_size_bytes',
    type: 'gauge',
    help: 'Size of the last successful database backup in bytes; strongbox_backup_size_bytes{kind="postgres"}.',
    labels: COMPAT_LABELS,
    from: 'strongbox_backup_size_bytes',
    kind: 'postgres',
  },
  {
    name: 'postgres_backup_count',
    type: 'untyped',
    help: 'Database backups kept in the repository; strongbox_snapshots{kind="postgres"}.',
    labels: COMPAT_LABELS,
    from: 'strongbox_snapshots',
    kind: 'postgres',
  },
];

export const COMPAT_METRICS: readonly MetricDefinition[] = COMPAT.map(({ name, type, help, labels }) => ({
  name,
  type,
  help,
  labels,
}));

/** Which compatibility names to write besides ours: none, or the seeds'. */
export type CompatNames = 'none' | 'seeds';

/** The seeds' series computed from `samples` (ours). */
export function compatSamples(samples: readonly Sample[]): Sample[] {
  const out: Sample[] = [];
  for (const mapping of COMPAT) {
    for (const sample of samples) {
      if (sample.name !== mapping.from) continue;
      if (mapping.kind !== undefined && sample.labels.kind !== mapping.kind) continue;
      const { env, result, ...rest } = sample.labels;
      const labels: Record<string, string> = { ...rest };
      if (env !== undefined) labels.environment = env;
      if (result !== undefined) labels.status = result === 'failure' ? 'failed' : result;
      out.push({ name: mapping.name, labels, value: sample.value });
    }
  }
  return out;
}

/** Metric names that are Prometheus's own rules for them: [a-zA-Z_:][a-zA-Z0-9_:]*. */
const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/**
 * `samples` in the text exposition format (version 0.0.4): each metric's HELP and TYPE lines, then
 * its series. With `compat: 'seeds'`, the seeds' names follow ours. A sample of a metric not
 * defined here is a programming error.
 */
export function renderExposition(samples: readonly Sample[], compat: CompatNames = 'none'): string {
  const all = compat === 'seeds' ? [...samples, ...compatSamples(samples)] : [...samples];
  const byName = new Map<string, Sample[]>();
  for (const sample of sortedSamples(all)) {
    const list = byName.get(sample.name);
    if (list) list.push(sample);
    else byName.set(sample.name, [sample]);
  }
  let text = '';
  for (const [name, list] of byName) {
    const definition = DEFINITIONS.get(name) ?? COMPAT_METRICS.find((metric) => metric.name === name);
    if (!definition) throw new Error(`no metric called ${name} is defined`);
    text += `# HELP ${name} ${escapeHelp(definition.help)}\n# TYPE ${name} ${definition.type}\n`;
    for (const sample of list)
      text += `${seriesText(sample, definition.labels)} ${formatValue(sample.value)}\n`;
  }
  return text;
}

function seriesText(sample: Sample, order: readonly string[]): string {
  if (!METRIC_NAME.test(sample.name)) throw new Error(`invalid metric name ${sample.name}`);
  const names = Object.keys(sample.labels).sort(
    (a, b) => rank(order, a) - rank(order, b) || (a < b ? -1 : 1),
  );
  const pairs = names
    .filter((label) => sample.labels[label] !== '')
    .map((label) => {
      if (!LABEL_NAME.test(label) || label.startsWith('__')) throw new Error(`invalid label name ${label}`);
      return `${label}="${escapeLabelValue(sample.labels[label]!)}"`;
    });
  return pairs.length ? `${sample.name}{${pairs.join(',')}}` : sample.name;
}

function rank(order: readonly string[], label: string): number {
  const index = order.indexOf(label);
  return index === -1 ? order.length : index;
}

/** The exposition format's escapes in a label value: backslash, double quote, line feed. */
export function escapeLabelValue(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function escapeHelp(help: string): string {
  return help.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

export function formatValue(value: number): string {
  if (Number.isNaN(value)) return 'NaN';
  if (value === Infinity) return '+Inf';
  if (value === -Infinity) return '-Inf';
  return String(value);
}

/** A text that is not in the exposition format, at `line` (1-based). */
export class MalformedExpositionError extends Error {
  constructor(
    readonly line: number,
    readonly problem: string,
  ) {
    super(`line ${line}: ${problem}`);
  }
}

/**
 * The samples of a text in the exposition format (comments and blank lines skipped, timestamps
 * dropped): what strongbox wrote before, or what a Pushgateway serves. Throws
 * MalformedExpositionError at the first line that is not in the format.
 */
export function parseExposition(text: string): Sample[] {
  const samples: Sample[] = [];
  const lines = text.split('\n');
  lines.forEach((raw, index) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    samples.push(parseSampleLine(line, index + 1));
  });
  return samples;
}

function parseSampleLine(line: string, number: number): Sample {
  const fail = (problem: string): never => {
    throw new MalformedExpositionError(number, problem);
  };
  const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)?.[0] ?? fail('expected a metric name');
  let at = name.length;
  const labels: Record<string, string> = {};
  if (line[at] === '{') {
    at++;
    for (;;) {
      while (line[at] === ' ') at++;
      if (line[at] === '}') {
        at++;
        break;
      }
      const label = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(at))?.[0] ?? fail('expected a label name');
      at += label.length;
      while (line[at] === ' ') at++;
      if (line[at] !== '=' || line[at + 1] !== '"') fail(`expected ="…" after ${label}`);
      at += 2;
      let value = '';
      for (;;) {
        const character = line[at++];
        if (character === undefined) fail('unterminated label value');
        if (character === '"') break;
        if (character === '\\') {
          const escaped = line[at++];
          if (escaped === 'n') value += '\n';
          else if (escaped === '\\' || escaped === '"') value += escaped;
          else fail('invalid escape in a label value');
        } else value += character;
      }
      if (Object.hasOwn(labels, label)) fail(`label ${label} given twice`);
      labels[label] = value;
      while (line[at] === ' ') at++;
      if (line[at] === ',') at++;
      else if (line[at] !== '}') fail('expected , or } after a label value');
    }
  }
  const [valueText, timestamp, ...rest] = line.slice(at).trim().split(/\s+/);
  if (valueText === undefined || valueText === '' || rest.length > 0) fail('expected a value');
  if (timestamp !== undefined && !/^-?\d+$/.test(timestamp)) fail('invalid timestamp');
  return { name, labels, value: parseValue(valueText!) ?? fail(`invalid value ${valueText}`) };
}

function parseValue(text: string): number | undefined {
  if (text === 'NaN') return NaN;
  if (text === '+Inf' || text === 'Inf') return Infinity;
  if (text === '-Inf') return -Infinity;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) return undefined;
  return Number(text);
}
