import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { check, openRepository, type Repository } from '../src/index.ts';
import { MasterIndex, type IndexedBlob, type IndexFileContent } from '../src/repository/master-index.ts';
import { sealJson } from '../src/repository/sealed-file.ts';
import { signObject } from '../src/repository/signed-object.ts';
import { SigningKey } from '../src/crypto/signing.ts';
import { decodeIdentityFile } from '../src/repository/keys.ts';
import { backupBuffer, createTestRepo, PASSWORD, readAll, type TestRepo } from './helpers/repo.ts';
import { seededRandom } from './helpers/fault-proxy.ts';
import { rounds, seed } from './helpers/soak.ts';

/**
 * Many backups of related data into one repository, some of them concurrent, with chunks small
 * enough that the index holds thousands of blobs and many of them are deltas: then every
 * snapshot must read back byte for byte and `check --read-data` must pass, and the index must say
 * the same of every blob whatever order its files are loaded in (readers load them in name
 * order, which is the order of their hashes: any order at all).
 */

/** Rows of a table as text, as a dump holds them. */
function table(next: () => number, rows: number): string[] {
  return Array.from(
    { length: rows },
    (_, n) => `${n}\tcustomer-${Math.floor(next() * 1e9)}\t${(next() * 1e4).toFixed(2)}\tpaid\n`,
  );
}

/** A day of writes: some rows changed, some inserted, some deleted. */
function mutate(next: () => number, rows: string[]): string[] {
  const changed = [...rows];
  const edits = 1 + Math.floor(next() * 40);
  for (let edit = 0; edit < edits; edit++) {
    const at = Math.floor(next() * changed.length);
    const kind = next();
    if (kind < 0.5) changed[at] = `${at}\tcustomer-${Math.floor(next() * 1e9)}\t0.00\trefunded\n`;
    else if (kind < 0.8) changed.splice(at, 0, `new\t${Math.floor(next() * 1e9)}\n`);
    else changed.splice(at, 1);
  }
  return changed;
}

let repo: TestRepo | undefined;
const opened: Repository[] = [];

afterEach(async () => {
  for (const repository of opened.splice(0)) await repository.close();
  await repo?.cleanup();
  repo = undefined;
});

describe('index load order (randomized)', () => {
  it('reads back every snapshot of related, concurrent backups, whatever the order of index files', async () => {
    const base = seed('index load order');
    for (let round = 0; round < rounds(1); round++) {
      const next = seededRandom(base + round);
      repo = await createTestRepo({ chunker: { min: 256, avg: 1024, max: 4096 }, packSize: 1024 * 1024 });
      const expected = new Map<string, Buffer>();
      let version = table(next, 100_000);
      let deltas = 0;
      for (let generation = 0; generation < 4; generation++) {
        // Two or three writers at once, each with its own session, as separate hosts would be.
        const writers = 2 + Math.floor(next() * 2);
        const versions = Array.from({ length: writers }, () => (version = mutate(next, version)));
        const sessions = await Promise.all(versions.map(() => repo!.reopen()));
        opened.push(...sessions);
        const results = await Promise.all(
          versions.map((rows, writer) =>
            backupBuffer(
              sessions[writer]!,
              Buffer.from(rows.join('')),
              `table-${writer}`,
              7_000 + writer * 999,
            ),
          ),
        );
        results.forEach((result, writer) =>
          expected.set(result.snapshot, Buffer.from(versions[writer]!.join(''))),
        );
        deltas += results.reduce((sum, result) => sum + result.deltaBlobs, 0);
        // Where a slow or stuck run is, in the test's output.
        console.log(`round ${round}: generation ${generation} backed up by ${writers} writers`);
      }
      // The case that lost data needs deltas whose bases are met late: make sure there are many.
      expect(deltas).toBeGreaterThan(100);

      const reader = await openRepository({ repo: repo.location, passphrase: PASSWORD });
      opened.push(reader);
      const result = await check(reader, { readData: 1 });
      console.log(`round ${round}: checked`);
      expect(result.problems).toEqual([]);
      expect(result.blobs).toBeGreaterThan(2048);
      for (const [snapshot, data] of expected)
        expect((await readAll(reader, snapshot)).equals(data)).toBe(true);

      // The same index from its files in other orders, each starting small to cross every growth.
      // Concurrent writers may store one blob twice: any of the places an index file gives for
      // it will do, but the entry must be one of them whole, its delta base included.
      const files: [string, IndexFileContent][] = [];
      const places = new Map<string, IndexedBlob[]>();
      for await (const object of reader.backend.list('index/')) {
        const content = await reader.readIndexFile(object.name, await reader.backend.get(object.name));
        files.push([object.name, content]);
        const alone = new MasterIndex();
        alone.addIndexFile(object.name, content);
        for (const [id, blob] of alone.entries()) places.set(id, [...(places.get(id) ?? []), blob]);
      }
      // And beside them, index files any writer could add: every listing again, with another
      // length and compression at the same place, or with a foreign data key. No order of
      // loading may let one of them replace a listing an index file gave.
      const poisoned = files.map(([name, content]): [string, IndexFileContent] => [
        `${name}-poisoned`,
        {
          packs: content.packs.map((pack) => ({
            ...pack,
            keys: Buffer.from('foreign').toString('base64'),
            blobs: pack.blobs.map(([id, type, offset, length, rawLength, compression, ...rest]) => [
              id,
              type,
              offset,
              length + 1,
              rawLength,
              1 - compression,
              ...rest,
            ]),
          })),
        },
      ]);
      for (let order = 0; order < 8; order++) {
        const shuffled = [...files, ...(order % 2 === 1 ? poisoned : [])];
        for (let i = shuffled.length - 1; i > 0; i--) {
          const j = Math.floor(next() * (i + 1));
          [shuffled[i], shuffled[j]] = [shuffled[j]!, shuffled[i]!];
        }
        const index = new MasterIndex(1 + Math.floor(next() * 4));
        for (const [name, content] of shuffled) index.addIndexFile(name, content);
        expect(index.blobCount).toBe(places.size);
        const poisonedCopies = order % 2 === 1 ? 2 : 1;
        for (const [id] of index.entries()) {
          const locations = index.locations(id);
          for (const place of places.get(id)!) expect(locations).toContainEqual(place);
          expect(locations).toHaveLength(places.get(id)!.length * poisonedCopies);
          expect(index.whyUnreadable(id)).toBeUndefined();
        }
        for (const pack of index.packIdList())
          expect(index.pack(pack)!.listings).toHaveLength(poisonedCopies);
      }

      console.log(`round ${round}: every load order read`);
      // Written to storage, signed by a current writer (a write-only key, as on a compromised
      // database host), the poisoned files cost readers warnings, never data.
      const writer = decodeIdentityFile(await reader.exportIdentity('write-only'));
      if (writer.kind !== 'write-only') throw new Error('a write-only identity');
      const signing = new SigningKey(writer.signingKey);
      for (const [, content] of poisoned) {
        const bytes = signObject(
          'index',
          reader.config.id,
          sealJson('SBI2', reader.metadataKey, content),
          signing,
        );
        await reader.backend.put(`index/${createHash('sha256').update(bytes).digest('hex')}`, bytes);
      }
      const poisonedReader = await openRepository({ repo: repo.location, passphrase: PASSWORD });
      opened.push(poisonedReader);
      const warnings: string[] = [];
      poisonedReader.onWarning = (message) => warnings.push(message);
      for (const [snapshot, data] of expected)
        expect((await readAll(poisonedReader, snapshot)).equals(data)).toBe(true);
      expect(warnings.join('\n')).toMatch(/disagree with the pack's own table/);
      for (const session of opened.splice(0)) await session.close();
      await repo.cleanup();
      repo = undefined;
    }
  }, 600_000);
});
