import {
  walStatus,
  type ArchiverStats,
  type BaseBackupStart,
  type TimelineStatus,
  type WalGap,
  type WalStatus,
} from '../postgres/wal/status.ts';
import type { Repository } from '../repository/repository.ts';
import { readBaseBackups, type BaseBackupReader } from './base-backups.ts';
import { groupLabels, WAL_KIND, WAL_METRICS, type Sample } from './metrics.ts';

/** One timeline of the WAL archive, as metrics and health judge it. */
export interface WalTimelineMetrics {
  timeline: number;
  segments: number;
  /** When its newest segment was archived. */
  lastArchived: string;
  /** The gaps a recovery from its newest base backup would stop at: every gap without one. */
  gaps: WalGap[];
  /** The span of its recovery window; 0 without a base backup replayable to its newest segment. */
  recoveryWindowSeconds: number;
}

export interface ArchivedWal {
  /** What `wal status` reports. */
  status: WalStatus;
  timelines: WalTimelineMetrics[];
}

/** The WAL archive as `wal status` sees it, with the base backups the repository holds (base-backups.ts). */
export async function archivedWal(
  repository: Repository,
  options: { now?: Date; archiver?: ArchiverStats; readers?: readonly BaseBackupReader[] } = {},
): Promise<ArchivedWal> {
  const baseBackups = await readBaseBackups(repository, options.readers);
  const status = await walStatus(repository.wal, {
    baseBackups,
    ...(options.now ? { now: options.now } : {}),
    ...(options.archiver ? { archiver: options.archiver } : {}),
  });
  return { status, timelines: walTimelines(status, baseBackups) };
}

export function walTimelines(
  status: WalStatus,
  baseBackups: readonly BaseBackupStart[],
): WalTimelineMetrics[] {
  return status.timelines.map((timeline) => ({
    timeline: timeline.timeline,
    segments: timeline.segments,
    lastArchived: timeline.lastArchived,
    gaps: gapsSinceBaseBackup(timeline, baseBackups),
    recoveryWindowSeconds: timeline.window
      ? Math.max(0, (Date.parse(timeline.window.to) - Date.parse(timeline.window.from)) / 1000)
      : 0,
  }));
}

/**
 * The gaps of `timeline` at or after the start of its newest base backup. An older gap no longer
 * stops a recovery: it only narrows the window, which begins after it. A new base backup is what
 * answers a gap, so that is what clears it.
 */
export function gapsSinceBaseBackup(
  timeline: TimelineStatus,
  baseBackups: readonly BaseBackupStart[],
): WalGap[] {
  const newest = baseBackups
    .filter((backup) => backup.timeline === timeline.timeline)
    .sort((a, b) => Date.parse(b.time) - Date.parse(a.time))[0];
  // The names of one timeline's segments sort as their numbers do.
  return newest ? timeline.gaps.filter((gap) => gap.to >= newest.startSegment) : timeline.gaps;
}

/**
 * The WAL series of the repository at `location`: per timeline, and PostgreSQL's failure count
 * when it was asked. Its counter is PostgreSQL's own, published as it is.
 */
export function walSamples(
  location: string,
  timelines: readonly WalTimelineMetrics[],
  archiver?: ArchiverStats,
): Sample[] {
  const labels = groupLabels({ repository: location, kind: WAL_KIND });
  const samples: Sample[] = [];
  for (const timeline of timelines) {
    const series = { ...labels, timeline: String(timeline.timeline) };
    samples.push(
      {
        name: WAL_METRICS.lastArchived.name,
        labels: series,
        value: Date.parse(timeline.lastArchived) / 1000,
      },
      { name: WAL_METRICS.segments.name, labels: series, value: timeline.segments },
      { name: WAL_METRICS.gaps.name, labels: series, value: timeline.gaps.length },
      { name: WAL_METRICS.recoveryWindow.name, labels: series, value: timeline.recoveryWindowSeconds },
    );
  }
  if (archiver) samples.push({ name: WAL_METRICS.archiveFailures.name, labels, value: archiver.failedCount });
  return samples;
}
