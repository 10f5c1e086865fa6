import { createHash } from 'node:crypto';
import { copyFile, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SigningKey } from '../../src/crypto/signing.ts';
import { decodeIdentityFile, type KeyMaterial } from '../../src/repository/keys.ts';
import type { RepositoryConfig } from '../../src/repository/config.ts';
import { deriveWriterKeys } from '../../src/repository/secrets.ts';
import { openJson } from '../../src/repository/sealed-file.ts';
import { encodeSnapshot, splitSnapshot, type SnapshotHeader } from '../../src/repository/snapshot.ts';
import { expectExit, runCli, tempRepo, type TempRepo } from '../helpers/cli.ts';

/**
 * What someone with access to the storage (and, below, a write-only key's material, as on a
 * compromised database host) can do to a repository by rewriting, splicing, deleting and rolling
 * back its files, and what strongbox does about it: refused or detected, with the exit code and a
 * message naming what is wrong, and nothing lost for the legitimate keys.
 */
let repo: TempRepo;
const cli = (args: string[], env: Record<string, string | undefined> = {}, input?: string) =>
  runCli(args, { env: { ...repo.env, ...env }, ...(input === undefined ? {} : { input }) });
const snapshotsDir = () => path.join(repo.repo, 'snapshots');

async function backup(text: string, env: Record<string, string | undefined> = {}): Promise<string> {
  const result = await cli(['backup', 'stdin', '--name', 'notes', '--json'], env, text);
  expectExit(result, 0);
  return (JSON.parse(result.stdout.toString()) as { snapshot: string }).snapshot;
}

beforeEach(async () => {
  repo = await tempRepo();
  expectExit(await cli(['init']), 0);
});
afterEach(() => repo.cleanup());

describe('attack: a snapshot header spliced onto an older body, with no key at all', () => {
  it('is not trusted: latest stays the genuine newest, and check fails (exit 7)', async () => {
    const older = await backup('old data\n');
    const newer = await backup('new data\n');
    const oldParts = splitSnapshot(await readFile(path.join(snapshotsDir(), older)));
    const newBytes = await readFile(path.join(snapshotsDir(), newer));
    const newParts = splitSnapshot(newBytes);
    // The newest header, the older body, the newest file's signature trailer: renamed to its hash.
    const prefix = newBytes.subarray(0, 12);
    const spliced = Buffer.concat([
      prefix,
      newParts.header,
      oldParts.stanzas,
      oldParts.body,
      newBytes.subarray(newBytes.length - 100),
    ]);
    const id = createHash('sha256').update(spliced).digest('hex');
    await writeFile(path.join(snapshotsDir(), id), spliced);

    const latest = await cli(['cat', 'latest']);
    expectExit(latest, 0);
    expect(latest.stdout.toString()).toBe('new data\n');
    const named = await cli(['cat', id.slice(0, 12)]);
    expectExit(named, 7);
    expect(named.stderr).toMatch(/its signature does not verify/);
    const checked = await cli(['check', '--read-data']);
    expectExit(checked, 7);
    expect(checked.stderr).toMatch(new RegExp(`snapshots/${id}: not trusted: its signature does not verify`));
  });
});

describe('attack: the newest snapshot file deleted from the storage', () => {
  it('is reported by snapshots and check (exit 7), and latest refuses to fall back to older data', async () => {
    const older = await backup('old data\n');
    const newer = await backup('new data\n');
    expectExit(await cli(['snapshots']), 0); // this client has now seen both
    await rm(path.join(snapshotsDir(), newer));

    const listed = await cli(['snapshots', '--json']);
    expectExit(listed, 0);
    expect(JSON.parse(listed.stdout.toString())).toContainEqual(
      expect.objectContaining({ id: newer, disappeared: true }),
    );
    const checked = await cli(['check']);
    expectExit(checked, 7);
    expect(checked.stderr).toMatch(new RegExp(`snapshots/${newer}: snapshot of .* has disappeared`));
    const latest = await cli(['cat', 'latest']);
    expectExit(latest, 7);
    expect(latest.stderr).toMatch(
      new RegExp(`snapshot this client saw earlier has disappeared: ${newer.slice(0, 8)}`),
    );
    // The older snapshot is still there for whoever names it.
    const named = await cli(['cat', older.slice(0, 8)]);
    expectExit(named, 0);
    expect(named.stdout.toString()).toBe('old data\n');
    // Another client, which never saw the deleted snapshot, cannot know of it: documented.
    const fresh = await cli(['cat', 'latest'], { STRONGBOX_STATE_DIR: path.join(repo.dir, 'other-client') });
    expectExit(fresh, 0);
    expect(fresh.stdout.toString()).toBe('old data\n');
  });
});

describe('attack: the config rolled back to an earlier one', () => {
  it('is refused (exit 7) by every client that trusted a newer one, whatever its key', async () => {
    const writerPassword = path.join(repo.dir, 'writer');
    await writeFile(writerPassword, 'writer password\n');
    expectExit(await cli(['key', 'add', '--write-only'], { STRONGBOX_NEW_PASSWORD_FILE: writerPassword }), 0);
    const earlier = path.join(repo.dir, 'config-earlier');
    await copyFile(path.join(repo.repo, 'config'), earlier);
    const writerClient = {
      STRONGBOX_PASSWORD_FILE: writerPassword,
      STRONGBOX_STATE_DIR: path.join(repo.dir, 'host'),
    };
    await backup('from the host\n', writerClient);
    // A change the rollback would undo: here, a second write-only key.
    const second = path.join(repo.dir, 'second');
    await writeFile(second, 'second writer\n');
    expectExit(await cli(['key', 'add', '--write-only'], { STRONGBOX_NEW_PASSWORD_FILE: second }), 0);
    await backup('from the host again\n', writerClient);

    await copyFile(earlier, path.join(repo.repo, 'config'));
    for (const env of [{}, writerClient]) {
      const opened = await cli(['backup', 'stdin', '--name', 'notes'], env, 'x\n');
      expectExit(opened, 7);
      expect(opened.stderr).toMatch(
        /is older than one this client has trusted \(epoch 3\): it was rolled back/,
      );
    }
  });

  it('before a rotation is refused by current keys even without local state (the signature)', async () => {
    const before = await readFile(path.join(repo.repo, 'config'));
    expectExit(await cli(['key', 'rotate']), 0);
    const writerPassword = path.join(repo.dir, 'writer');
    await writeFile(writerPassword, 'writer password\n');
    expectExit(await cli(['key', 'add', '--write-only'], { STRONGBOX_NEW_PASSWORD_FILE: writerPassword }), 0);
    await writeFile(path.join(repo.repo, 'config'), before);
    const fresh = { STRONGBOX_STATE_DIR: path.join(repo.dir, 'fresh') };
    const full = await cli(['snapshots'], fresh);
    expectExit(full, 5);
    expect(full.stderr).toMatch(/this full key has been removed/);
    const writer = await cli(['snapshots'], { ...fresh, STRONGBOX_PASSWORD_FILE: writerPassword });
    expectExit(writer, 7);
    expect(writer.stderr).toMatch(/the repository config signature does not verify/);
  });
});

describe('attack: snapshots forged with a write-only key', () => {
  it('are shown as its own, and one dated in the future never becomes latest unless named', async () => {
    const genuine = await backup('genuine\n');
    const identityFile = path.join(repo.dir, 'host.json');
    expectExit(await cli(['key', 'add', '--write-only', '--identity-file-out', identityFile]), 0);
    const host = decodeIdentityFile(await readFile(identityFile, 'utf8')) as KeyMaterial;
    const config = JSON.parse(await readFile(path.join(repo.repo, 'config'), 'utf8')) as RepositoryConfig;
    const writer = deriveWriterKeys(host.writerSecret);
    const genuineParts = splitSnapshot(await readFile(path.join(snapshotsDir(), genuine)));
    const header = openJson<SnapshotHeader>('SBSH', writer.metadataKey, genuineParts.header);
    const recipients = config.recipients.map((recipient) => Buffer.from(recipient, 'base64'));
    const forge = async (changes: Partial<SnapshotHeader>, key: SigningKey) => {
      const forged = encodeSnapshot(
        { ...header, ...changes },
        { tree: '0'.repeat(64), paths: [], summary: {} },
        writer.metadataKey,
        recipients,
        { repositoryId: config.id, key },
      );
      await writeFile(path.join(snapshotsDir(), forged.id), forged.bytes);
      return forged.id;
    };
    const hostKey = new SigningKey(host.signingKey);
    const future = await forge({ time: '2099-01-01T00:00:00.000Z', host: 'db-primary' }, hostKey);

    const listed = await cli(['snapshots', '--json']);
    expectExit(listed, 0);
    const rows = JSON.parse(listed.stdout.toString()) as {
      id: string;
      writer: { kind: string };
      future?: boolean;
    }[];
    expect(rows.find((row) => row.id === future)).toMatchObject({
      writer: { kind: 'write-only' },
      future: true,
    });
    expect(rows.find((row) => row.id === genuine)).toMatchObject({ writer: { kind: 'full' } });
    const table = await cli(['snapshots']);
    expect(table.stdout.toString()).toMatch(
      new RegExp(`${future.slice(0, 8)} .*2099-01-01 00:00:00 \\(future!\\).* \\(w\\)`),
    );
    const latest = await cli(['cat', 'latest']);
    expectExit(latest, 0);
    expect(latest.stdout.toString()).toBe('genuine\n');
    expect(latest.stderr).toMatch(
      new RegExp(`snapshot ${future.slice(0, 8)} is dated 2099-01-01T00:00:00.000Z, in the future`),
    );

    // Claiming the full key's identity: its public key in place of the host's, which no signature matches.
    const fullKey = config.writers.find((entry) => entry.kind === 'full')!;
    const claimed = Buffer.from(await readFile(path.join(snapshotsDir(), future)));
    Buffer.from(fullKey.publicKey, 'base64').copy(claimed, claimed.length - 100);
    const claimedId = createHash('sha256').update(claimed).digest('hex');
    await writeFile(path.join(snapshotsDir(), claimedId), claimed);
    const relisted = await cli(['snapshots']);
    expect(relisted.stdout.toString()).toMatch(
      new RegExp(`${claimedId.slice(0, 8)}  damaged: not trusted: its signature does not verify`),
    );
    expect((await readdir(snapshotsDir())).length).toBe(3);
  });
});
