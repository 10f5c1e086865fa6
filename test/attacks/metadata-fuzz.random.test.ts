import fc from 'fast-check';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRepository, StrongboxError, type Repository } from '../../src/index.ts';
import { backupBuffer, createTestRepo, PASSWORD, readAll, type TestRepo } from '../helpers/repo.ts';
import { seededBytes } from '../helpers/data.ts';
import { rounds, seed } from '../helpers/soak.ts';

/**
 * Random damage to every kind of object a repository stores (config, key slots, index files,
 * snapshots, endorsements, packs with their trees and tables): a bit flipped, the file cut short
 * or extended, a JSON field given another value. Whatever is done, strongbox either reads back
 * exactly what was backed up or fails with a typed error (exit 7, or 5 for a key, or 3 for a
 * config that names another format), never another exception and never other data.
 */
describe('attack: random changes to stored metadata', () => {
  let repo: TestRepo;
  const originals = new Map<string, Buffer>();
  const contents = new Map<string, Buffer>();

  beforeAll(async () => {
    repo = await createTestRepo();
    const first = seededBytes('fuzz first', 300_000);
    contents.set((await backupBuffer(repo.repository, first, 'first.bin')).snapshot, first);
    await repo.repository.addKey('writer', 'write-only');
    // A rotation leaves an endorsement of what the retired keys wrote.
    await repo.repository.rotate(PASSWORD);
    await repo.repository.addKey('writer', 'write-only');
    const writer = await repo.reopen('writer');
    const second = Buffer.concat([first.subarray(0, 200_000), seededBytes('fuzz second', 50_000)]);
    contents.set((await backupBuffer(writer, second, 'second.bin')).snapshot, second);
    await writer.close();
    for (const file of await walk(repo.location)) originals.set(file, await readFile(file));
    expect([...originals.keys()].some((file) => file.includes('endorsements'))).toBe(true);
  });
  afterAll(() => repo?.cleanup());

  async function probe(): Promise<void> {
    let repository: Repository;
    try {
      repository = await openRepository({ repo: repo.location, passphrase: PASSWORD, stateDirectory: false });
    } catch (error) {
      expectTyped(error, [3, 5, 7]);
      return;
    }
    try {
      const { snapshots } = await repository.scanSnapshots();
      for (const snapshot of snapshots) {
        const expected = contents.get(snapshot.id);
        expect(expected, `an unknown snapshot ${snapshot.id} is listed`).toBeDefined();
        let read: Buffer;
        try {
          read = await readAll(repository, snapshot.id);
        } catch (error) {
          expectTyped(error, [7]);
          continue;
        }
        expect(read.equals(expected!), `snapshot ${snapshot.id} read back other data`).toBe(true);
      }
    } catch (error) {
      expectTyped(error, [7]);
    } finally {
      await repository.close();
    }
  }

  it('never crashes and never returns other data', async () => {
    const files = [...originals.keys()].sort();
    const mutation = fc.oneof(
      fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
      fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
      fc.record({
        kind: fc.constant('extend' as const),
        bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }),
      }),
      fc.record({
        kind: fc.constant('field' as const),
        field: fc.nat(),
        value: fc.jsonValue({ maxDepth: 2 }),
      }),
    );
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: files.length - 1 }), mutation, async (which, change) => {
        const file = files[which]!;
        const original = originals.get(file)!;
        await writeFile(file, mutate(original, change));
        try {
          await probe();
        } finally {
          await writeFile(file, original);
        }
      }),
      { numRuns: rounds(20), seed: seed('metadata fuzz') },
    );
    // And the repository, put back, reads whole.
    await probe();
  }, 600_000);
});

type Mutation =
  | { kind: 'flip'; at: number; bit: number }
  | { kind: 'truncate'; at: number }
  | { kind: 'extend'; bytes: Uint8Array }
  | { kind: 'field'; field: number; value: unknown };

function mutate(original: Buffer, change: Mutation): Buffer {
  switch (change.kind) {
    case 'flip': {
      const bytes = Buffer.from(original);
      if (bytes.length > 0) bytes[change.at % bytes.length]! ^= 1 << change.bit;
      return bytes;
    }
    case 'truncate':
      return original.subarray(0, change.at % Math.max(1, original.length));
    case 'extend':
      return Buffer.concat([original, change.bytes]);
    case 'field': {
      let value: unknown;
      try {
        value = JSON.parse(original.toString('utf8'));
      } catch {
        // Not JSON (an encrypted object): change a byte instead.
        return mutate(original, { kind: 'flip', at: change.field, bit: 0 });
      }
      if (typeof value !== 'object' || value === null) return original;
      const keys = Object.keys(value);
      (value as Record<string, unknown>)[keys[change.field % keys.length]!] = change.value;
      return Buffer.from(JSON.stringify(value));
    }
  }
}

function expectTyped(error: unknown, codes: number[]): void {
  if (!(error instanceof StrongboxError) || !codes.includes(error.exitCode)) throw error;
}

async function walk(directory: string): Promise<string[]> {
  const files: string[] = [];
  for (const entry of await readdir(directory, { withFileTypes: true })) {
    const full = path.join(directory, entry.name);
    if (entry.isDirectory()) files.push(...(await walk(full)));
    else if (!entry.name.startsWith('.')) files.push(full);
  }
  return files;
}
