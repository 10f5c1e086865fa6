import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  openRepository,
  type CheckResult,
  type RepairIndexResult,
  type Repository,
} from '../../src/index.ts';
import { packName } from '../../src/repository/blob.ts';
import { decodeIdentityFile } from '../../src/repository/keys.ts';
import { serializeIndex, type IndexedPackRecord } from '../../src/repository/master-index.ts';
import { PackBuilder } from '../../src/repository/pack-format.ts';
import { sealJson } from '../../src/repository/sealed-file.ts';
import { signObject } from '../../src/repository/signed-object.ts';
import { SigningKey } from '../../src/crypto/signing.ts';
import { expectExit, runCli, tempRepo, type TempRepo } from '../helpers/cli.ts';
import { seededBytes } from '../helpers/data.ts';
import { describeTree } from '../helpers/files.ts';

/**
 * A write-only key (and storage that lets it create objects, as every writer's must) adds what a
 * writer may add: a pack of its own, encrypted to the repository's recipients, whose table claims
 * blob ids already stored, with garbage in their place, and index files that point at it, named
 * so that readers load them first. It also lists the legitimate packs again with its own data key
 * and with entries that disagree with their tables. Nothing a legitimate key wrote may be lost:
 * every snapshot restores byte for byte, a later backup too, `check --read-data` names the
 * poisoned pack, and `repair index` rebuilds an index that passes it.
 */

interface Snapshot {
  id: string;
  tree: Map<string, string>;
}

/**
 * Seals and signs an index file as writers do (the write-only key is a current writer: its
 * signature is accepted), until its name sorts before every other index file.
 */
async function writeIndexFirst(
  attacker: Repository,
  signing: SigningKey,
  records: IndexedPackRecord[],
): Promise<string> {
  for (;;) {
    const sealed = sealJson('SBI2', attacker.metadataKey, serializeIndex(records));
    const bytes = signObject('index', attacker.config.id, sealed, signing);
    const name = `index/${createHash('sha256').update(bytes).digest('hex')}`;
    if (!name.startsWith('index/00')) continue;
    await attacker.backend.put(name, bytes);
    return name;
  }
}

/**
 * The attacker's pack: for every blob the index lists, a blob of garbage of the same length under
 * that id, sealed with a data key of its own and wrapped to the recipients, with a table that
 * agrees with the index file that lists it.
 */
async function forgeBogusPack(attacker: Repository): Promise<IndexedPackRecord> {
  const builder = new PackBuilder(attacker.recipients, 0, 1 << 20);
  for (const [id, blob] of attacker.index.entries())
    builder.add(Buffer.from(id, 'hex'), blob.type, seededBytes(`garbage ${id}`, blob.rawLength));
  const { bytes, record } = builder.finish();
  await attacker.backend.put(packName(record.id), Buffer.from(bytes));
  return { ...record, keys: Buffer.from(record.keys) };
}

/**
 * The legitimate packs listed again, in two index files: once with the attacker's own data key
 * (where the first listing of a pack was the one used, every blob in it failed to decrypt), once
 * with every entry marked compressed and a byte longer (where the last listing of a place was the
 * one used, it could not be read).
 */
function relistLegitimatePacks(attacker: Repository, bogusKeys: Buffer): IndexedPackRecord[][] {
  const withForeignKey: IndexedPackRecord[] = [];
  const shifted: IndexedPackRecord[] = [];
  for (const pack of attacker.index.packIdList()) {
    const [listing] = attacker.index.pack(pack)!.listings;
    const blobs = [...attacker.index.everyLocation()]
      .filter(([, blob]) => blob.pack === pack)
      .map(([id, blob]) => ({ ...blob, id }));
    withForeignKey.push({ id: pack, size: listing!.size, keys: bogusKeys, blobs });
    shifted.push({
      id: pack,
      size: listing!.size,
      keys: listing!.keys,
      blobs: blobs.map((blob) => ({ ...blob, length: blob.length + 1, compression: 1 as const })),
    });
  }
  return [withForeignKey, shifted];
}

describe('attack: index poisoning by a write-only key', () => {
  let repo: TempRepo;
  let source: string;
  const snapshots: Snapshot[] = [];
  let bogusPack: string;
  const full = () => repo.env;
  const writeOnly = () => ({
    STRONGBOX_REPO: repo.repo,
    STRONGBOX_IDENTITY_FILE: path.join(repo.dir, 'db1.id'),
  });

  async function backupFiles(env: Record<string, string>): Promise<string> {
    const result = await runCli(['backup', 'files', source, '--json'], { env });
    expectExit(result, 0);
    return (JSON.parse(result.stdout.toString()) as { snapshot: string }).snapshot;
  }

  async function restoreAll(): Promise<string> {
    let warnings = '';
    for (const snapshot of snapshots) {
      const target = path.join(repo.dir, `restore-${snapshot.id.slice(0, 8)}-${Math.random()}`);
      const result = await runCli(['restore', 'files', snapshot.id, '--target', target], { env: full() });
      expectExit(result, 0);
      warnings += result.stderr;
      expect(await describeTree(path.join(target, source))).toEqual(snapshot.tree);
    }
    return warnings;
  }

  beforeAll(async () => {
    repo = await tempRepo();
    source = path.join(repo.dir, 'source');
    await mkdir(path.join(source, 'sub'), { recursive: true });
    await writeFile(path.join(source, 'big.bin'), seededBytes('big', 3_000_000));
    await writeFile(path.join(source, 'sub', 'small.txt'), 'a small file\n');
    expectExit(await runCli(['init', '--pack-size', '1'], { env: full() }), 0);
    expectExit(
      await runCli(['key', 'add', '--write-only', '--identity-file-out', path.join(repo.dir, 'db1.id')], {
        env: full(),
      }),
      0,
    );
    snapshots.push({ id: await backupFiles(full()), tree: await describeTree(source) });
    // A changed file: its chunks are stored as deltas of the first backup's.
    const changed = seededBytes('big', 3_000_000);
    for (let at = 10; at < changed.length; at += 150_000) changed[at]! ^= 1;
    await writeFile(path.join(source, 'big.bin'), changed);
    snapshots.push({ id: await backupFiles(full()), tree: await describeTree(source) });
    await writeFile(path.join(source, 'sub', 'from-db-host.txt'), 'written by the write-only key\n');
    snapshots.push({ id: await backupFiles(writeOnly()), tree: await describeTree(source) });

    // The attack, with nothing but the write-only key's material and the storage.
    const material = decodeIdentityFile(await readFile(path.join(repo.dir, 'db1.id'), 'utf8'));
    expect(material.kind).toBe('write-only');
    const attacker = await openRepository({ repo: repo.repo, identity: material });
    if (material.kind !== 'write-only') throw new Error('a write-only identity');
    const signing = new SigningKey(material.signingKey);
    try {
      await attacker.loadIndex();
      const bogus = await forgeBogusPack(attacker);
      bogusPack = bogus.id;
      const relisted = relistLegitimatePacks(attacker, bogus.keys);
      await writeIndexFirst(attacker, signing, [bogus]);
      for (const records of relisted) await writeIndexFirst(attacker, signing, records);
    } finally {
      await attacker.close();
    }
  }, 300_000);
  afterAll(async () => {
    await repo?.cleanup();
  });

  it('restores every snapshot byte for byte, naming the bogus pack', async () => {
    const warnings = await restoreAll();
    expect(warnings).toContain(bogusPack.slice(0, 16));
  }, 120_000);

  it('makes a next backup (full key, then write-only key) that restores byte for byte', async () => {
    await writeFile(path.join(source, 'sub', 'after.txt'), 'after the attack\n');
    snapshots.push({ id: await backupFiles(full()), tree: await describeTree(source) });
    await writeFile(path.join(source, 'sub', 'after-db-host.txt'), 'after the attack, from the db host\n');
    snapshots.push({ id: await backupFiles(writeOnly()), tree: await describeTree(source) });
    await restoreAll();
  }, 120_000);

  it('check --read-data exits 7 naming the bogus pack and why', async () => {
    const result = await runCli(['check', '--read-data'], { env: full() });
    expectExit(result, 7);
    expect(result.stderr).toContain(bogusPack.slice(0, 16));
    expect(result.stderr).toMatch(
      /disagrees? with the pack's own table: the index may have been tampered with/,
    );
    expect(result.stderr).toContain('strongbox repair index');
  }, 120_000);

  it('repair index rebuilds an index that check --read-data accepts, losing nothing', async () => {
    const dryRun = await runCli(['repair', 'index', '--dry-run', '--json'], { env: full() });
    expectExit(dryRun, 0);
    const indexBefore = await readdir(path.join(repo.repo, 'index'));
    const repair = await runCli(['repair', 'index', '--json'], { env: full() });
    expectExit(repair, 0);
    const report = JSON.parse(repair.stdout.toString()) as RepairIndexResult;
    expect(JSON.parse(dryRun.stdout.toString())).toEqual({ ...report, dryRun: true, indexFilesRemoved: 0 });
    // The bogus pack's table authenticates (a writer made it), but every blob in it is a forged
    // duplicate: read, failed, left out.
    expect(report.packsLeftOut).toEqual([bogusPack]);
    expect(report.packs).toBe(report.packsStored - 1);
    expect(report.indexFilesRemoved).toBe(indexBefore.length);
    const indexAfter = await readdir(path.join(repo.repo, 'index'));
    expect(indexAfter.filter((name) => indexBefore.includes(name))).toEqual([]);

    const checked = await runCli(['check', '--read-data', '--json'], { env: full() });
    expectExit(checked, 0);
    const result = JSON.parse(checked.stdout.toString()) as CheckResult;
    expect(result.problems).toEqual([]);
    // Still in storage, in no index file, and reported for what it is; nothing reads it.
    expect(result.unindexedPacks).toEqual([
      { pack: bogusPack, size: expect.any(Number), cause: 'blobs-fail-authentication' },
    ]);
    const text = await runCli(['check', '--read-data'], { env: full() });
    expectExit(text, 0);
    expect(text.stderr).toMatch(/1 pack \([0-9.]+ \w+\) in no index file: their blobs fail authentication/);
    await restoreAll();
  }, 180_000);
});
