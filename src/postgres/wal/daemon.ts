import os from 'node:os';
import { WalEncoderPool } from '../../repository/wal-encoder.ts';
import { WalAcknowledgements } from './acknowledgements.ts';
import { WalArchiver, type PushedEvent, type WalArchive } from './archiver.ts';
import { WalFetcher } from './fetcher.ts';
import { startWalServer, type WalServer } from './server.ts';

export interface WalDaemonOptions {
  /** Where `wal push` and `wal fetch` reach it (protocol.ts walSocketPath). */
  socket: string;
  /** The data directory whose waiting files are pushed ahead; none pushes only what is asked. */
  pgdata?: string;
  /**
   * Threads that encode files (never more than the cores); one file more than the threads is
   * pushed at once, so that while each thread encodes one, another is read or stored.
   */
  parallel?: number;
  /** Where files pushed ahead are marked durable for archive_command's shell (acknowledgements.ts). */
  acknowledgements?: string;
  /** Segments fetched ahead of the one asked for. */
  prefetch?: number;
  /** Serve pushes (a database host's write-only key) and fetches (a full key, for recoveries). */
  archive?: boolean;
  restore?: boolean;
  onPushed?: (event: PushedEvent) => void;
  onFetched?: (event: { name: string; bytes: number; prefetched: boolean }) => void;
  onError?: (message: string) => void;
  onWarning?: (message: string) => void;
}

/**
 * The daemon's default for `parallel`: a thread per core, at most 4. Each file in flight holds a
 * 16 MiB read buffer, and a thread's encoding works on one at a time: more files in flight than
 * threads plus one only cost memory (a full drain on 2 cores: 272 MiB at 4, 235 MiB at 3).
 */
const PARALLEL = Math.min(4, os.availableParallelism());

/** How often pg_wal/archive_status is looked at for files to push before PostgreSQL asks. */
const WATCH_INTERVAL_MS = 250;

/**
 * The WAL daemon: one process that has opened the repository (keys derived once) and answers
 * every `wal push` and `wal fetch` PostgreSQL runs, through a Unix socket, pushing waiting
 * segments ahead and fetching the next ones before they are asked for. Segments are encoded on
 * worker threads, so that the main thread keeps reading files and answering requests.
 */
export async function startWalDaemon(store: WalArchive, options: WalDaemonOptions): Promise<WalServer> {
  const acknowledgements =
    options.archive !== false && options.acknowledgements !== undefined
      ? await WalAcknowledgements.open(options.acknowledgements)
      : undefined;
  const encoder = options.archive === false ? undefined : new WalEncoderPool(options.parallel ?? PARALLEL);
  const archiver =
    encoder &&
    new WalArchiver(store, {
      encoder,
      ...(acknowledgements ? { acknowledgements } : {}),
      ...(options.pgdata ? { pgdata: options.pgdata } : {}),
      parallel: encoder.size + 1,
      ...(options.onPushed ? { onPushed: options.onPushed } : {}),
      ...(options.onWarning ? { onWarning: options.onWarning } : {}),
    });
  const fetcher =
    options.restore === false
      ? undefined
      : new WalFetcher(store, {
          ...(options.prefetch !== undefined ? { ahead: options.prefetch } : {}),
          ...(options.onFetched ? { onFetched: options.onFetched } : {}),
        });
  let server: WalServer;
  try {
    server = await startWalServer(options.socket, {
      ...(archiver ? { archiver } : {}),
      ...(fetcher ? { fetcher } : {}),
      ...(options.onError ? { onError: options.onError } : {}),
    });
  } catch (error) {
    await encoder?.close();
    throw error;
  }
  // Files ready are pushed without waiting for PostgreSQL to ask: the calls then find them done.
  const stopWatching = options.pgdata && archiver ? archiver.watch(WATCH_INTERVAL_MS) : undefined;
  return {
    socket: server.socket,
    async close() {
      stopWatching?.();
      // The server waits for the pushes in flight, whose encoding needs the threads.
      await server.close();
      await encoder?.close();
    },
  };
}
