import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PAGE_SIZE } from '../src/postgres/physical/page-chunks.ts';
import { pageChecksum, pageHeader, pageVerifies } from '../src/postgres/physical/page-checksum.ts';
import { startCluster, type TestCluster } from './helpers/postgres.ts';

/**
 * strongbox's page checksum against the one the server wrote: pages of a real cluster initialised
 * with data checksums, read after a checkpoint.
 */
describe('page checksums', () => {
  let cluster: TestCluster;
  /** A heap, its index, and a catalog: pages of three layouts. */
  let files: Buffer[];

  beforeAll(async () => {
    cluster = await startCluster({ dataChecksums: true });
    await cluster.psql(
      `create table pages (id int primary key, note text);
       insert into pages select g, repeat(md5(g::text), 1 + g % 7) from generate_series(1, 20000) g;
       checkpoint`,
    );
    const relations = ['pages', 'pages_pkey', 'pg_class'];
    files = await Promise.all(
      relations.map(async (relation) =>
        readFile(
          path.join(
            cluster.dataDir,
            (await cluster.psql(`select pg_relation_filepath('${relation}')`)).trim(),
          ),
        ),
      ),
    );
  });
  afterAll(async () => {
    await cluster?.stop();
  });

  it('computes the checksum the server wrote on every page', () => {
    let checked = 0;
    const before = files.map((file) => Buffer.from(file));
    for (const file of files) {
      expect(file.length % PAGE_SIZE).toBe(0);
      for (let offset = 0; offset < file.length; offset += PAGE_SIZE) {
        const header = pageHeader(file, offset);
        if (header.isNew) continue;
        expect(pageChecksum(file, offset, offset / PAGE_SIZE)).toBe(header.checksum);
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(100);
    // The checksum field is cleared while it is computed, and put back.
    for (const [i, file] of files.entries()) expect(file.equals(before[i]!)).toBe(true);
  });

  it('gives the same checksum to a page that is not 4-byte aligned in its buffer', () => {
    const page = files[0]!.subarray(PAGE_SIZE, 2 * PAGE_SIZE);
    const shifted = Buffer.alloc(PAGE_SIZE + 1);
    page.copy(shifted, 1);
    expect(pageChecksum(shifted, 1, 1)).toBe(pageHeader(page, 0).checksum);
  });

  it('refuses a changed byte or another block number, and takes pages WAL replay rewrites', () => {
    const page = Buffer.from(files[0]!.subarray(0, PAGE_SIZE));
    const { lsn } = pageHeader(page, 0);
    expect(pageVerifies(page, 0, 0, lsn + 1n)).toBe(true);
    // The same page at another place in its relation.
    expect(pageVerifies(page, 0, 1, lsn + 1n)).toBe(false);
    page[PAGE_SIZE - 200]! ^= 0x01;
    expect(pageVerifies(page, 0, 0, lsn + 1n)).toBe(false);
    // Written since the backup began (its LSN at or after the start): replay brings it whole.
    expect(pageVerifies(page, 0, 0, lsn)).toBe(true);
    // Never initialised: nothing to check, as the server does.
    expect(pageVerifies(Buffer.alloc(PAGE_SIZE), 0, 7, lsn + 1n)).toBe(true);
  });
});
