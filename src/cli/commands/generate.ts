import type { Command } from 'commander';
import { alertThresholds, renderAlertRules, type AlertThresholds } from '../../monitoring/alert-rules.ts';
import { renderGrafanaDashboard } from '../../monitoring/grafana.ts';
import { writeFileAtomically } from '../../util/atomic-file.ts';
import { parseDuration, parsePercent } from '../../util/duration.ts';
import { globalOptions, loadedConfig, outputFor } from '../context.ts';

interface ThresholdOptions {
  output?: string;
  maxAge?: number;
  sizeChange?: number;
  sizeWindow?: number;
  maxDrillAge?: number;
  maxCheckAge?: number;
  rto?: number;
  rpo?: number;
}

const duration = (option: string) => (value: string) => parseDuration(value, option);

/** The thresholds both files use: the flags, over the configuration file's `alerts`, over the defaults. */
function thresholdOptions(command: Command): Command {
  return command
    .option('--output <file>', 'write the file here (replacing it atomically) instead of printing it')
    .option(
      '--max-age <duration>',
      'alert when a group has had no successful backup for this long (default 24h)',
      duration('--max-age'),
    )
    .option(
      '--size-change <percent>',
      "alert when a backup's size is this far off its average (default 50%)",
      (value: string) => parsePercent(value, '--size-change'),
    )
    .option('--size-window <duration>', 'the span of that average (default 7d)', duration('--size-window'))
    .option(
      '--max-drill-age <duration>',
      'alert when a database has had no successful drill for this long (default 7d)',
      duration('--max-drill-age'),
    )
    .option(
      '--max-check-age <duration>',
      'alert when a repository has had no successful check for this long (default 7d)',
      duration('--max-check-age'),
    )
    .option('--rto <duration>', 'the recovery time objective of drills run without --rto', duration('--rto'))
    .option(
      '--rpo <duration>',
      'the recovery point objective of drills run without --rpo',
      duration('--rpo'),
    );
}

async function thresholdsOf(options: ThresholdOptions, command: Command): Promise<AlertThresholds> {
  return alertThresholds((await loadedConfig(globalOptions(command))).alerts, {
    maxAgeSeconds: options.maxAge,
    sizeChangePercent: options.sizeChange,
    sizeWindowSeconds: options.sizeWindow,
    maxDrillAgeSeconds: options.maxDrillAge,
    maxCheckAgeSeconds: options.maxCheckAge,
    rtoSeconds: options.rto,
    rpoSeconds: options.rpo,
  });
}

async function emit(text: string, options: ThresholdOptions, command: Command, what: string): Promise<void> {
  if (!options.output) {
    process.stdout.write(text);
    return;
  }
  await writeFileAtomically(options.output, text);
  outputFor(globalOptions(command)).info(`wrote ${what} to ${options.output}`);
}

export function registerGenerate(program: Command): void {
  const group = program
    .command('generate')
    .description(
      'write monitoring files for the metrics strongbox publishes: Prometheus alert rules, a Grafana dashboard',
    );

  thresholdOptions(group.command('alerts'))
    .description(
      'write a Prometheus rules file: backups failed, missing or off in size; drills failed, too old or over objective; checks failed or too old',
    )
    .action(async (options: ThresholdOptions, command: Command) => {
      await emit(renderAlertRules(await thresholdsOf(options, command)), options, command, 'the alert rules');
    });

  thresholdOptions(group.command('grafana'))
    .description(
      'write a Grafana dashboard (JSON, for Dashboards → Import) of backups, drills and repositories',
    )
    .action(async (options: ThresholdOptions, command: Command) => {
      await emit(
        renderGrafanaDashboard(await thresholdsOf(options, command)),
        options,
        command,
        'the dashboard',
      );
    });
}
