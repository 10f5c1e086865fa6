import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { parentPort } from 'node:worker_threads';
import { SigningKey } from '../crypto/signing.ts';
import { encodeWalJob, ownsBuffer, type FromEncoder, type ToEncoder } from './wal-encoder.ts';

/**
 * A thread of WalEncoderPool: encodes one WAL object per message and moves the object's bytes back
 * to the main thread.
 */
const port = parentPort!;

// Each segment leaves megabytes of frames behind (compressed, then sealed copies), which V8 only
// collects once tens of megabytes of them have piled up in each thread. A young-generation
// collection after each segment frees them while there are few.
setFlagsFromString('--expose-gc');
const collect = runInNewContext('gc') as (options: { type: 'minor'; execution: 'sync' }) => void;

/** The writer's key, made ready once: a session signs with one key. */
let signer: SigningKey | undefined;

function signerFor(privateRaw: Uint8Array): SigningKey {
  if (!signer?.privateRaw.equals(privateRaw)) signer = new SigningKey(Buffer.from(privateRaw));
  return signer;
}

port.on('message', ({ job }: ToEncoder) => {
  try {
    const { mac, bytes } = encodeWalJob(job, signerFor(job.signingKey));
    // A small object may sit in Node's shared pool, which must not move: it is copied then.
    const own = ownsBuffer(bytes) ? bytes : new Uint8Array(bytes);
    port.postMessage({ kind: 'encoded', mac, bytes: own } satisfies FromEncoder, [own.buffer as ArrayBuffer]);
    collect({ type: 'minor', execution: 'sync' });
  } catch (error) {
    const failure = error instanceof Error ? error : new Error(String(error));
    port.postMessage({
      kind: 'failed',
      message: failure.message,
      stack: failure.stack,
    } satisfies FromEncoder);
  }
});
