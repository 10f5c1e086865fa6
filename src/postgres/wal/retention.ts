import { parseWalFileName } from './segments.ts';

/**
 * Which archived WAL files a recovery can still use, given where the base backups kept begin.
 * Replay starts at a base backup's start segment on its timeline and follows later timelines, so a
 * file is needed when it comes at or after the oldest kept backup's start segment: on a later
 * timeline, or on that timeline at or after that segment. A segment name orders as its timeline
 * then its number (fixed-width hex), so that is a comparison of the first 24 characters, whatever
 * the segment size. Timeline history files are always kept (a few bytes, and what following a
 * timeline needs); `.backup` and `.partial` files follow the segment they name.
 */
export function splitNeededWal<T extends { name: string }>(
  files: readonly T[],
  startSegments: readonly string[],
): { needed: T[]; expired: T[] } {
  if (startSegments.length === 0) return { needed: [...files], expired: [] };
  const oldest = startSegments.reduce((a, b) => (b < a ? b : a));
  const needed: T[] = [];
  const expired: T[] = [];
  for (const file of files) {
    const parsed = parseWalFileName(file.name);
    const keep = parsed === undefined || parsed.kind === 'history' || file.name.slice(0, 24) >= oldest;
    (keep ? needed : expired).push(file);
  }
  return { needed, expired };
}
