import { ExitCode } from '../errors.ts';
import type { EventName, NotificationEvent } from '../notify/event.ts';
import { sendNotification } from '../notify/send.ts';
import { printable } from '../util/printable.ts';
import type { CommandOutcome, OutcomeSink } from './outcome.ts';

/**
 * Sends a command's outcome to the configuration file's notification targets that asked for
 * it. What could not be sent is one warning line per target, naming the target and never its
 * secrets; the command's exit code stays its own. The failures are counted by channel for the
 * metrics sink.
 */
export const notifySink: OutcomeSink = async (outcome, { config, output, notificationFailures }) => {
  const targets = config.notifications ?? [];
  if (targets.length === 0) return;
  const event = eventOfOutcome(outcome);
  if (!event) return;
  // One report per channel, all sent at once: a report names its targets, not their channels.
  const channels = [...new Set(targets.map((target) => target.type))];
  const reports = await Promise.all(
    channels.map(async (channel) => ({
      channel,
      report: await sendNotification(
        targets.filter((target) => target.type === channel),
        event,
      ),
    })),
  );
  const itself = outcome.result === 'success' ? 'succeeded' : 'failed as reported';
  for (const { channel, report } of reports) {
    if (report.delivered.length + report.failed.length > 0)
      notificationFailures[channel] = report.failed.length;
    for (const failure of report.failed) {
      const after = failure.attempts > 1 ? ` after ${failure.attempts} attempts` : '';
      output.warn(
        `warning: notification to ${printable(failure.target)} failed${after}: ${failure.message} (the ${outcome.operation} itself ${itself})`,
      );
    }
  }
};

/** The event an outcome is, if it is one: every failure of what runs unattended, and backups that succeed. */
export function eventOfOutcome(outcome: CommandOutcome): NotificationEvent | undefined {
  const event = eventNameOf(outcome);
  if (!event) return undefined;
  const { duration_seconds: duration, ...figures } = outcome.figures;
  return {
    event,
    time: outcome.finished,
    operation: outcome.operation,
    result: outcome.result,
    subject: { ...outcome.subject },
    ...(outcome.error ? { error: { ...outcome.error } } : {}),
    durationSeconds: duration ?? (outcome.finished.getTime() - outcome.started.getTime()) / 1000,
    ...(outcome.snapshot ? { snapshot: outcome.snapshot } : {}),
    figures,
  };
}

function eventNameOf(outcome: CommandOutcome): EventName | undefined {
  const command = outcome.operation.split(' ')[0];
  if (outcome.result === 'success') return command === 'backup' ? 'backup-succeeded' : undefined;
  switch (command) {
    case 'backup':
      return 'backup-failed';
    case 'check':
      return 'check-failed';
    case 'forget':
      return 'forget-failed';
    case 'prune':
      return 'prune-failed';
    case 'copy':
      return 'copy-failed';
    case 'drill':
      // A drill whose restore verified but took too long, or whose newest snapshot is too old.
      return outcome.error?.exitCode === ExitCode.threshold ? 'drill-over-objective' : 'drill-failed';
    default:
      return undefined;
  }
}
