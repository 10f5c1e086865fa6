import { parentPort, workerData } from 'node:worker_threads';
import { randomBytes } from 'node:crypto';
import { generateIdentity, rawIdentity, unwrapKey, wrapKey } from '../../src/crypto/key-wrap.ts';
import { SigningKey, verifySignature } from '../../src/crypto/signing.ts';

/**
 * Makes, exports and uses keys as writers do, `workerData.rounds` times, in a thread that collects
 * as often as a pack worker does; says how far it got every `workerData.every` rounds.
 */
const { rounds, every } = workerData as { rounds: number; every: number };
const port = parentPort!;
const message = Buffer.from('signed');
let done = 0;

function batch(): void {
  const until = Math.min(rounds, done + every);
  for (; done < until; done++) {
    const { identity, privateRaw } = generateIdentity();
    if (!rawIdentity(identity).equals(privateRaw)) throw new Error('an identity reads back otherwise');
    const dataKey = randomBytes(32);
    if (!unwrapKey(wrapKey(dataKey, [identity.publicKey]), [identity]).equals(dataKey))
      throw new Error('a wrapped key unwraps otherwise');
    const signer = SigningKey.generate();
    if (!verifySignature(signer.publicRaw, message, signer.sign(message)))
      throw new Error('a signature fails');
  }
  port.postMessage(done);
  // Between batches the thread takes its messages, and the collector its weak callbacks.
  if (done < rounds) setImmediate(batch);
}
batch();
