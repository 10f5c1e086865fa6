import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRepository } from '../../src/index.ts';
import { SigningKey } from '../../src/crypto/signing.ts';
import { generateIdentity } from '../../src/crypto/key-wrap.ts';
import { signConfig, type IdentityBundle, type RepositoryConfig } from '../../src/repository/config.ts';
import { decodeIdentityFile, type KeyMaterial } from '../../src/repository/keys.ts';
import { deriveWriterKeys } from '../../src/repository/secrets.ts';
import { openJson, sealJson } from '../../src/repository/sealed-file.ts';
import { signObject, splitSigned } from '../../src/repository/signed-object.ts';
import { decodeSnapshotBody, encodeSnapshot, splitSnapshot } from '../../src/repository/snapshot.ts';
import { expectExit, runCli, tempRepo, type TempRepo } from '../helpers/cli.ts';
import { createHash } from 'node:crypto';

/**
 * A full key that was retired (by `key rotate`, or `key remove`) and whose holder still has
 * write access to the storage: it kept every secret it held, the old administrator key and data
 * identities included. Nothing it writes may be accepted by a current key, and it may not read
 * anything written after its retirement.
 */
describe('attack: a retired full key with write access to the storage', () => {
  let repo: TempRepo;
  let retired: KeyMaterial;
  let oldBundle: IdentityBundle;
  let afterRotation: string;
  let reissuedWriter: string;
  const cli = (args: string[], env: Record<string, string | undefined> = {}, input?: string) =>
    runCli(args, { env: { ...repo.env, ...env }, ...(input === undefined ? {} : { input }) });
  const configPath = () => path.join(repo.repo, 'config');

  beforeAll(async () => {
    repo = await tempRepo();
    expectExit(await cli(['init']), 0);
    expectExit(await cli(['backup', 'stdin', '--name', 'notes'], {}, 'before rotation\n'), 0);
    const identityFile = path.join(repo.dir, 'retired.json');
    expectExit(await cli(['key', 'add', '--identity-file-out', identityFile]), 0);
    retired = decodeIdentityFile(await readFile(identityFile, 'utf8')) as KeyMaterial;
    // What the key's holder can keep while it is current: the whole identity bundle.
    const session = await openRepository({ repo: repo.repo, identity: retired, stateDirectory: false });
    oldBundle = session.requireReader('keep the bundle');
    await session.close();

    expectExit(await cli(['key', 'rotate']), 0);
    const writerPassword = path.join(repo.dir, 'writer-password');
    await writeFile(writerPassword, 'new writer\n');
    expectExit(await cli(['key', 'add', '--write-only'], { STRONGBOX_NEW_PASSWORD_FILE: writerPassword }), 0);
    reissuedWriter = writerPassword;
    const written = await cli(['backup', 'stdin', '--name', 'notes', '--json'], {}, 'after rotation\n');
    expectExit(written, 0);
    afterRotation = (JSON.parse(written.stdout.toString()) as { snapshot: string }).snapshot;
  });
  afterAll(() => repo?.cleanup());

  it('is refused when it opens the repository (exit 5)', async () => {
    const opened = await cli(['snapshots'], {
      STRONGBOX_PASSWORD_FILE: undefined,
      STRONGBOX_IDENTITY_FILE: path.join(repo.dir, 'retired.json'),
    });
    expectExit(opened, 5);
    expect(opened.stderr).toMatch(/this full key has been removed from the repository/);
  });

  it('cannot read what was written after the rotation, though it kept the old identities', async () => {
    const bytes = await readFile(path.join(repo.repo, 'snapshots', afterRotation));
    expect(() => decodeSnapshotBody(splitSnapshot(bytes), oldBundle.identities, afterRotation)).toThrow();
  });

  it('cannot make current keys accept a config it re-signed with its own recipient added', async () => {
    const genuine = await readFile(configPath());
    const config = JSON.parse(genuine.toString()) as RepositoryConfig;
    const attacker = generateIdentity().identity.publicKey.toString('base64');
    const forged = signConfig(
      {
        ...config,
        epoch: config.epoch + 1,
        recipients: [attacker],
        adminPublicKey: oldBundle.admin.publicRaw.toString('base64'),
      },
      oldBundle.admin,
    );
    await writeFile(configPath(), JSON.stringify(forged));
    try {
      for (const env of [{}, { STRONGBOX_PASSWORD_FILE: reissuedWriter }]) {
        // A client that never saw the repository: only the signature protects it.
        const opened = await cli(
          ['backup', 'stdin', '--name', 'notes'],
          { ...env, STRONGBOX_STATE_DIR: path.join(repo.dir, 'fresh-client') },
          'x\n',
        );
        expectExit(opened, 7);
        expect(opened.stderr).toMatch(/the repository config signature does not verify/);
      }
    } finally {
      await writeFile(configPath(), genuine);
    }
  });

  it('cannot plant a snapshot or an index file that a current key accepts', async () => {
    const signing = new SigningKey(retired.signingKey);
    const writer = deriveWriterKeys(retired.writerSecret);
    const config = JSON.parse((await readFile(configPath())).toString()) as RepositoryConfig;
    const recipients = config.recipients.map((recipient) => Buffer.from(recipient, 'base64'));
    const header = {
      time: new Date().toISOString(),
      host: 'db1',
      username: 'postgres',
      kind: 'stdin',
      name: 'notes',
      tags: [],
      size: 7,
      stored: 0,
      program: 'strongbox',
    };
    // Its body points at the tree of the genuine snapshot: only the signature tells them apart.
    const session = await openRepository({
      repo: repo.repo,
      passphrase: 'correct horse battery staple',
      stateDirectory: false,
    });
    const { body } = await session.loadSnapshot(afterRotation);
    await session.close();
    const planted = encodeSnapshot(header, body, writer.metadataKey, recipients, {
      repositoryId: config.id,
      key: signing,
    });
    await writeFile(path.join(repo.repo, 'snapshots', planted.id), planted.bytes);

    const indexName = (await listDir(path.join(repo.repo, 'index')))[0]!;
    const stored = splitSigned(await readFile(path.join(repo.repo, 'index', indexName)))!;
    const content = openJson('SBI2', writer.metadataKey, stored.content);
    const index = signObject('index', config.id, sealJson('SBI2', writer.metadataKey, content), signing);
    const indexId = createHash('sha256').update(index).digest('hex');
    await writeFile(path.join(repo.repo, 'index', indexId), index);

    const listed = await cli(['snapshots']);
    expectExit(listed, 0);
    expect(listed.stdout.toString()).toMatch(
      new RegExp(
        `${planted.id.slice(0, 8)}  damaged: not trusted: it is signed by key [0-9a-f]{16}, which is not a writer of this repository`,
      ),
    );
    const latest = await cli(['cat', 'latest']);
    expectExit(latest, 0);
    expect(latest.stdout.toString()).toBe('after rotation\n');
    expect(latest.stderr).toMatch(new RegExp(`skipped damaged snapshot ${planted.id.slice(0, 8)}`));
    expect(latest.stderr).toMatch(new RegExp(`skipped index file index/${indexId}: it is not trusted`));
    const checked = await cli(['check']);
    expectExit(checked, 7);
    expect(checked.stderr).toMatch(new RegExp(`snapshots/${planted.id}: not trusted`));
    expect(checked.stderr).toMatch(new RegExp(`index/${indexId}`));
  });
});

async function listDir(directory: string): Promise<string[]> {
  return (await readdir(directory)).filter((name) => !name.startsWith('.'));
}
