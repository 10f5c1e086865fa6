import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { SigningKey } from '../src/crypto/signing.ts';
import { startWorker } from '../src/util/start-worker.ts';
import { WalEncoderPool, WalEncoderStopped, type WalEncodeJob } from '../src/repository/wal-encoder.ts';
import { splitWal } from '../src/repository/wal-file.ts';
import { objectName } from '../src/repository/layout.ts';
import { seededBytes } from './helpers/data.ts';
import { createTestRepo, type TestRepo } from './helpers/repo.ts';

let repo: TestRepo | undefined;
const pools: WalEncoderPool[] = [];

afterEach(async () => {
  for (const pool of pools.splice(0)) await pool.close();
  await repo?.cleanup();
  repo = undefined;
});

/** A pool whose threads are kept, to watch them stop; `start` makes each (the real one by default). */
function watchedPool(
  threads: number,
  start: () => Worker = () =>
    startWorker(new URL('../src/repository/wal-encoder.ts', import.meta.url).href, 'wal-encoder-worker'),
): { pool: WalEncoderPool; started: Worker[] } {
  const started: Worker[] = [];
  const pool = new WalEncoderPool(threads, () => {
    const worker = start();
    started.push(worker);
    return worker;
  });
  pools.push(pool);
  return { pool, started };
}

/** A segment as PostgreSQL leaves it after a switch: records, then zeros. */
function walSegment(seed: string): Buffer {
  const content = Buffer.alloc(16 * 1024 * 1024);
  seededBytes(seed, 5 * 1024 * 1024 + 321).copy(content);
  return content;
}

function someJob(): WalEncodeJob {
  return {
    header: { version: 1, name: '000000010000000000000001', size: 5, time: '', host: 'h', program: 'p' },
    content: Buffer.from('hello'),
    blobIdKey: Buffer.alloc(32, 1),
    metadataKey: Buffer.alloc(32, 2),
    recipients: [],
    repositoryId: '00'.repeat(32),
    signingKey: SigningKey.generate().privateRaw,
  };
}

const exited = (worker: Worker) => new Promise<number>((resolve) => worker.once('exit', resolve));

describe('WAL encoder pool', () => {
  it('stores through its threads what an inline push stores, and moves the content rather than copying it', async () => {
    repo = await createTestRepo();
    const wal = repo.repository.wal;
    const { pool } = watchedPool(2);
    const pooled = walSegment('segment');
    const inline = Buffer.from(pooled);
    const [byPool, byInline] = await Promise.all([
      wal.push('000000010000000000000001', pooled, { encoder: pool }),
      wal.push('000000010000000000000002', inline),
    ]);
    // The segment's memory went to a thread: the caller's view of it is empty now.
    expect(pooled.length).toBe(0);
    expect(byPool.stored).toBe(true);
    // The same frames; the sealed headers differ by their push times, which compress differently.
    const framesOf = async (name: string) =>
      splitWal(await repo!.repository.backend.get(objectName('wal', name))).frames.length;
    expect(await framesOf('000000010000000000000001')).toBe(await framesOf('000000010000000000000002'));
    expect((await wal.fetch('000000010000000000000001'))?.equals(inline)).toBe(true);
    const [poolHeader, inlineHeader] = [
      await wal.header('000000010000000000000001'),
      await wal.header('000000010000000000000002'),
    ];
    expect(poolHeader).toMatchObject({ size: inline.length, mac: inlineHeader!.mac, frames: 16 });

    // A segment in shared memory (a daemon's read buffers) is read where it is, and stays the caller's.
    const sharedSegment = new Uint8Array(new SharedArrayBuffer(inline.length));
    sharedSegment.set(inline);
    expect((await wal.push('000000010000000000000003', sharedSegment, { encoder: pool })).stored).toBe(true);
    expect(Buffer.from(sharedSegment).equals(inline)).toBe(true);
    expect((await wal.fetch('000000010000000000000003'))?.equals(inline)).toBe(true);

    // A small file read into Node's shared pool, and a view into a larger buffer: both copied.
    const history = Buffer.from('1\t0/3000000\tno recovery target specified\n');
    const shared = Buffer.concat([Buffer.alloc(7), history]).subarray(7);
    expect((await wal.push('00000002.history', shared, { encoder: pool })).stored).toBe(true);
    expect(shared.equals(history)).toBe(true);
    expect((await wal.fetch('00000002.history'))?.equals(history)).toBe(true);

    // Pushed again: found, not encoded, and the content stays the caller's.
    const again = Buffer.from(inline);
    expect(await wal.push('000000010000000000000002', again, { encoder: pool })).toEqual({
      stored: false,
      storedSize: byInline.storedSize,
    });
    expect(again.length).toBe(inline.length);
  });

  it('rejects the pushes waiting on a thread that dies, stores nothing of them, and starts another for the next', async () => {
    repo = await createTestRepo();
    const wal = repo.repository.wal;
    let crashing = true;
    const crashOnFirstMessage = `require('node:worker_threads').parentPort.on('message', () => { throw new Error('boom'); });`;
    const { pool, started } = watchedPool(1, () =>
      crashing
        ? new Worker(crashOnFirstMessage, { eval: true })
        : startWorker(
            new URL('../src/repository/wal-encoder.ts', import.meta.url).href,
            'wal-encoder-worker',
          ),
    );
    const failed = (error: unknown) => error;
    const first = wal.push('000000010000000000000003', walSegment('a'), { encoder: pool }).catch(failed);
    const second = pool.encode(someJob()).catch(failed);
    expect(await first).toBeInstanceOf(WalEncoderStopped);
    expect(String(await first)).toMatch(/boom/);
    expect(await second).toBeInstanceOf(WalEncoderStopped);
    expect(await wal.header('000000010000000000000003')).toBeUndefined();

    crashing = false;
    const content = walSegment('b');
    const copy = Buffer.from(content);
    expect((await wal.push('000000010000000000000003', content, { encoder: pool })).stored).toBe(true);
    expect((await wal.fetch('000000010000000000000003'))?.equals(copy)).toBe(true);
    expect(started.length).toBe(3);
  });

  it('stops its threads when closed, fails a job still running, and takes no more', async () => {
    const { pool, started } = watchedPool(2);
    expect(started.length).toBe(pool.size);
    const exits = started.map(exited);
    await pool.encode(someJob());
    const running = pool.encode(someJob()).then(
      () => undefined,
      (error: unknown) => error,
    );
    await pool.close();
    await Promise.all(exits);
    // Either it finished before the thread stopped, or it failed: it does not hang.
    const outcome = await running;
    if (outcome !== undefined) expect(outcome).toBeInstanceOf(WalEncoderStopped);
    await expect(pool.encode(someJob())).rejects.toBeInstanceOf(WalEncoderStopped);
  });
});
