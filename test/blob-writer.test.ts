import { afterEach, describe, expect, it } from 'vitest';
import { BlobType } from '../src/repository/blob.ts';
import { BlobWriter } from '../src/repository/blob-writer.ts';
import { seededBytes } from './helpers/data.ts';
import { createTestRepo, type TestRepo } from './helpers/repo.ts';

let repo: TestRepo | undefined;
afterEach(async () => {
  await repo?.cleanup();
  repo = undefined;
});

/** Half random, half a repeated row: compression has something to do, and cannot do all. */
function blob(index: number, length: number): Buffer {
  const row = Buffer.from(`row ${index} `.padEnd(64, '.'));
  return Buffer.concat([seededBytes(`blob ${index}`, length / 2), Buffer.alloc(length / 2, row)]);
}

describe('BlobWriter', () => {
  it('compresses here what the workers cannot take yet, queues no more than its limit, and every blob reads back', async () => {
    repo = await createTestRepo();
    const { repository } = repo;
    const writer = new BlobWriter(repository, { threads: 1 });
    const length = 512 * 1024;
    const blobs = Array.from({ length: 48 }, (_, index) => blob(index, length));
    try {
      // Saved all at once, faster than any worker packs: the queue fills before a worker answers.
      const saved = await Promise.all(blobs.map((data) => writer.save(BlobType.data, data)));
      await writer.flush();
      expect(saved.every((result) => result.isNew)).toBe(true);
      expect(writer.queueStats.encodedHere).toBeGreaterThan(0);
      expect(writer.queueStats.encodedHere).toBeLessThan(blobs.length);
      expect(writer.queueStats.peakBytes).toBeLessThanOrEqual(writer.queuedHardLimit + length);
      const reopened = await repo.reopen();
      await reopened.loadIndex();
      for (const [index, { id }] of saved.entries())
        expect((await reopened.readBlob(id)).equals(blobs[index]!)).toBe(true);
    } finally {
      await writer.close();
    }
  });
});
