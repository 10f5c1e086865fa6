import type { Command } from 'commander';
import { renderExposition } from '../../monitoring/metrics.ts';
import { RECORDED_RESULT_READERS } from '../../monitoring/recorded-results.ts';
import { repositoryMetrics, repositoryMetricSamples } from '../../monitoring/repository-metrics.ts';
import { globalOptions, loadedConfig, outputFor, withRepository } from '../context.ts';
import { publicLocation } from '../outcome.ts';

export function registerMetrics(program: Command): void {
  program
    .command('metrics')
    .description(
      'print the repository-wide gauges (per group the newest snapshot and the snapshot count, the repository size) in the Prometheus text format, or as JSON',
    )
    .action(async (_options: unknown, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      const config = await loadedConfig(global);
      const location = publicLocation(global.repo ?? process.env.STRONGBOX_REPO) ?? '';
      const metrics = await withRepository(global, (repository) =>
        repositoryMetrics(repository, { location, readers: RECORDED_RESULT_READERS }),
      );
      if (global.json) output.data(metrics);
      else process.stdout.write(renderExposition(repositoryMetricSamples(metrics), config.metrics?.compat));
    });
}
