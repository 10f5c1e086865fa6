import { metricsSink } from './metrics-sink.ts';
import { notifySink } from './notify-sink.ts';
import { auditSink } from './audit.ts';
import type { OutcomeSink } from './outcome.ts';

/**
 * Where every command's outcome goes once it ends (outcome.ts), in this order: one line per sink,
 * so that metrics, notifications and the audit log each plug in without touching the commands.
 * Notifications go before metrics, which count the notifications that failed.
 */
export const OUTCOME_SINKS: readonly OutcomeSink[] = [auditSink, notifySink, metricsSink];
