import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { wrapKey, type Identity } from '../src/crypto/key-wrap.ts';
import { packName } from '../src/repository/blob.ts';
import type { PackListing } from '../src/repository/master-index.ts';
import { PackTable, readPackTable } from '../src/repository/pack-tables.ts';
import type { Repository } from '../src/index.ts';
import { seededBytes } from './helpers/data.ts';
import { backupBuffer, createTestRepo, type TestRepo } from './helpers/repo.ts';

/**
 * A pack's table is found from whatever index files say of the pack, true or not: sizes past its
 * end or short of it, data keys that are not its own, and a damaged header or trailer.
 */
describe('reading a pack table', () => {
  let repo: TestRepo;
  let repository: Repository;
  let pack: string;
  let listing: PackListing;
  let bytes: Buffer;
  let identities: Identity[];

  beforeAll(async () => {
    // Small chunks: a table longer than the first read from the pack's end.
    repo = await createTestRepo({ chunker: { min: 64, avg: 256, max: 1024 }, packSize: 1024 * 1024 });
    await backupBuffer(repo.repository, seededBytes('tables', 400_000), 'tables.bin');
    repository = await repo.reopen();
    await repository.loadIndex();
    pack = repository.index
      .packIdList()
      .find((id) => repository.index.pack(id)!.listings[0]!.size > 100_000)!;
    listing = repository.index.pack(pack)!.listings[0]!;
    bytes = await repository.backend.get(packName(pack));
    ({ identities } = repository.requireReader('read pack tables'));
  });
  afterAll(async () => {
    await repository.close();
    await repo.cleanup();
  });

  /** The table of the pack stored as `name`, as the full key finds it from these listings. */
  const tableOf = (name: string, listings: PackListing[]) =>
    readPackTable(repository.backend, name, listings, identities);

  async function stored(variant: Buffer): Promise<string> {
    const name = `${pack.slice(0, 8)}${'0'.repeat(48)}${Math.random().toString(16).slice(2, 10)}`;
    await repository.backend.put(packName(name), variant);
    return name;
  }

  it('reads a table longer than the first read, with the listed size and key', async () => {
    const table = await tableOf(pack, [listing]);
    expect(table).toBeInstanceOf(PackTable);
    expect((table as PackTable).entries.length * 80).toBeGreaterThan(32 * 1024);
    expect((table as PackTable).size).toBe(bytes.length);
  });

  it('finds it past wrong sizes and foreign keys, from the pack itself', async () => {
    const foreign = wrapKey(Buffer.alloc(32, 7), repository.recipients);
    const table = await tableOf(pack, [
      { size: listing.size + 1000, keys: foreign },
      { size: listing.size - 1000, keys: foreign },
    ]);
    expect(table).toBeInstanceOf(PackTable);
    expect((table as PackTable).stanzas.equals(listing.keys)).toBe(true);
  });

  it('reads it with a listed key when the header is damaged', async () => {
    const damaged = Buffer.from(bytes);
    damaged.write('XXXX', 0);
    expect(await tableOf(await stored(damaged), [{ size: damaged.length, keys: Buffer.alloc(0) }])).toBe(
      'unauthenticated',
    );
    expect(await tableOf(await stored(damaged), [listing])).toBeInstanceOf(PackTable);
  });

  it('is unauthenticated when the trailer is damaged or the key foreign, missing when the pack is', async () => {
    const damaged = Buffer.from(bytes);
    damaged[damaged.length - 100]! ^= 1;
    expect(await tableOf(await stored(damaged), [listing])).toBe('unauthenticated');
    const foreign = wrapKey(Buffer.alloc(32, 7), repository.recipients);
    const header = Buffer.from(bytes);
    foreign.copy(header, 8);
    expect(await tableOf(await stored(header), [{ size: header.length, keys: foreign }])).toBe(
      'unauthenticated',
    );
    expect(await tableOf('ab'.repeat(32), [listing])).toBe('missing');
    expect(await tableOf('ab'.repeat(32), [])).toBe('missing');
  });
});
