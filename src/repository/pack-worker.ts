import { parentPort, workerData } from 'node:worker_threads';
import type { BlobTypeValue, PackRecord } from './blob.ts';
import { PackBuilder, type DeltaBase } from './pack-format.ts';

/**
 * A worker thread that owns one pack at a time: it compresses, delta-encodes and encrypts the
 * blobs it is sent, and hands each finished pack back to the main thread to upload.
 */
export interface PackWorkerOptions {
  recipients: Uint8Array[];
  packSize: number;
  level: number;
}

export interface StoreItem {
  id: Uint8Array;
  type: BlobTypeValue;
  data: Uint8Array;
  delta?: DeltaBase;
}

/**
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

const options = workerData as PackWorkerOptions;
const port = parentPort!;
/** Room for the pack and the blob that takes it past the target size. */
const packCapacity = options.packSize + 1024 * 1024;
let pack: PackBuilder | undefined;
/** Buffers of uploaded packs, reused for the next ones instead of allocating 17 MiB each time. */
const spare: Buffer[] = [];

function emitPack(): void {
  if (!pack || pack.blobCount === 0) return;
  const { bytes, record } = pack.finish();
  const rawBytes = pack.rawBytes;
  pack = undefined;
  // The pack's buffer is its own, so it moves to the main thread without a copy.
  const message: FromWorker = { kind: 'pack', bytes, record, rawBytes };
  port.postMessage(message, [bytes.buffer as ArrayBuffer]);
}

port.on('message', (message: ToWorker) => {
  try {
    if (message.kind === 'store') {
      for (const item of message.items) {
        pack ??= new PackBuilder(options.recipients, options.level, packCapacity, spare.pop());
        pack.add(item.id, item.type, item.data, item.delta);
        if (pack.length >= options.packSize) emitPack();
      }
      port.postMessage(
        { kind: 'consumed', bytes: message.bytes, buffer: message.buffer } satisfies FromWorker,
        [message.buffer],
      );
    } else if (message.kind === 'recycle') {
      if (spare.length === 0 && message.buffer.byteLength >= packCapacity)
        spare.push(Buffer.from(message.buffer));
    } else {
      emitPack();
      port.postMessage({ kind: 'flushed' } satisfies FromWorker);
    }
  } catch (error) {
    const failure = error instanceof Error ? error : new Error(String(error));
    port.postMessage({ kind: 'failed', message: failure.message, stack: failure.stack } satisfies FromWorker);
  }
});
