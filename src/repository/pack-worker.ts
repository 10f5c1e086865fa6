import { parentPort, workerData } from 'node:worker_threads';
import type { PackRecord } from './blob.ts';
import {
  PackAssembler,
  type FinishedPack,
  type PackAssemblerOptions,
  type StoreItem,
} from './pack-assembler.ts';

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
