import type { StrongboxConfig } from '../config-file/config-file.ts';
import { ConfigError } from '../errors.ts';
import { OPERATIONS, type CompatNames, type Operation, type OperationRun } from '../monitoring/metrics.ts';
import {
  DEFAULT_PUSHGATEWAY_JOB,
  DEFAULT_PUSHGATEWAY_TIMEOUT_MS,
  hasPassword,
  parsePushgatewayUrl,
  publishStateToTextfile,
  publishToTextfile,
  pushStateToGateway,
  pushToGateway,
  type PublishOptions,
  type PushgatewayTarget,
  type StateMetrics,
} from '../monitoring/publish.ts';
import { loadedConfig, type GlobalOptions } from './context.ts';
import type { CommandOutcome, OutcomeSink } from './outcome.ts';
import type { Output } from './output.ts';

/** The environment forms of --metrics-textfile and --pushgateway (the latter as the seeds name it). */
export const METRICS_TEXTFILE_VARIABLE = 'STRONGBOX_METRICS_TEXTFILE';
export const PUSHGATEWAY_VARIABLE = 'PUSHGATEWAY_URL';

/** commander's parser of --pushgateway: a URL checked now, and never one holding a password. */
export function pushgatewayOption(value: string): string {
  if (hasPassword(value)) {
    throw new ConfigError('--pushgateway may not hold a password: command lines are visible to every user', {
      hint: `Set ${PUSHGATEWAY_VARIABLE}, or metrics.pushgateway.url in the configuration file.`,
    });
  }
  parsePushgatewayUrl(value);
  return value;
}

/** 'backup postgres' → backup; commands that are not one of OPERATIONS publish nothing. */
function operationOf(outcome: CommandOutcome): Operation | undefined {
  const first = outcome.operation.split(' ')[0];
  return OPERATIONS.find((operation) => operation === first);
}

/** Where metrics go: the flags, else the environment, else the configuration file. */
interface MetricsDestinations {
  textfileDir?: string;
  gateway?: PushgatewayTarget;
  compat: CompatNames;
}

function metricsDestinations(options: GlobalOptions, config: StrongboxConfig): MetricsDestinations {
  const settings = config.metrics ?? {};
  const textfileDir =
    options.metricsTextfile || process.env[METRICS_TEXTFILE_VARIABLE] || settings['textfile-dir'];
  const url = options.pushgateway || process.env[PUSHGATEWAY_VARIABLE] || settings.pushgateway?.url;
  return {
    ...(textfileDir ? { textfileDir } : {}),
    ...(url
      ? {
          gateway: {
            url,
            job: settings.pushgateway?.job ?? DEFAULT_PUSHGATEWAY_JOB,
            timeoutMs:
              settings.pushgateway?.timeout !== undefined
                ? settings.pushgateway.timeout * 1000
                : DEFAULT_PUSHGATEWAY_TIMEOUT_MS,
          },
        }
      : {}),
    compat: settings.compat ?? 'none',
  };
}

/** Tries every destination; throws once, naming each that failed. */
async function publishEverywhere(
  destinations: MetricsDestinations,
  output: Output,
  toTextfile: (dir: string, options: PublishOptions) => Promise<unknown>,
  toGateway: (gateway: PushgatewayTarget, options: PublishOptions) => Promise<unknown>,
): Promise<void> {
  const publishOptions: PublishOptions = {
    compat: destinations.compat,
    onWarning: (message: string) => output.warn(`warning: ${message}`),
  };
  const problems: string[] = [];
  const attempt = async (publish: () => Promise<unknown>) => {
    try {
      await publish();
    } catch (error) {
      problems.push(error instanceof Error ? error.message : String(error));
    }
  };
  const { textfileDir, gateway } = destinations;
  if (textfileDir) await attempt(() => toTextfile(textfileDir, publishOptions));
  if (gateway) await attempt(() => toGateway(gateway, publishOptions));
  if (problems.length > 0) throw new Error(problems.join('; '));
}

/**
 * Every operation's outcome as metrics (docs/METRICS.md), to node_exporter's textfile directory
 * and to a Pushgateway, wherever the flags, the environment or the configuration file say. Both
 * are tried; a failure of either is reported once both were, as a warning (outcome.ts).
 */
export const metricsSink: OutcomeSink = async (
  outcome,
  { options, config, output, notificationFailures },
) => {
  const operation = operationOf(outcome);
  if (!operation) return;
  const destinations = metricsDestinations(options, config);
  if (!destinations.textfileDir && !destinations.gateway) return;
  const { duration_seconds: duration, ...figures } = outcome.figures;
  const run: OperationRun = {
    operation,
    result: outcome.result,
    finished: outcome.finished,
    durationSeconds: duration ?? (outcome.finished.getTime() - outcome.started.getTime()) / 1000,
    group: outcome.subject,
    figures,
    ...(Object.keys(notificationFailures).length > 0 ? { notificationFailures } : {}),
  };
  await publishEverywhere(
    destinations,
    output,
    (dir, publishOptions) => publishToTextfile(dir, run, publishOptions),
    (gateway, publishOptions) => pushToGateway(gateway, run, publishOptions),
  );
};

/**
 * Publishes the gauges of a state a command read (`wal status`: the WAL archive) to the same
 * destinations as outcomes. They are no run of an operation, which an outcome's figures describe
 * (counters, durations, one set of figures per group), so the command hands them over itself. A
 * failure is a warning: the command did what it was asked.
 */
export async function publishState(
  state: StateMetrics,
  options: GlobalOptions,
  output: Output,
): Promise<void> {
  const destinations = metricsDestinations(options, await loadedConfig(options));
  try {
    await publishEverywhere(
      destinations,
      output,
      (dir, publishOptions) => publishStateToTextfile(dir, state, publishOptions),
      (gateway, publishOptions) => pushStateToGateway(gateway, state, publishOptions),
    );
  } catch (error) {
    output.warn(`warning: ${error instanceof Error ? error.message : String(error)}`);
  }
}
