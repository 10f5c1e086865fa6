import type { Worker } from 'node:worker_threads';
import { SourceError } from '../../errors.ts';
import { startWorker } from '../../util/start-worker.ts';
import type { FromPipeReader, PipeReaderOptions, ToPipeReader } from './pipe-reader-worker.ts';

/** Each buffer a pipe is read into. */
export const PIPE_BUFFER_SIZE = 1024 * 1024;
/** Buffers read and not yet consumed, at most: what strongbox may fall behind its writer. */
export const PIPES_IN_FLIGHT = 6;

/** A pipe failed, or the thread reading it did: what was read of it is not the whole. */
export class PipeReadError extends SourceError {
  constructor(
    readonly pipe: string,
    problem: string,
    readonly code?: string,
  ) {
    super(`reading ${pipe} failed: ${problem}; no snapshot was written`, { hint: 'Run the backup again.' });
  }
}

const END = Symbol('end');
type Item = { buffer: ArrayBuffer; length: number } | typeof END | PipeReadError;

/**
 * One pipe as its reading thread hands it over: its content, each piece valid until the next is
 * asked for (its buffer then goes back to be filled again).
 */
export class PipeStream implements AsyncIterable<Uint8Array> {
  /**
   * Resolves when the pipe's writer opened it: true when bytes came (or the reading failed, which
   * the content then throws), false when it ended empty.
   */
  readonly opened: Promise<boolean>;
  /** Its rank among its reader's pipes by when their writer opened them: archives are read in that order. */
  order = Infinity;
  private resolveOpened!: (carriesBytes: boolean) => void;
  private readonly queue: Item[] = [];
  private wake: (() => void) | undefined;
  private taken = false;

  constructor(
    readonly name: string,
    private readonly recycle: (buffer: ArrayBuffer) => void,
  ) {
    this.opened = new Promise((resolve) => (this.resolveOpened = resolve));
  }

  /** From the reading thread. */
  onOpened(order: number, carriesBytes: boolean): void {
    if (this.order !== Infinity) return;
    this.order = order;
    this.resolveOpened(carriesBytes);
  }

  push(item: Item): void {
    if (item instanceof PipeReadError) this.onOpened(Number.MAX_SAFE_INTEGER, true);
    this.queue.push(item);
    this.wake?.();
  }

  /** The pipe will not be read to its end: its queued buffers go back. */
  private discard(): void {
    for (const item of this.queue.splice(0))
      if (typeof item === 'object' && 'buffer' in item) this.recycle(item.buffer);
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    if (this.taken) throw new Error(`${this.name} is read once`);
    this.taken = true;
    let held: ArrayBuffer | undefined;
    try {
      while (true) {
        if (held) this.recycle(held);
        held = undefined;
        while (this.queue.length === 0) await new Promise<void>((resolve) => (this.wake = resolve));
        this.wake = undefined;
        const item = this.queue.shift()!;
        if (item === END) return;
        if (item instanceof PipeReadError) throw item;
        held = item.buffer;
        yield new Uint8Array(item.buffer, 0, item.length);
      }
    } finally {
      if (held) this.recycle(held);
      this.discard();
    }
  }
}

/**
 * Named pipes read on a thread of their own (pipe-reader-worker.ts), so that their writer never
 * waits while the main thread works; `streams` are in the order of `paths`.
 */
export class PipeReader {
  private opened = 0;
  private failure: PipeReadError | undefined;
  private closed = false;

  private constructor(
    private readonly worker: Worker,
    readonly streams: PipeStream[],
  ) {}

  /** Opens every pipe for reading (before any writer); resolves once they are. */
  static async open(
    pipes: { name: string; path: string }[],
    limits: { bufferSize: number; maxInFlight: number } = {
      bufferSize: PIPE_BUFFER_SIZE,
      maxInFlight: PIPES_IN_FLIGHT,
    },
  ): Promise<PipeReader> {
    const worker = startReader({ paths: pipes.map((pipe) => pipe.path), ...limits });
    const recycle = (buffer: ArrayBuffer) => {
      if (!reader.closed) worker.postMessage({ kind: 'recycle', buffer } satisfies ToPipeReader, [buffer]);
    };
    const reader = new PipeReader(
      worker,
      pipes.map((pipe) => new PipeStream(pipe.name, recycle)),
    );
    await new Promise<void>((resolve, reject) => {
      worker.on('message', (message: FromPipeReader) => {
        if (message.kind === 'ready') resolve();
        else if (message.kind === 'failed' && message.pipe === undefined) {
          const failure = new PipeReadError('the named pipes', message.message, message.code);
          reject(failure);
          reader.failAll(failure);
        } else reader.onMessage(message);
      });
      const died = (problem: string) => {
        const failure = new PipeReadError('the named pipes', problem);
        reject(failure);
        reader.failAll(failure);
      };
      worker.on('error', (error) => died(`its reading thread failed: ${error.message}`));
      worker.on('exit', (code) => {
        if (!reader.closed) died(`its reading thread stopped (exit code ${code})`);
      });
    }).catch(async (error: unknown) => {
      await reader.close();
      throw error;
    });
    return reader;
  }

  private onMessage(message: FromPipeReader): void {
    if (message.kind === 'ready' || message.pipe === undefined) return;
    const stream = this.streams[message.pipe]!;
    if (message.kind === 'opened') stream.onOpened(this.opened++, !message.empty);
    else if (message.kind === 'data') stream.push({ buffer: message.buffer, length: message.length });
    else if (message.kind === 'end') stream.push(END);
    else stream.push(new PipeReadError(stream.name, message.message, message.code));
  }

  /** Every pipe not read to its end yet ends in `failure`. */
  private failAll(failure: PipeReadError): void {
    if (this.failure) return;
    this.failure = failure;
    for (const stream of this.streams)
      stream.push(new PipeReadError(stream.name, failure.message, failure.code));
  }

  /** Stops reading and closes the pipes (their writers get SIGPIPE or EPIPE). */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // A stream still read would otherwise wait forever.
    this.failAll(new PipeReadError('the named pipes', 'the reading was stopped'));
    await this.worker.terminate();
  }
}

function startReader(workerData: PipeReaderOptions): Worker {
  // It allocates next to nothing of its own: the buffers are outside its heap.
  return startWorker(import.meta.url, 'pipe-reader-worker', {
    workerData,
    resourceLimits: { maxYoungGenerationSizeMb: 1 },
  });
}
