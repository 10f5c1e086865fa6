import type { Command } from 'commander';
import { alertThresholds, type AlertThresholds } from '../monitoring/alert-rules.ts';
import { parseDuration, parsePercent } from '../util/duration.ts';
import { globalOptions, loadedConfig } from './context.ts';

/** The thresholds of alert rules, dashboards and health checks, as flags. */
export interface ThresholdOptions {
  maxAge?: number;
  sizeChange?: number;
  sizeWindow?: number;
  maxDrillAge?: number;
  maxCheckAge?: number;
  maxWalAge?: number;
  rto?: number;
  rpo?: number;
}

const duration = (option: string) => (value: string) => parseDuration(value, option);

/**
 * The flags of the thresholds `generate alerts`, `generate grafana` and `health` share, so that
 * the alerts Prometheus fires and what `health` reports agree.
 */
export function thresholdOptions(command: Command): Command {
  return command
    .option(
      '--max-age <duration>',
      'the longest a group may go without a successful backup (default 24h)',
      duration('--max-age'),
    )
    .option(
      '--size-change <percent>',
      "how far a backup's size may be off its average (default 50%)",
      (value: string) => parsePercent(value, '--size-change'),
    )
    .option('--size-window <duration>', 'the span of that average (default 7d)', duration('--size-window'))
    .option(
      '--max-drill-age <duration>',
      'the longest a database may go without a successful drill (default 7d)',
      duration('--max-drill-age'),
    )
    .option(
      '--max-check-age <duration>',
      'the longest a repository may go without a successful check (default 7d)',
      duration('--max-check-age'),
    )
    .option(
      '--max-wal-age <duration>',
      'the longest a repository may go without a WAL segment archived (default 15m; health warns at half)',
      duration('--max-wal-age'),
    )
    .option('--rto <duration>', 'the recovery time objective of drills run without --rto', duration('--rto'))
    .option(
      '--rpo <duration>',
      'the recovery point objective of drills run without --rpo',
      duration('--rpo'),
    );
}

/** The flags, over the configuration file's `alerts` section, over the defaults. */
export async function thresholdsOf(options: ThresholdOptions, command: Command): Promise<AlertThresholds> {
  return alertThresholds((await loadedConfig(globalOptions(command))).alerts, {
    maxAgeSeconds: options.maxAge,
    sizeChangePercent: options.sizeChange,
    sizeWindowSeconds: options.sizeWindow,
    maxDrillAgeSeconds: options.maxDrillAge,
    maxCheckAgeSeconds: options.maxCheckAge,
    maxWalAgeSeconds: options.maxWalAge,
    rtoSeconds: options.rto,
    rpoSeconds: options.rpo,
  });
}
