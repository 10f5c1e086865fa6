import type { Command } from 'commander';
import { ConfigError } from '../../errors.ts';
import { drillPhysical, PHYSICAL_DRILL_PHASES } from '../../postgres/pitr/drill-physical.ts';
import { recoveryTarget } from '../../postgres/pitr/recovery-target.ts';
import { strongboxCommand } from '../physical-restore.ts';
import type { Output } from '../output.ts';
import { DRILL_PHASES, drill, drillError, type DrillRecord, type DrillResult } from '../../postgres/drill.ts';
import { drillReportMarkdown, RESULT_WORDS } from '../../postgres/drill-report.ts';
import { writeFileAtomically } from '../../util/atomic-file.ts';
import { formatElapsed, parseDuration } from '../../util/duration.ts';
import { positiveInteger } from '../arguments.ts';
import { globalOptions, loadedConfig, outputFor, withRepository, type GlobalOptions } from '../context.ts';
import { databaseCredentials, databasePasswordOption, type DatabasePasswordOptions } from '../database.ts';
import { describeOutcome } from '../outcome.ts';
import { formatBytes } from '../output.ts';
import { verificationTable } from '../verification.ts';
import { filterOptions, snapshotFilter, type FilterOptions } from './filters.ts';

interface DrillCliOptions extends FilterOptions, DatabasePasswordOptions {
  to?: string;
  physical?: boolean;
  time?: string;
  rto?: number;
  rpo?: number;
  report?: string;
  keep?: boolean;
  checkOrphans?: boolean;
  jobs?: number;
  pgBin?: string;
}

const duration = (value: string) => parseDuration(value, 'duration', { positive: true });

export function registerDrill(program: Command): void {
  databasePasswordOption(filterOptions(program.command('drill')))
    .description(
      'restore a PostgreSQL snapshot into a scratch database, verify and check it, time it, drop it (exit 7 on a problem, 8 over an objective)',
    )
    .argument('[snapshot]', 'PostgreSQL snapshot: id, id prefix, or latest (default)', 'latest')
    .option(
      '--to <url>',
      'the scratch database, which must not exist: postgres://user@host:port/database, without a password',
    )
    .option(
      '--physical',
      'drill a physical backup: recover it into a scratch cluster on a free local port, replay the archived WAL, pg_amcheck every database',
    )
    .option('--time <time>', 'with --physical: recover to this moment rather than the end of the archive')
    .option(
      '--rto <duration>',
      'recovery time objective: fetch + restore + verify within it (30m, 1h)',
      duration,
    )
    .option(
      '--rpo <duration>',
      'recovery point objective: the newest snapshot at most this old (24h, 7d)',
      duration,
    )
    .option('--report <file>', 'write the report there as Markdown (replaced whole)')
    .option('--keep', 'keep the restored database instead of dropping it')
    .option('--check-orphans', 'count, for every foreign key, the rows that reference no row')
    .option(
      '-j, --jobs <n>',
      'pg_restore runs at once, each restoring some of the tables (default 1)',
      positiveInteger('--jobs'),
    )
    .option('--pg-bin <dir>', 'directory of pg_restore and psql')
    .action(async (reference: string, options: DrillCliOptions, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      if (options.physical) return physicalDrill(global, output, reference, options);
      if (!options.to)
        throw new ConfigError('a drill needs --to, the scratch database to restore into', {
          hint: 'Or drill a physical backup with --physical, which makes a scratch cluster of its own.',
        });
      const credentials = await databaseCredentials(options.to, options, output);
      const config = await loadedConfig(global);
      describeOutcome({
        subject: { host: options.host, kind: options.kind, name: options.name, env: options.env },
      });
      const result = await withRepository(global, (repository) =>
        drill(repository, reference, {
          to: options.to!,
          ...credentials,
          ...(options.pgBin ? { pgBin: options.pgBin } : {}),
          ...(options.jobs ? { jobs: options.jobs } : {}),
          filter: snapshotFilter(options),
          keep: Boolean(options.keep),
          objectives: {
            ...(options.rto !== undefined ? { rtoSeconds: options.rto } : {}),
            ...(options.rpo !== undefined ? { rpoSeconds: options.rpo } : {}),
          },
          sqlChecks: config.drill.checks,
          orphans: Boolean(options.checkOrphans),
          onStep: (message) => output.info(message),
          onProgress: (bytes, total) =>
            output.progress(`drill: ${formatBytes(bytes)} of ${formatBytes(total)} restored`),
          onPhase: (phase, seconds) => output.info(`drill: ${phase} took ${formatElapsed(seconds)}`),
          // A drill that fails from here on is labelled with its group, as a success would be.
          onSnapshot: (group) => describeOutcome({ subject: group }),
        }),
      );
      output.clearProgress();
      const { record } = result;
      describeOutcome({
        subject: {
          host: record.host,
          kind: record.kind,
          name: record.database,
          env: record.env ?? undefined,
        },
        snapshot: record.snapshot,
        figures: drillFigures(record),
      });
      if (options.report) await writeFileAtomically(options.report, drillReportMarkdown(result));
      if (global.json) output.data(drillJson(result));
      else output.line(drillSummary(result));
      const failure = drillError(result);
      if (failure !== undefined) throw failure;
    });
}

/** The figures metrics publish of a drill (strongbox_drill_rto_seconds…), in seconds. */
function drillFigures(record: DrillRecord): Record<string, number> {
  const figures: Record<string, number> = {
    rpo_seconds: record.rpoSeconds,
    duration_seconds: (Date.parse(record.finished) - Date.parse(record.started)) / 1000,
  };
  if (record.rtoSeconds !== null) figures.rto_seconds = record.rtoSeconds;
  if (record.objectives.rtoSeconds !== null) figures.rto_objective_seconds = record.objectives.rtoSeconds;
  if (record.objectives.rpoSeconds !== null) figures.rpo_objective_seconds = record.objectives.rpoSeconds;
  for (const [phase, seconds] of Object.entries(record.phases))
    if (seconds !== null) figures[`${phase}_seconds`] = seconds;
  return figures;
}

/** --json: the record's fields, then what the report shows beyond them. */
function drillJson(result: DrillResult): unknown {
  const { record, error: _error, ...details } = result;
  return { ...record, ...details };
}

/** The plain-text summary printed without --json. */
function drillSummary(result: DrillResult): string {
  const { record } = result;
  const objective = (value: number | null, goal: number | null, which: 'rto' | 'rpo') =>
    `${value === null ? 'not reached' : formatElapsed(value)}${goal === null ? '' : ` (objective ${formatElapsed(goal)}: ${value === null ? 'not measured' : record.exceeded.includes(which) ? 'EXCEEDED' : 'met'})`}`;
  const lines = [
    `drill of ${record.database}, snapshot ${record.snapshot.slice(0, 8)} (${record.snapshotTime}): ${RESULT_WORDS[record.result]}`,
    `  phases  ${DRILL_PHASES.map((phase) => `${phase} ${record.phases[phase] === null ? '—' : formatElapsed(record.phases[phase]!)}`).join(', ')}`,
    `  RTO     ${objective(record.rtoSeconds, record.objectives.rtoSeconds, 'rto')}`,
    `  RPO     ${objective(record.rpoSeconds, record.objectives.rpoSeconds, 'rpo')}`,
    `  into    ${result.target}${result.keptAs === undefined ? ', dropped' : `, kept as ${result.keptAs}`}`,
  ];
  if (result.verification) lines.push(verificationTable(result.verification));
  if (result.checks.length > 0) {
    lines.push('checks:');
    const width = Math.max(...result.checks.map((check) => check.name.length));
    for (const check of result.checks) {
      lines.push(`  ${check.name.padEnd(width)}  ${check.status.padEnd(7)}  ${check.summary}`);
      for (const note of check.notes) lines.push(`    note: ${note}`);
    }
  }
  for (const note of result.notes) lines.push(`note: ${note}`);
  if (record.failures.length > 0)
    lines.push('failures:', ...record.failures.map((failure) => `  - ${failure}`));
  return lines.join('\n');
}

/** `drill --physical`: a point-in-time recovery into a scratch cluster, judged and recorded as every drill. */
async function physicalDrill(
  global: GlobalOptions,
  output: Output,
  reference: string,
  options: DrillCliOptions,
): Promise<void> {
  describeOutcome({
    subject: { host: options.host, kind: 'postgres-physical', name: options.name, env: options.env },
  });
  const target = recoveryTarget(options.time !== undefined ? { time: options.time } : {});
  const result = await withRepository(global, (repository) =>
    drillPhysical(repository, reference === 'latest' ? undefined : reference, {
      target,
      strongbox: strongboxCommand(global),
      objectives: {
        ...(options.rto !== undefined ? { rtoSeconds: options.rto } : {}),
        ...(options.rpo !== undefined ? { rpoSeconds: options.rpo } : {}),
      },
      ...(options.pgBin ? { pgBin: options.pgBin } : {}),
      filter: snapshotFilter(options),
      ...(options.keep ? { keep: true } : {}),
      onStep: (message) => output.info(message),
      onPhase: (phase, seconds) => output.info(`drill: ${phase} took ${formatElapsed(seconds)}`),
    }),
  );
  const { record } = result;
  describeOutcome({
    subject: { host: record.host, kind: record.kind, name: record.database, env: record.env ?? undefined },
    ...(record.snapshot ? { snapshot: record.snapshot } : {}),
    figures: drillFigures(record),
  });
  const lines = [
    `physical drill of ${record.database}, base backup ${record.snapshot.slice(0, 8)} (${record.snapshotTime}): ${RESULT_WORDS[record.result]}`,
    `  phases  ${PHYSICAL_DRILL_PHASES.map((phase) => `${phase} ${record.phases[phase] === null ? '—' : formatElapsed(record.phases[phase]!)}`).join(', ')}`,
    `  RTO     ${record.rtoSeconds === null ? 'not reached' : formatElapsed(record.rtoSeconds)}${record.objectives.rtoSeconds === null ? '' : ` (objective ${formatElapsed(record.objectives.rtoSeconds)}: ${record.exceeded.includes('rto') ? 'EXCEEDED' : 'met'})`}`,
    `  RPO     ${formatElapsed(record.rpoSeconds)} (the newest archived WAL)${record.objectives.rpoSeconds === null ? '' : ` (objective ${formatElapsed(record.objectives.rpoSeconds)}: ${record.exceeded.includes('rpo') ? 'EXCEEDED' : 'met'})`}`,
  ];
  if (result.restore?.recovery)
    lines.push(
      `  reached ${result.restore.recovery.lsn ?? '?'}${result.restore.recovery.lastTransaction ? `, last transaction ${result.restore.recovery.lastTransaction}` : ''}`,
    );
  if (result.restore?.amcheck)
    lines.push(`  checked ${result.restore.amcheck.databases.length} databases with pg_amcheck`);
  if (result.keptAs) lines.push(`  kept    ${result.keptAs} (stopped)`);
  if (record.failures.length > 0)
    lines.push('failures:', ...record.failures.map((failure) => `  - ${failure}`));
  if (options.report)
    await writeFileAtomically(
      options.report,
      `# Physical restore drill\n\n\`\`\`\n${lines.join('\n')}\n\`\`\`\n`,
    );
  if (global.json) output.data({ ...record, ...(result.restore ? { restore: result.restore } : {}) });
  else output.line(lines.join('\n'));
  const failure = drillError(result);
  if (failure !== undefined) throw failure;
}
