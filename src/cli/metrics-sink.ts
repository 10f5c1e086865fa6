import { ConfigError } from '../errors.ts';
import { OPERATIONS, type Operation, type OperationRun } from '../monitoring/metrics.ts';
import {
  DEFAULT_PUSHGATEWAY_JOB,
  DEFAULT_PUSHGATEWAY_TIMEOUT_MS,
  hasPassword,
  parsePushgatewayUrl,
  publishToTextfile,
  pushToGateway,
} from '../monitoring/publish.ts';
import type { CommandOutcome, OutcomeSink } from './outcome.ts';

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
  const settings = config.metrics ?? {};
  const textfileDir =
    options.metricsTextfile || process.env[METRICS_TEXTFILE_VARIABLE] || settings['textfile-dir'];
  const pushgateway = options.pushgateway || process.env[PUSHGATEWAY_VARIABLE] || settings.pushgateway?.url;
  if (!textfileDir && !pushgateway) return;
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
  const publishOptions = {
    compat: settings.compat ?? 'none',
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
  if (textfileDir) await attempt(() => publishToTextfile(textfileDir, run, publishOptions));
  if (pushgateway) {
    await attempt(() =>
      pushToGateway(
        {
          url: pushgateway,
          job: settings.pushgateway?.job ?? DEFAULT_PUSHGATEWAY_JOB,
          timeoutMs:
            settings.pushgateway?.timeout !== undefined
              ? settings.pushgateway.timeout * 1000
              : DEFAULT_PUSHGATEWAY_TIMEOUT_MS,
        },
        run,
        publishOptions,
      ),
    );
  }
  if (problems.length > 0) throw new Error(problems.join('; '));
};
