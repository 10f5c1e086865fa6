import { z } from 'zod';
import { StrongboxError } from '../errors.ts';
import { parsePushgatewayUrl } from '../monitoring/publish.ts';
import { parseDuration, parsePercent } from '../util/duration.ts';

/** The `metrics` and `alerts` sections of the configuration file (schema.ts). */

/** A parse that throws a StrongboxError, as a zod issue carrying its message. */
function checked<I, T>(parse: (input: I) => T) {
  return (input: I, context: z.RefinementCtx): T => {
    try {
      return parse(input);
    } catch (error) {
      if (!(error instanceof StrongboxError)) throw error;
      context.addIssue({ code: 'custom', message: error.message, input });
      return z.NEVER;
    }
  };
}

/** 30m, 26h, 7d: seconds. */
const duration = z
  .string({ error: 'expected a duration such as 30m, 26h or 7d' })
  .transform(checked((text: string) => parseDuration(text)));

/** 50% (or the number 50): percent. */
const percent = z
  .union([z.number().min(0), z.string()], { error: 'expected a percentage such as 50%' })
  .transform(checked((value: string | number) => (typeof value === 'number' ? value : parsePercent(value))));

export const metricsSchema = z.strictObject({
  /** Also write the seeds' metric names (backup_success_total…) beside strongbox's own. */
  compat: z.enum(['none', 'seeds'], { error: 'expected none or seeds' }).optional(),
  /** node_exporter's textfile collector directory, as --metrics-textfile. */
  'textfile-dir': z.string({ error: 'expected a directory' }).min(1).optional(),
  pushgateway: z
    .strictObject({
      /** As --pushgateway; it may hold user:password here, unlike on a command line. */
      url: z.string({ error: 'expected a URL such as http://pushgateway:9091' }).transform(
        checked((text: string) => {
          parsePushgatewayUrl(text);
          return text;
        }),
      ),
      /** The job label of what strongbox pushes (default strongbox). */
      job: z.string({ error: 'expected a job name' }).min(1).optional(),
      /** How long a push may take before it is given up (default 10s). */
      timeout: duration.optional(),
    })
    .optional(),
});

export type MetricsSection = z.output<typeof metricsSchema>;

/** Thresholds of `strongbox generate alerts`; its flags override them. */
export const alertsSchema = z.strictObject({
  /** No successful backup of a group for this long. */
  'max-age': duration.optional(),
  /** A backup this far off its average over size-window, in percent. */
  'size-change': percent.optional(),
  'size-window': duration.optional(),
  /** No successful drill for this long. */
  'max-drill-age': duration.optional(),
  /** No successful check for this long. */
  'max-check-age': duration.optional(),
  /** No WAL segment archived for this long. */
  'max-wal-age': duration.optional(),
  /** The objectives drills are held to when they were run without --rto or --rpo. */
  rto: duration.optional(),
  rpo: duration.optional(),
});

export type AlertsSection = z.output<typeof alertsSchema>;
