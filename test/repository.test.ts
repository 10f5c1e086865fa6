import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, KeyError, VerificationError, openRepository } from '../src/index.ts';
import { Repository } from '../src/repository/repository.ts';
import { decodeIdentityFile } from '../src/repository/keys.ts';
import { signMessage, SigningKey } from '../src/crypto/signing.ts';
import { seededBytes } from './helpers/data.ts';
import { PASSWORD, backupBuffer, createTestRepo, readAll, type TestRepo } from './helpers/repo.ts';
import { LocalBackend } from '../src/storage/local.ts';
import { backup } from '../src/ops/backup.ts';
import { CHUNK_BOUNDARY, type ContentPiece } from '../src/sources/source.ts';
import { streamSource } from '../src/sources/stdin.ts';
import { filesSource } from '../src/sources/files.ts';

let repo: TestRepo | undefined;
afterEach(async () => {
  await repo?.repository.close();
  await repo?.cleanup();
  repo = undefined;
});

describe('repository', () => {
  it('round-trips data and deduplicates an identical second backup', async () => {
    repo = await createTestRepo();
    const data = seededBytes('round trip', 6_000_000);
    const first = await backupBuffer(repo.repository, data);
    expect(first.newBlobs).toBeGreaterThan(10);
    const second = await backupBuffer(repo.repository, data);
    // Only the tree is new: a stdin file node carries the time of its backup.
    expect(second.newBlobs).toBe(1);
    expect(second.bytesNew).toBeLessThan(10_000);
    expect(second.parent).toBe(first.snapshot);
    const reopened = await repo.reopen();
    expect((await readAll(reopened, second.snapshot)).equals(data)).toBe(true);
    await reopened.close();
  });

  it('refuses to create a repository in a non-empty directory', async () => {
    repo = await createTestRepo();
    await writeFile(path.join(repo.dir, 'other'), 'x');
    await expect(Repository.init(new LocalBackend(repo.dir), PASSWORD)).rejects.toBeInstanceOf(ConfigError);
    await expect(Repository.init(new LocalBackend(repo.location), PASSWORD)).rejects.toThrow(
      /already a strongbox repository/,
    );
  });

  it('rejects a wrong password with a key error (exit 5)', async () => {
    repo = await createTestRepo();
    const error = await repo.reopen('wrong').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(KeyError);
    expect((error as KeyError).exitCode).toBe(5);
    expect((error as KeyError).message).toMatch(/wrong password/);
  });

  it('stores changed chunks as deltas of similar stored ones, and reads them back exactly', async () => {
    repo = await createTestRepo();
    const original = seededBytes('delta base', 2_000_000);
    await backupBuffer(repo.repository, original);
    // Scattered small edits: every chunk changes a little, as rows inserted into free space do.
    const edited = Buffer.from(original);
    for (let at = 1000; at < edited.length; at += 20_000) edited.write('EDITED ROW', at);
    const second = await backupBuffer(repo.repository, edited);
    expect(second.deltaBlobs).toBeGreaterThan(second.newBlobs / 2);
    expect(second.stored).toBeLessThan(original.length / 10);
    const reopened = await repo.reopen();
    expect((await readAll(reopened, second.snapshot)).equals(edited)).toBe(true);
  });

  it("takes a changed chunk no sketch matches as a delta of the one at its place in the file's previous version", async () => {
    repo = await createTestRepo();
    // Records shorter than the chunker's minimum, each ended by a boundary: chunks without sketch
    // candidates, so only their place can find them a base.
    const records = Array.from({ length: 12 }, (_, i) => seededBytes(`record ${i}`, 20_000));
    const stream = (name: string, parts: Buffer[]) =>
      streamSource({ name }, () => ({
        content: (async function* (): AsyncGenerator<ContentPiece> {
          for (const part of parts) {
            yield part;
            yield CHUNK_BOUNDARY;
          }
        })(),
        finished: Promise.resolve(),
        stop: () => undefined,
      }));
    await backup(repo.repository, stream('records', records), { threads: 1 });
    // A new record before the others, longer than one, shifts them all; the 8th changes by one byte.
    const changed = Buffer.from(records[7]!);
    changed[10_000]! ^= 0xff;
    const next = [seededBytes('inserted', 30_000), ...records.slice(0, 7), changed, ...records.slice(8)];
    const second = await backup(repo.repository, stream('records', next), { threads: 1 });
    expect(second.newBlobs).toBe(3); // the inserted record, the changed one, the tree
    expect(second.deltaBlobs).toBe(1);
    expect(second.stored).toBeLessThan(40_000); // the new record whole, the changed one a small delta
    expect((await readAll(await repo.reopen(), second.snapshot)).equals(Buffer.concat(next))).toBe(true);
    // Without a previous version of the same stream there is nothing to take the place of.
    const unrelated = await backup(
      repo.repository,
      stream('other', [Buffer.from(records[3]!).fill(1, 0, 1)]),
      {
        threads: 1,
      },
    );
    expect(unrelated.deltaBlobs).toBe(0);
  });

  it('takes a changed file smaller than a chunk as a delta of its previous version', async () => {
    repo = await createTestRepo();
    // Under the chunker's minimum size: one chunk, without a sketch.
    const file = path.join(repo.dir, 'settings.bin');
    const original = seededBytes('settings', 40_000);
    await writeFile(file, original);
    await backup(repo.repository, filesSource([file]), { threads: 1 });
    const edited = Buffer.from(original);
    edited[20_000]! ^= 0xff;
    await writeFile(file, edited);
    const second = await backup(repo.repository, filesSource([file]), { threads: 1 });
    expect(second.deltaBlobs).toBe(1);
    expect(second.stored).toBeLessThan(original.length / 2);
  });

  it('round-trips random data of random sizes (property)', async () => {
    repo = await createTestRepo();
    const repository = repo.repository;
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 0, max: 600_000 }),
        fc.integer({ min: 1, max: 100_000 }),
        fc.string(),
        async (size, piece, seed) => {
          const data = seededBytes(seed, size);
          const result = await backupBuffer(repository, data, `random-${size}`, piece);
          expect((await readAll(repository, result.snapshot)).equals(data)).toBe(true);
        },
      ),
      { numRuns: 12 },
    );
  });
});

describe('keys', () => {
  it('lets a write-only key back up and list, but not read', async () => {
    repo = await createTestRepo();
    await repo.repository.addKey('writer password', 'write-only');
    const data = seededBytes('write-only', 500_000);
    const full = await backupBuffer(repo.repository, data, 'db.dump');
    const writer = await repo.reopen('writer password');
    expect(writer.keyKind).toBe('write-only');
    expect(writer.canRead).toBe(false);
    // Deduplicates against what the full key stored, without reading it.
    const written = await backupBuffer(writer, data, 'db.dump');
    expect(written.newBlobs).toBe(1); // the tree alone
    expect(written.bytesNew).toBeLessThan(10_000);
    const listed = await writer.listSnapshots();
    expect(listed.map((snapshot) => snapshot.id).sort()).toEqual([full.snapshot, written.snapshot].sort());
    expect(listed[0]!.header.name).toBe('db.dump');
    await expect(writer.loadSnapshot(full.snapshot)).rejects.toBeInstanceOf(KeyError);
    await writer.loadIndex();
    const someBlob = writer.index.entries().next().value![0];
    await expect(writer.readBlob(someBlob)).rejects.toThrow(/write-only key cannot/);
    await expect(writer.addKey('x', 'full')).rejects.toBeInstanceOf(KeyError);
    // And the full key reads what the write-only key wrote.
    expect((await readAll(repo.repository, written.snapshot)).equals(data)).toBe(true);
    await writer.close();
  });

  it('refuses a config whose recipients were re-signed by someone else', async () => {
    repo = await createTestRepo();
    await repo.repository.addKey('writer password', 'write-only');
    const backend = new LocalBackend(repo.location);
    const config = JSON.parse((await backend.get('config')).toString());
    const attacker = SigningKey.generate();
    config.recipients = [Buffer.alloc(32, 7).toString('base64')];
    config.adminPublicKey = attacker.publicRaw.toString('base64');
    config.signature = signMessage(attacker.privateRaw, Buffer.from('anything')).toString('base64');
    await backend.put('config', Buffer.from(JSON.stringify(config)));
    await expect(repo.reopen('writer password')).rejects.toBeInstanceOf(VerificationError);
    await expect(repo.reopen()).rejects.toBeInstanceOf(VerificationError);
  });

  it('changes a password without touching data', async () => {
    repo = await createTestRepo();
    const result = await backupBuffer(repo.repository, seededBytes('passwd', 100_000));
    await repo.repository.changePassphrase('new password');
    await expect(repo.reopen()).rejects.toBeInstanceOf(KeyError);
    const reopened = await repo.reopen('new password');
    expect((await readAll(reopened, result.snapshot)).length).toBe(100_000);
    expect(await reopened.listKeys()).toHaveLength(1);
  });

  it('opens with an identity file instead of a password', async () => {
    repo = await createTestRepo();
    const identity = decodeIdentityFile(await repo.repository.exportIdentity('full'));
    const opened = await openRepository({ repo: repo.location, identity });
    expect(opened.canRead).toBe(true);
    const writerIdentity = decodeIdentityFile(await repo.repository.exportIdentity('write-only'));
    expect((await openRepository({ repo: repo.location, identity: writerIdentity })).canRead).toBe(false);
  });

  it('rotates to a new identity: old data stays readable, every other key retires', async () => {
    repo = await createTestRepo();
    await repo.repository.addKey('second full', 'full');
    await repo.repository.addKey('writer', 'write-only');
    const before = await backupBuffer(repo.repository, seededBytes('before rotation', 200_000));
    const oldRecipients = repo.repository.config.recipients;
    const oldAdmin = repo.repository.config.adminPublicKey;
    const rotated = await repo.repository.rotate(PASSWORD);
    expect(rotated.removed).toHaveLength(2);
    expect(rotated.retired).toHaveLength(3);
    expect(repo.repository.config.recipients).not.toEqual(oldRecipients);
    expect(repo.repository.config.adminPublicKey).not.toBe(oldAdmin);
    expect(repo.repository.config.retiredAdminKeys).toEqual([oldAdmin]);
    await expect(repo.reopen('second full')).rejects.toBeInstanceOf(KeyError);
    // A write-only key pins the administrator key that rotation replaced: it must be issued again.
    await expect(repo.reopen('writer')).rejects.toThrow(/issued before the repository's keys were rotated/);
    // Issued again with the same password: the password now opens the new key, not the retired one.
    await repo.repository.addKey('writer', 'write-only');
    const writer = await repo.reopen('writer');
    const after = await backupBuffer(writer, seededBytes('after rotation', 200_000));
    const reopened = await repo.reopen();
    // What the retired keys wrote before stays trusted through the rotation's endorsement.
    expect((await reopened.listSnapshots()).map((snapshot) => snapshot.id).sort()).toEqual(
      [before.snapshot, after.snapshot].sort(),
    );
    expect((await readAll(reopened, before.snapshot)).equals(seededBytes('before rotation', 200_000))).toBe(
      true,
    );
    expect((await readAll(reopened, after.snapshot)).equals(seededBytes('after rotation', 200_000))).toBe(
      true,
    );
  });

  it('removes a full key: the others keep working, it and every write-only key retire', async () => {
    repo = await createTestRepo();
    const leaving = await repo.repository.addKey('leaving', 'full');
    await repo.repository.addKey('staying', 'full');
    await repo.repository.addKey('writer', 'write-only');
    const before = await backupBuffer(repo.repository, seededBytes('before removal', 100_000));
    const kept = await repo.reopen('leaving');
    const oldRecipients = repo.repository.config.recipients;
    const result = await repo.repository.removeKey(leaving.slice(0, 12));
    expect(result.rotated).toBe(true);
    expect(result.retired).toHaveLength(2);
    expect(repo.repository.config.recipients).not.toEqual(oldRecipients);
    await expect(repo.reopen('leaving')).rejects.toBeInstanceOf(KeyError);
    await expect(repo.reopen('writer')).rejects.toThrow(/issued before the repository's keys were rotated/);
    const staying = await repo.reopen('staying');
    const after = await backupBuffer(staying, seededBytes('after removal', 100_000));
    expect((await readAll(staying, before.snapshot)).equals(seededBytes('before removal', 100_000))).toBe(
      true,
    );
    // The removed key's session, still open, cannot read what was written after.
    await expect(readAll(kept, after.snapshot)).rejects.toThrow();
    await kept.close();
    await staying.close();
  });

  it('refuses to remove the key in use', async () => {
    repo = await createTestRepo();
    const [current] = await repo.repository.listKeys();
    await expect(repo.repository.removeKey(current!.id)).rejects.toThrow(/key in use/);
    const other = await repo.repository.addKey('other', 'full');
    await repo.repository.removeKey(other.slice(0, 12));
    expect(await repo.repository.listKeys()).toHaveLength(1);
  });
});
