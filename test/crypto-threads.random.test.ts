import { describe, expect, it } from 'vitest';
import { startWorker } from '../src/util/start-worker.ts';
import { rounds } from './helpers/soak.ts';

/**
 * Node 20 locks a generated key pair's job while the collector frees it, and holds the same lock
 * while exporting the pair's key: a collection in between never returned, and a pack worker, which
 * collects as often as this one, stopped the backup for good. Key making, wrapping and signing run
 * here long enough that, made that way, they stopped within the first thousand rounds.
 */
const ROUNDS = rounds(5_000);
const EVERY = 250;
/** No progress for this long is a thread that will never make any. */
const STUCK_AFTER_MS = 20_000;

describe('keys in a worker thread that collects often', () => {
  it('are made, wrapped and signed without ever stopping', async () => {
    const worker = startWorker(import.meta.url, 'helpers/key-churn-worker', {
      workerData: { rounds: ROUNDS, every: EVERY },
      resourceLimits: { maxYoungGenerationSizeMb: 1 },
    });
    const outcome = await new Promise<string>((resolve) => {
      let watchdog = setTimeout(() => resolve('no progress'), STUCK_AFTER_MS);
      worker.on('message', (done: number) => {
        clearTimeout(watchdog);
        if (done === ROUNDS) return resolve('done');
        watchdog = setTimeout(() => resolve(`stuck after ${done} rounds`), STUCK_AFTER_MS);
      });
      worker.on('error', (error) => {
        clearTimeout(watchdog);
        resolve(`failed: ${error.message}`);
      });
    });
    // A thread stuck in a lock cannot be terminated: it is left behind, and the test fails.
    if (outcome === 'done') await worker.terminate();
    else worker.unref();
    expect(outcome).toBe('done');
  });
});
