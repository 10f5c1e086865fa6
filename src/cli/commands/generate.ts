import type { Command } from 'commander';
import { renderAlertRules } from '../../monitoring/alert-rules.ts';
import { renderGrafanaDashboard } from '../../monitoring/grafana.ts';
import { writeFileAtomically } from '../../util/atomic-file.ts';
import { globalOptions, outputFor } from '../context.ts';
import { thresholdOptions, thresholdsOf, type ThresholdOptions } from '../thresholds.ts';

interface GenerateOptions extends ThresholdOptions {
  output?: string;
}

async function emit(text: string, options: GenerateOptions, command: Command, what: string): Promise<void> {
  if (!options.output) {
    process.stdout.write(text);
    return;
  }
  await writeFileAtomically(options.output, text);
  outputFor(globalOptions(command)).info(`wrote ${what} to ${options.output}`);
}

function outputOption(command: Command): Command {
  return command.option(
    '--output <file>',
    'write the file here (replacing it atomically) instead of printing it',
  );
}

export function registerGenerate(program: Command): void {
  const group = program
    .command('generate')
    .description(
      'write monitoring files for the metrics strongbox publishes: Prometheus alert rules, a Grafana dashboard',
    );

  outputOption(thresholdOptions(group.command('alerts')))
    .description(
      'write a Prometheus rules file: backups failed, missing or off in size; drills failed, too old or over objective; checks failed or too old; WAL not archived, gaps, archive failures',
    )
    .action(async (options: GenerateOptions, command: Command) => {
      await emit(renderAlertRules(await thresholdsOf(options, command)), options, command, 'the alert rules');
    });

  outputOption(thresholdOptions(group.command('grafana')))
    .description(
      'write a Grafana dashboard (JSON, for Dashboards → Import) of backups, drills, repositories and WAL archives',
    )
    .action(async (options: GenerateOptions, command: Command) => {
      await emit(
        renderGrafanaDashboard(await thresholdsOf(options, command)),
        options,
        command,
        'the dashboard',
      );
    });
}
