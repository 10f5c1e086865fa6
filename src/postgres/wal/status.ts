import { parseWalFileName, segmentName, segmentNumber } from './segments.ts';

/** What `wal status` reads of the repository: names from a listing, and a file's header. */
export interface WalListingStore {
  list(timeline?: string): Promise<{ name: string; size: number }[]>;
  header(name: string): Promise<{ name: string; size: number; time: string } | undefined>;
}

/** A base backup the window may begin at: its timeline, first segment and when it ended. */
export interface BaseBackupStart {
  snapshot: string;
  timeline: number;
  /** The segment holding its start LSN: replay from it needs every segment after. */
  startSegment: string;
  /** When it ended: the earliest moment it restores to. */
  time: string;
}

/** PostgreSQL's own view of archiving (pg_stat_archiver), when a connection was given. */
export interface ArchiverStats {
  archivedCount: number;
  lastArchivedWal: string | null;
  lastArchivedTime: string | null;
  failedCount: number;
  lastFailedWal: string | null;
  lastFailedTime: string | null;
}

export interface WalGap {
  /** The first and last segment missing. */
  from: string;
  to: string;
  segments: number;
}

export interface TimelineStatus {
  timeline: number;
  segments: number;
  first: string;
  last: string;
  /** When the newest segment was archived. */
  lastArchived: string;
  gaps: WalGap[];
  /**
   * The moments a point-in-time restore can reach on this timeline: from the end of the oldest
   * base backup replayable with the segments archived without a gap since, to the newest archived
   * segment. null without such a base backup.
   */
  window: { from: string; to: string; baseBackup: string } | null;
}

export interface WalStatus {
  /** The newest segment archived on any timeline, and its age: the RPO were the server lost now. */
  newest: { name: string; archived: string; ageSeconds: number } | null;
  timelines: TimelineStatus[];
  histories: string[];
  /** Files other than segments and histories: .partial and .backup. */
  other: string[];
  segmentSize: number | null;
  archiver?: ArchiverStats;
}

/**
 * The archive as point-in-time recovery sees it: per timeline, the segments held, the gaps
 * between them, and the window a restore can reach; the newest segment's age; and, when
 * PostgreSQL was asked, what it says of archiving (pg_stat_archiver's failures).
 */
export async function walStatus(
  store: WalListingStore,
  options: { now?: Date; baseBackups?: readonly BaseBackupStart[]; archiver?: ArchiverStats } = {},
): Promise<WalStatus> {
  const now = options.now ?? new Date();
  const listing = await store.list();
  const byTimeline = new Map<number, string[]>();
  const histories: string[] = [];
  const other: string[] = [];
  for (const { name } of listing) {
    const parsed = parseWalFileName(name);
    if (!parsed) continue;
    if (parsed.kind === 'history') histories.push(name);
    else if (parsed.kind === 'segment') {
      const names = byTimeline.get(parsed.timeline) ?? [];
      names.push(name);
      byTimeline.set(parsed.timeline, names);
    } else other.push(name);
  }

  const timelines: TimelineStatus[] = [];
  let segmentSize: number | null = null;
  for (const [timeline, names] of [...byTimeline].sort((a, b) => a[0] - b[0])) {
    names.sort();
    const last = names[names.length - 1]!;
    const newest = await store.header(last);
    if (!newest) continue;
    segmentSize ??= newest.size;
    const size = newest.size;
    const numbers = names.map((name) => segmentNumber(name, size));
    const gaps: WalGap[] = [];
    // Replay from a base backup needs every segment from its start to the target.
    let contiguousFrom = numbers[0]!;
    for (let i = 1; i < numbers.length; i++) {
      if (numbers[i]! - numbers[i - 1]! > 1) {
        contiguousFrom = numbers[i]!;
        gaps.push({
          from: segmentName(timeline, numbers[i - 1]! + 1, size),
          to: segmentName(timeline, numbers[i]! - 1, size),
          segments: numbers[i]! - numbers[i - 1]! - 1,
        });
      }
    }
    const replayable = (options.baseBackups ?? [])
      .filter((backup) => backup.timeline === timeline)
      .filter((backup) => {
        const start = segmentNumber(backup.startSegment, size);
        return start >= contiguousFrom && start <= numbers[numbers.length - 1]!;
      })
      .sort((a, b) => Date.parse(a.time) - Date.parse(b.time));
    const oldest = replayable[0];
    timelines.push({
      timeline,
      segments: names.length,
      first: names[0]!,
      last,
      lastArchived: newest.time,
      gaps,
      window: oldest ? { from: oldest.time, to: newest.time, baseBackup: oldest.snapshot } : null,
    });
  }

  const newestOverall = timelines
    .map((status) => ({ name: status.last, archived: status.lastArchived }))
    .sort((a, b) => Date.parse(b.archived) - Date.parse(a.archived))[0];
  return {
    newest: newestOverall
      ? {
          ...newestOverall,
          ageSeconds: Math.max(0, (now.getTime() - Date.parse(newestOverall.archived)) / 1000),
        }
      : null,
    timelines,
    histories: histories.sort(),
    other: other.sort(),
    segmentSize,
    ...(options.archiver ? { archiver: options.archiver } : {}),
  };
}

/** pg_stat_archiver, one row of tab-separated text. */
export const ARCHIVER_STATS = `select archived_count, coalesce(last_archived_wal, ''),
  coalesce(to_char(last_archived_time at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), ''),
  failed_count, coalesce(last_failed_wal, ''),
  coalesce(to_char(last_failed_time at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), '')
  from pg_stat_archiver`;

export function parseArchiverStats(output: string): ArchiverStats {
  const [archived, lastArchivedWal, lastArchivedTime, failed, lastFailedWal, lastFailedTime] = output
    .trim()
    .split('|');
  const text = (value: string | undefined) => (value ? value : null);
  return {
    archivedCount: Number(archived),
    lastArchivedWal: text(lastArchivedWal),
    lastArchivedTime: text(lastArchivedTime),
    failedCount: Number(failed),
    lastFailedWal: text(lastFailedWal),
    lastFailedTime: text(lastFailedTime),
  };
}
