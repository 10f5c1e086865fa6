import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { WalArchive } from './archiver.ts';
import { isSegmentName, nextSegment } from './segments.ts';

export interface WalFetcherOptions {
  /** Segments fetched ahead of the one asked for (each held in memory until asked for). */
  ahead?: number;
  onFetched?: (event: { name: string; bytes: number; prefetched: boolean }) => void;
}

/**
 * Restores WAL files as PostgreSQL's restore_command asks, and keeps fetching the segments after
 * the last one asked for, `ahead` of them at once, so that replay never waits on the storage
 * between segments. A file the repository does not hold is answered at once (PostgreSQL asks past
 * the end of the archive to learn where it ends) and never cached, as it may be archived later.
 */
export class WalFetcher {
  private readonly cache = new Map<string, Promise<Buffer | undefined>>();
  private readonly ahead: number;

  constructor(
    private readonly store: WalArchive,
    private readonly options: WalFetcherOptions = {},
  ) {
    this.ahead = Math.max(0, options.ahead ?? 4);
  }

  /** Writes `name` to `target`; false when the repository does not hold it. */
  async fetch(name: string, target: string): Promise<boolean> {
    const cached = this.cache.get(name);
    this.cache.delete(name);
    let content = cached ? await cached.catch(() => undefined) : undefined;
    const prefetched = content !== undefined;
    content ??= await this.store.fetch(name);
    if (content === undefined) return false;
    this.options.onFetched?.({ name, bytes: content.length, prefetched });
    if (isSegmentName(name)) this.prefetchAfter(name, content.length);
    await writeAtomically(target, content);
    return true;
  }

  private prefetchAfter(name: string, segmentSize: number): void {
    // Segments before this one will not be asked for again.
    for (const cached of this.cache.keys())
      if (isSegmentName(cached) && cached < name) this.cache.delete(cached);
    let next = name;
    for (let i = 0; i < this.ahead; i++) {
      next = nextSegment(next, segmentSize);
      if (this.cache.has(next)) continue;
      const fetching = this.store.fetch(next);
      // Unasked for yet: an error is the caller's to hear when it asks.
      fetching.catch(() => undefined);
      this.cache.set(next, fetching);
    }
  }
}

/** Writes a file under a temporary name beside it, then renames it: PostgreSQL never reads half. */
async function writeAtomically(target: string, content: Uint8Array): Promise<void> {
  const temporary = path.join(path.dirname(target), `.strongbox-${randomBytes(6).toString('hex')}.tmp`);
  try {
    await fs.writeFile(temporary, content, { mode: 0o600 });
    // Served by a process running as root (a restore's), for a server that runs as its own user.
    if (process.getuid?.() === 0) {
      const directory = await fs.stat(path.dirname(target));
      await fs.chown(temporary, directory.uid, directory.gid);
    }
    await fs.rename(temporary, target);
  } catch (error) {
    await fs.rm(temporary, { force: true });
    throw error;
  }
}
