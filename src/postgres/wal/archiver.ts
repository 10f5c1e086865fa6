import { promises as fs } from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { SourceError } from '../../errors.ts';
import type { WalEncoder } from '../../repository/wal-encoder.ts';
import type { WalAcknowledgements } from './acknowledgements.ts';
import { ReadBuffers } from './read-buffers.ts';
import { parseWalFileName } from './segments.ts';

/** What archiving needs of the repository: WAL files in, and, to restore, out. */
export interface WalArchive {
  /**
   * Resolves once the file is durable; `stored` false when the same content was there already.
   * With `encoder`, `content` is encoded there and must not be read after (unless it is shared
   * memory, which the encoder reads where it is: then it may be reused once this settles).
   */
  push(
    name: string,
    content: Uint8Array,
    options?: { encoder?: WalEncoder },
  ): Promise<{ stored: boolean; storedSize: number }>;
  /** undefined when the repository holds no such file. */
  fetch(name: string): Promise<Buffer | undefined>;
}

/** One file archived: whether it was stored now, its size, how long it took, whether pushed ahead. */
export interface PushedEvent {
  name: string;
  stored: boolean;
  bytes: number;
  seconds: number;
  ahead: boolean;
}

export interface WalArchiverOptions {
  /** The data directory whose pg_wal/archive_status lists the files waiting (*.ready). */
  pgdata?: string;
  /** Files pushed at once, the one asked for and those pushed ahead of PostgreSQL. */
  parallel?: number;
  /** Where files are encoded (a daemon's threads); none encodes them on this thread. */
  encoder?: WalEncoder;
  /** Where a file pushed ahead is marked durable, for archive_command to answer from the shell. */
  acknowledgements?: WalAcknowledgements;
  onPushed?: (event: PushedEvent) => void;
  onWarning?: (message: string) => void;
}

/** Names remembered as durable; past this the oldest are forgotten (a second push of one is cheap). */
const REMEMBERED = 10_000;

/**
 * Archives WAL files as PostgreSQL's archive_command asks, one at a time, and pushes the other
 * files waiting in pg_wal/archive_status ahead of it, in parallel, as pgBackRest's asynchronous
 * archive-push and WAL-G's background uploader do: by the time PostgreSQL asks for them, they are
 * durable and the answer is immediate. A file is answered for only once the store has made it
 * durable; one pushed ahead that failed is pushed again when asked for, and its error returned.
 */
export class WalArchiver {
  private readonly inFlight = new Map<string, Promise<boolean>>();
  private readonly durable = new Set<string>();
  private readonly parallel: number;
  private readonly buffers: ReadBuffers;

  constructor(
    private readonly store: WalArchive,
    private readonly options: WalArchiverOptions = {},
  ) {
    this.parallel = Math.max(1, options.parallel ?? 4);
    this.buffers = new ReadBuffers(this.parallel);
  }

  /** Archives `file` as `name`; true when it was stored now, false when the repository had it. */
  async push(name: string, file: string): Promise<boolean> {
    const stored = await this.pushAsked(name, file);
    // PostgreSQL asked rather than finding the mark (the push ahead ended after it looked): the
    // mark would only linger.
    await this.options.acknowledgements?.forget(name).catch(() => undefined);
    return stored;
  }

  /**
   * Looks for files PostgreSQL marks ready every `intervalMs` and pushes them ahead without
   * waiting to be asked: with acknowledgements, archive_command then finds them marked. Returns
   * the function that stops looking.
   */
  watch(intervalMs: number): () => void {
    const timer = setInterval(() => this.pushAhead(), intervalMs);
    timer.unref();
    this.pushAhead();
    return () => clearInterval(timer);
  }

  private async pushAsked(name: string, file: string): Promise<boolean> {
    this.pushAhead();
    if (this.durable.has(name)) return false;
    const pending = this.inFlight.get(name);
    if (pending) {
      try {
        return await pending;
      } catch {
        // Pushed ahead and failed: try once more, now that PostgreSQL asks, and report that error.
      }
    }
    return this.start(name, file, false);
  }

  /** Waits for every push in flight (a daemon stopping answers no one before they end). */
  async settle(): Promise<void> {
    await Promise.allSettled([...this.inFlight.values()]);
  }

  private start(name: string, file: string, ahead: boolean): Promise<boolean> {
    const acknowledgements = ahead ? this.options.acknowledgements : undefined;
    const pushing = (async () => {
      await acknowledgements?.pushing(name).catch(() => undefined);
      try {
        return await this.pushOne(name, file, ahead);
      } catch (error) {
        await acknowledgements?.abandon(name).catch(() => undefined);
        throw error;
      }
    })();
    this.inFlight.set(name, pushing);
    const forget = () => {
      if (this.inFlight.get(name) === pushing) this.inFlight.delete(name);
    };
    pushing.then(() => {
      this.remember(name);
      forget();
      this.pushAhead();
    }, forget);
    return pushing;
  }

  private async pushOne(name: string, file: string, ahead: boolean): Promise<boolean> {
    const began = performance.now();
    const content = await this.buffers.read(file).catch((cause: unknown) => {
      throw new SourceError(`cannot read the WAL file ${file}: ${(cause as Error).message}`, {
        hint: 'archive_command must pass %p, the file as PostgreSQL names it from its data directory.',
        cause,
      });
    });
    const bytes = content.bytes.length;
    let stored: boolean;
    try {
      ({ stored } = await this.store.push(name, content.bytes, { encoder: this.options.encoder }));
    } finally {
      // The push has settled: its encoding is done, and nothing reads the buffer any more.
      content.release();
    }
    // Only now that the repository holds it: the mark is all archive_command will look at.
    if (ahead && this.options.acknowledgements)
      await this.options.acknowledgements.record(name).catch((error: unknown) => {
        this.options.onWarning?.(
          `${name} is archived but could not be marked so: ${(error as Error).message}`,
        );
      });
    this.options.onPushed?.({
      name,
      stored,
      bytes,
      seconds: (performance.now() - began) / 1000,
      ahead,
    });
    return stored;
  }

  private remember(name: string): void {
    this.durable.add(name);
    if (this.durable.size > REMEMBERED) {
      const oldest = this.durable.values().next().value;
      if (oldest !== undefined) this.durable.delete(oldest);
    }
  }

  private scanning = false;

  /** Starts pushes of the files PostgreSQL has marked ready, oldest first, up to `parallel`. */
  private pushAhead(): void {
    const pgdata = this.options.pgdata;
    if (!pgdata || this.scanning || this.inFlight.size >= this.parallel) return;
    this.scanning = true;
    void readyFiles(pgdata)
      .then((ready) => {
        for (const name of ready) {
          if (this.inFlight.size >= this.parallel) break;
          if (this.durable.has(name) || this.inFlight.has(name)) continue;
          // A failure here is PostgreSQL's to hear when it asks for the file.
          this.start(name, path.join(pgdata, 'pg_wal', name), true).catch(() => undefined);
        }
      })
      .catch((error: unknown) =>
        this.options.onWarning?.(`pg_wal/archive_status could not be read: ${(error as Error).message}`),
      )
      .finally(() => {
        this.scanning = false;
      });
  }
}

/**
 * The WAL files PostgreSQL has marked ready to archive, in the order it archives them: history
 * files first (a new timeline's history must be archived before its segments), then by name.
 */
export async function readyFiles(pgdata: string): Promise<string[]> {
  const entries = await fs.readdir(path.join(pgdata, 'pg_wal', 'archive_status'));
  const names = entries
    .filter((entry) => entry.endsWith('.ready'))
    .map((entry) => entry.slice(0, -'.ready'.length))
    .filter((name) => parseWalFileName(name) !== undefined);
  const history = (name: string) => (name.endsWith('.history') ? 0 : 1);
  return names.sort((a, b) => history(a) - history(b) || (a < b ? -1 : a > b ? 1 : 0));
}
