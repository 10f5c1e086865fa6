import { constants, openSync } from 'node:fs';
import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';

/**
 * A worker thread that keeps named pipes drained, so that their writer (pg_basebackup) never waits
 * for the main thread: a pipe holds 64 KiB, which Node cannot enlarge, and pg_basebackup blocked
 * on a full one while the main thread chunked and hashed the previous batch.
 *
 * Each pipe is read straight into a buffer of `bufferSize` bytes, which moves to the main thread
 * (transferred, not copied) once full, or at once when the main thread holds nothing more to read.
 * The main thread hands each buffer back once read, to be filled again. Past `maxInFlight` buffers
 * with the main thread, a pipe is no longer read until one comes back: memory stays bounded, and
 * the writer waits only when the main thread is that far behind.
 */
export interface PipeReaderOptions {
  paths: string[];
  bufferSize: number;
  maxInFlight: number;
}

export type ToPipeReader = { kind: 'recycle'; buffer: ArrayBuffer };

export type FromPipeReader =
  /** Every pipe is open for reading: its writer may start. */
  | { kind: 'ready' }
  /** The pipe's writer opened it: its first bytes came, or its end with none. */
  | { kind: 'opened'; pipe: number; empty: boolean }
  | { kind: 'data'; pipe: number; buffer: ArrayBuffer; length: number }
  /** The pipe's writer closed it: every byte was sent before this. */
  | { kind: 'end'; pipe: number }
  | { kind: 'failed'; pipe?: number; message: string; code?: string };

const port = parentPort!;
const { paths, bufferSize, maxInFlight } = workerData as PipeReaderOptions;

interface Pipe {
  index: number;
  socket: net.Socket;
  /** The buffer being filled, and how far. */
  current: Uint8Array | undefined;
  filled: number;
  opened: boolean;
}

const free: ArrayBuffer[] = [];
/** Buffers with the main thread. */
let inFlight = 0;
/** Pipes not read until a buffer comes back. */
const stalled: Pipe[] = [];

function send(pipe: Pipe): void {
  if (!pipe.current || pipe.filled === 0) return;
  const buffer = pipe.current.buffer as ArrayBuffer;
  port.postMessage({ kind: 'data', pipe: pipe.index, buffer, length: pipe.filled } satisfies FromPipeReader, [
    buffer,
  ]);
  pipe.current = undefined;
  pipe.filled = 0;
  inFlight++;
}

/** Where the next read of the pipe goes: the rest of its buffer, or a buffer taken for it. */
function nextTarget(pipe: Pipe): Uint8Array {
  pipe.current ??= new Uint8Array(free.pop() ?? new ArrayBuffer(bufferSize));
  return pipe.current.subarray(pipe.filled);
}

/** Returns false to stop reading the pipe. */
function onRead(pipe: Pipe, length: number): boolean {
  if (!pipe.opened) {
    pipe.opened = true;
    port.postMessage({ kind: 'opened', pipe: pipe.index, empty: false } satisfies FromPipeReader);
  }
  pipe.filled += length;
  // A full buffer goes; so does a partial one when the main thread would otherwise wait for it.
  if (pipe.filled === pipe.current!.length || inFlight === 0) send(pipe);
  if (inFlight < maxInFlight) return true;
  stalled.push(pipe);
  return false;
}

function fail(error: Error & { code?: string }, pipe?: Pipe): void {
  port.postMessage({
    kind: 'failed',
    pipe: pipe?.index,
    message: error.message,
    code: typeof error.code === 'string' ? error.code : undefined,
  } satisfies FromPipeReader);
}

const pipes: Pipe[] = [];
try {
  for (const [index, path] of paths.entries()) {
    // Non-blocking: opened now, before any writer, and read through this thread's event loop.
    const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    const pipe: Pipe = { index, socket: undefined!, current: undefined, filled: 0, opened: false };
    // onread: libuv reads into the buffer given, not into one it allocates for every read.
    // Node takes it in the constructor too, though its types declare it for connect() only.
    const options: net.SocketConstructorOpts & { onread: net.OnReadOpts } = {
      fd,
      readable: true,
      writable: false,
      onread: { buffer: () => nextTarget(pipe), callback: (length) => onRead(pipe, length) },
    };
    pipe.socket = new net.Socket(options);
    pipe.socket.on('end', () => {
      send(pipe);
      if (pipe.current) free.push(pipe.current.buffer as ArrayBuffer);
      pipe.current = undefined;
      if (!pipe.opened)
        port.postMessage({ kind: 'opened', pipe: index, empty: true } satisfies FromPipeReader);
      pipe.opened = true;
      port.postMessage({ kind: 'end', pipe: index } satisfies FromPipeReader);
    });
    pipe.socket.on('error', (error) => fail(error, pipe));
    pipes.push(pipe);
  }
  port.postMessage({ kind: 'ready' } satisfies FromPipeReader);
} catch (error) {
  for (const pipe of pipes) pipe.socket.destroy();
  fail(error as Error);
}

port.on('message', (message: ToPipeReader) => {
  free.push(message.buffer);
  inFlight--;
  while (inFlight < maxInFlight && stalled.length > 0) stalled.shift()!.socket.resume();
});
