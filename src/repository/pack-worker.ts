import os from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import type { PackRecord } from './blob.ts';
import {
  PackAssembler,
  type FinishedPack,
  type PackAssemblerOptions,
  type StoreItem,
} from './pack-assembler.ts';

/** How much lower than the main thread's this thread's priority is (nice(1) steps). */
const WORKER_NICENESS = 10;

/**
 * A worker thread that owns one pack at a time: it compresses, delta-encodes and encrypts the
 * blobs it is sent, and hands each finished pack back to the main thread to upload.
 *
 * Items are views into `buffer`, which the worker hands back once it has packed them; packs
 * come back too, once uploaded, to be filled again.
 */
export type ToWorker =
  | { kind: 'store'; items: StoreItem[]; bytes: number; buffer: ArrayBuffer }
  | { kind: 'recycle'; buffer: ArrayBuffer }
  | { kind: 'flush' };

export type FromWorker =
  | { kind: 'consumed'; bytes: number; buffer: ArrayBuffer }
  | { kind: 'pack'; bytes: Uint8Array; record: PackRecord; rawBytes: number }
  | { kind: 'flushed' }
  | { kind: 'failed'; message: string; stack?: string };

// Packing can wait (blobs queue for it, and the main thread packs when the queue is full); the
// source feeding the backup cannot without slowing down: a pg_dump whose output is not read stops
// its server backend. So this thread yields the CPU to them. Only on Linux is a priority set this
// way the thread's own rather than the whole process's.
if (process.platform === 'linux') {
  try {
    os.setPriority(0, Math.min(19, os.getPriority(0) + WORKER_NICENESS));
  } catch {
    // A sandbox that forbids it costs speed, not correctness.
  }
}

const port = parentPort!;
const assembler = new PackAssembler(workerData as PackAssemblerOptions);

function send(pack: FinishedPack | undefined): void {
  if (!pack) return;
  // The pack's buffer is its own, so it moves to the main thread without a copy.
  const message: FromWorker = {
    kind: 'pack',
    bytes: pack.bytes,
    record: pack.record,
    rawBytes: pack.rawBytes,
  };
  port.postMessage(message, [pack.bytes.buffer as ArrayBuffer]);
}

port.on('message', (message: ToWorker) => {
  try {
    if (message.kind === 'store') {
      for (const item of message.items) send(assembler.add(item));
      port.postMessage(
        { kind: 'consumed', bytes: message.bytes, buffer: message.buffer } satisfies FromWorker,
        [message.buffer],
      );
    } else if (message.kind === 'recycle') {
      assembler.recycle(Buffer.from(message.buffer));
    } else {
      send(assembler.finish());
      port.postMessage({ kind: 'flushed' } satisfies FromWorker);
    }
  } catch (error) {
    const failure = error instanceof Error ? error : new Error(String(error));
    port.postMessage({ kind: 'failed', message: failure.message, stack: failure.stack } satisfies FromWorker);
  }
});
