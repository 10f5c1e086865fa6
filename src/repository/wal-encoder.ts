import os from 'node:os';
import type { Worker } from 'node:worker_threads';
import { SigningKey } from '../crypto/signing.ts';
import { startWorker } from '../util/start-worker.ts';
import { blobId } from './secrets.ts';
import { encodeWal, type WalHeader } from './wal-file.ts';

/** Everything one WAL object is made of: the file, its header, and the pushing session's keys. */
export interface WalEncodeJob {
  header: Omit<WalHeader, 'frames' | 'mac'>;
  content: Uint8Array;
  blobIdKey: Uint8Array;
  metadataKey: Uint8Array;
  recipients: readonly Uint8Array[];
  repositoryId: string;
  /** The writer's Ed25519 private key, raw. */
  signingKey: Uint8Array;
}

export interface EncodedWal {
  /** The content's blob id, as the header holds it. */
  mac: string;
  /** The object to store (wal-file.ts). */
  bytes: Buffer;
}

/**
 * Makes WAL objects away from the caller's thread. `job.content`'s memory moves with the job
 * (no copy of 16 MiB): the caller must not read it once it is handed over.
 */
export interface WalEncoder {
  encode(job: WalEncodeJob): Promise<EncodedWal>;
}

/** The mac, then the object: what a thread of the pool does, and what an inline push does too. */
export function encodeWalJob(job: WalEncodeJob, signingKey?: SigningKey): EncodedWal {
  const mac = blobId(job.blobIdKey, job.content).toString('hex');
  const bytes = encodeWal({ ...job.header, mac }, job.content, job.metadataKey, job.recipients, {
    repositoryId: job.repositoryId,
    key: signingKey ?? new SigningKey(Buffer.from(job.signingKey)),
  });
  return { mac, bytes };
}

export type ToEncoder = { job: WalEncodeJob };
export type FromEncoder =
  { kind: 'encoded'; mac: string; bytes: Uint8Array } | { kind: 'failed'; message: string; stack?: string };

/** A thread's failure, or the pool closing, while a push waited for it. */
export class WalEncoderStopped extends Error {}

interface Pending {
  job: WalEncodeJob;
  resolve: (encoded: EncodedWal) => void;
  reject: (error: Error) => void;
}

interface Thread {
  worker: Worker;
  current?: Pending;
}

/**
 * Worker threads that encode WAL objects (HMAC, zstd, AES-GCM, Ed25519 over the whole object:
 * about a quarter of a second of CPU per 16 MiB segment), so that a daemon pushing segments
 * ahead uses every core while its main thread reads files and waits on storage. One job per
 * thread at a time; the others queue. A thread that dies fails its job, not the pool: the next
 * job starts a new one.
 */
export class WalEncoderPool implements WalEncoder {
  private readonly threads: Thread[] = [];
  private readonly queue: Pending[] = [];
  private closed = false;

  /** `threads` at most `os.availableParallelism()`; `start` makes a thread (tests wrap it). */
  constructor(
    threads: number,
    private readonly start: () => Worker = () => startWorker(import.meta.url, 'wal-encoder-worker'),
  ) {
    this.size = Math.max(1, Math.min(threads, os.availableParallelism()));
    for (let index = 0; index < this.size; index++) this.startThread();
  }

  readonly size: number;

  encode(job: WalEncodeJob): Promise<EncodedWal> {
    if (this.closed) return Promise.reject(new WalEncoderStopped('the WAL encoder pool is closed'));
    return new Promise<EncodedWal>((resolve, reject) => {
      this.queue.push({ job, resolve, reject });
      this.dispatch();
    });
  }

  /** Stops every thread; a job still queued or running is rejected. */
  async close(): Promise<void> {
    this.closed = true;
    for (const pending of this.queue.splice(0))
      pending.reject(new WalEncoderStopped('the WAL encoder pool is closed'));
    await Promise.all(this.threads.map((thread) => thread.worker.terminate()));
  }

  private startThread(): Thread {
    const thread: Thread = { worker: this.start() };
    this.threads.push(thread);
    thread.worker.on('message', (message: FromEncoder) => {
      const pending = thread.current;
      thread.current = undefined;
      if (message.kind === 'encoded') {
        const { bytes } = message;
        pending?.resolve({
          mac: message.mac,
          bytes: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
        });
      } else {
        const error = new Error(message.message);
        if (message.stack) error.stack = message.stack;
        pending?.reject(error);
      }
      this.dispatch();
    });
    thread.worker.on('error', (error) => {
      const pending = thread.current;
      thread.current = undefined;
      pending?.reject(
        new WalEncoderStopped(`a WAL encoding thread failed: ${error.message}`, { cause: error }),
      );
    });
    thread.worker.on('exit', (code) => {
      const pending = thread.current;
      thread.current = undefined;
      pending?.reject(new WalEncoderStopped(`a WAL encoding thread stopped (exit code ${code})`));
      this.threads.splice(this.threads.indexOf(thread), 1);
      this.dispatch();
    });
    return thread;
  }

  private dispatch(): void {
    while (this.queue.length > 0 && !this.closed) {
      let thread = this.threads.find((candidate) => !candidate.current);
      if (!thread) {
        if (this.threads.length >= this.size) return;
        thread = this.startThread();
      }
      const pending = this.queue.shift()!;
      thread.current = pending;
      const { message, transfer } = movable(pending.job);
      thread.worker.postMessage(message, transfer);
    }
  }
}

/**
 * The job as it is posted: content in shared memory is read where it is; otherwise its memory
 * moves when the content owns all of it, and is copied once when not (a view into a larger buffer
 * would send the whole buffer). The small keys are copied into buffers of their own for the same
 * reason.
 */
function movable(job: WalEncodeJob): { message: ToEncoder; transfer: ArrayBuffer[] } {
  const shared = job.content.buffer instanceof SharedArrayBuffer;
  const content = shared || ownsBuffer(job.content) ? job.content : new Uint8Array(job.content);
  return {
    message: {
      job: {
        ...job,
        content,
        blobIdKey: new Uint8Array(job.blobIdKey),
        metadataKey: new Uint8Array(job.metadataKey),
        recipients: job.recipients.map((recipient) => new Uint8Array(recipient)),
        signingKey: new Uint8Array(job.signingKey),
      },
    },
    transfer: shared ? [] : [content.buffer as ArrayBuffer],
  };
}

/** Whether `bytes` is a view of the whole of a transferable buffer. */
export function ownsBuffer(bytes: Uint8Array): boolean {
  return (
    bytes.buffer instanceof ArrayBuffer &&
    bytes.byteOffset === 0 &&
    bytes.byteLength === bytes.buffer.byteLength
  );
}
