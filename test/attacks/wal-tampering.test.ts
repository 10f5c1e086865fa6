import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openRepository, type Repository } from '../../src/index.ts';
import { SigningKey } from '../../src/crypto/signing.ts';
import { DamagedWalError, ExitCode, WalConflictError } from '../../src/errors.ts';
import { decodeIdentityFile, type KeyMaterial } from '../../src/repository/keys.ts';
import { signObject } from '../../src/repository/signed-object.ts';
import { encodeWal, splitWal, walSignatureTrailer } from '../../src/repository/wal-file.ts';
import { seededBytes } from '../helpers/data.ts';
import { seededRandom } from '../helpers/fault-proxy.ts';
import { createTestRepo, type TestRepo } from '../helpers/repo.ts';
import { seed } from '../helpers/soak.ts';

/**
 * What someone who writes the storage (with no key, with a database host's write-only key, or
 * with a key that has since retired) can do to archived WAL files, and what strongbox does about
 * it: every altered, moved, spliced or foreign object is refused by name (exit 7), and a genuine
 * object beside it still reads back.
 */
let repo: TestRepo;
let host: Repository;
let hostKey: KeyMaterial;
const HISTORY = '00000002.history';
const SEGMENT = '000000010000000000000005';
const OTHER = '000000010000000000000006';

const objectPath = (name: string) => path.join(repo.location, 'wal', name.slice(0, 8), name);

beforeEach(async () => {
  repo = await createTestRepo();
  hostKey = decodeIdentityFile(await repo.repository.exportIdentity('write-only')) as KeyMaterial;
  host = await openRepository({ repo: repo.location, identity: hostKey, stateDirectory: false });
});
afterEach(async () => {
  await host.close();
  await repo.cleanup();
});

async function expectDamaged(name: string, problem?: RegExp): Promise<void> {
  const error = await repo.repository.wal.fetch(name).catch((caught: unknown) => caught);
  expect(error, name).toBeInstanceOf(DamagedWalError);
  expect(error).toMatchObject({ fileName: name, exitCode: ExitCode.verification });
  if (problem) expect((error as DamagedWalError).problem).toMatch(problem);
}

/** An object with the header of `headerFrom` (its name, mac and size), the data key and frames of `bodyFrom`, signed by `key`. */
function splice(headerFrom: Buffer, bodyFrom: Buffer, key: SigningKey): Buffer {
  const headerParts = splitWal(headerFrom);
  const bodyParts = splitWal(bodyFrom);
  const content = Buffer.concat([
    headerFrom.subarray(0, 12),
    headerParts.header,
    bodyParts.stanzas,
    bodyParts.frames,
  ]);
  return Buffer.concat([
    content,
    walSignatureTrailer(content, { repositoryId: repo.repository.config.id, key }),
  ]);
}

describe('attack: bytes of a WAL object altered in storage, with no key', () => {
  it('is refused whichever byte is flipped or wherever it is cut, of a small file and of a file of several frames', async () => {
    const history = Buffer.from('1\t0/3000000\tno recovery target specified\n');
    await host.wal.push(HISTORY, history);
    const segment = seededBytes('segment', 2 * 1024 * 1024 + 5000);
    await host.wal.push(SEGMENT, segment);
    const genuine = {
      [HISTORY]: await readFile(objectPath(HISTORY)),
      [SEGMENT]: await readFile(objectPath(SEGMENT)),
    };

    // Every byte of the small one: prefix, header, stanza, frame and trailer.
    for (let at = 0; at < genuine[HISTORY].length; at++) {
      const altered = Buffer.from(genuine[HISTORY]);
      altered[at] = altered[at]! ^ 0x80;
      await writeFile(objectPath(HISTORY), altered);
      await expectDamaged(HISTORY);
    }
    // Cut short at every length, and with its trailer kept on what is left.
    const trailer = genuine[HISTORY].subarray(genuine[HISTORY].length - 100);
    for (let length = 0; length < genuine[HISTORY].length; length++) {
      await writeFile(objectPath(HISTORY), genuine[HISTORY].subarray(0, length));
      await expectDamaged(HISTORY);
      if (length === genuine[HISTORY].length - 100) continue; // that is the genuine object
      await writeFile(objectPath(HISTORY), Buffer.concat([genuine[HISTORY].subarray(0, length), trailer]));
      await expectDamaged(HISTORY);
    }
    // Bytes picked at random from the large one, with its first and last.
    const next = seededRandom(seed('WAL byte flips'));
    const size = genuine[SEGMENT].length;
    const places = [0, size - 1, ...Array.from({ length: 60 }, () => Math.floor(next() * size))];
    for (const at of places) {
      const altered = Buffer.from(genuine[SEGMENT]);
      altered[at] = altered[at]! ^ (1 + Math.floor(next() * 255));
      await writeFile(objectPath(SEGMENT), altered);
      await expectDamaged(SEGMENT);
    }
    // Cut short, or grown.
    await writeFile(objectPath(SEGMENT), genuine[SEGMENT].subarray(0, size - 1));
    await expectDamaged(SEGMENT);
    await writeFile(objectPath(SEGMENT), Buffer.concat([genuine[SEGMENT], Buffer.from([0])]));
    await expectDamaged(SEGMENT);

    for (const [name, bytes] of Object.entries(genuine)) await writeFile(objectPath(name), bytes);
    expect((await repo.repository.wal.fetch(HISTORY))?.equals(history)).toBe(true);
    expect((await repo.repository.wal.fetch(SEGMENT))?.equals(segment)).toBe(true);
  });
});

describe('attack: a WAL object copied or moved to another name, with no key', () => {
  it('is refused under the new name, and a push of the genuine file there does not overwrite it', async () => {
    const content = seededBytes('segment 5', 400_000);
    await host.wal.push(SEGMENT, content);
    await copyFile(objectPath(SEGMENT), objectPath(OTHER));
    await expectDamaged(OTHER, /names 000000010000000000000005: it was moved or copied/);
    // Filed under another timeline, under a name of that timeline.
    const elsewhere = '000000030000000000000005';
    await mkdir(path.dirname(objectPath(elsewhere)), { recursive: true });
    await copyFile(objectPath(SEGMENT), objectPath(elsewhere));
    await expectDamaged(elsewhere, /moved or copied/);

    const planted = await readFile(objectPath(OTHER));
    const conflict = await host.wal
      .push(OTHER, seededBytes('segment 6', 400_000))
      .catch((error: unknown) => error);
    expect(conflict).toBeInstanceOf(WalConflictError);
    expect(conflict).toMatchObject({ fileName: OTHER, reason: 'untrusted', exitCode: ExitCode.verification });
    expect((conflict as Error).message).toMatch(/not trusted .*moved or copied/);
    expect((await readFile(objectPath(OTHER))).equals(planted)).toBe(true);
    expect((await repo.repository.wal.fetch(SEGMENT))?.equals(content)).toBe(true);
  });
});

describe('attack: a WAL object signed by a key that is not a writer', () => {
  function forge(name: string, content: Buffer, key: SigningKey, repositoryId = repo.repository.config.id) {
    return encodeWal(
      {
        version: 1,
        name,
        size: content.length,
        mac: repo.repository.blobId(content),
        time: new Date().toISOString(),
        host: 'db1',
        program: 'strongbox 0.1.0',
      },
      content,
      repo.repository.metadataKey,
      repo.repository.recipients,
      { repositoryId, key },
    );
  }

  it('is refused from a key of its own, even with every other secret of a writer', async () => {
    const content = Buffer.from('forged');
    await mkdir(path.dirname(objectPath(SEGMENT)), { recursive: true });
    await writeFile(objectPath(SEGMENT), forge(SEGMENT, content, SigningKey.generate()));
    await expectDamaged(SEGMENT, /which is not a writer of this repository/);
    // The same object signed by the host's key is believed: the refusal is the signer's.
    await writeFile(objectPath(SEGMENT), forge(SEGMENT, content, new SigningKey(hostKey.signingKey)));
    expect((await repo.repository.wal.fetch(SEGMENT))?.equals(content)).toBe(true);
    // Signed by the host's key, but for another repository.
    await writeFile(
      objectPath(SEGMENT),
      forge(SEGMENT, content, new SigningKey(hostKey.signingKey), '11'.repeat(32)),
    );
    await expectDamaged(SEGMENT, /signature does not verify/);
  });

  it('is refused from another repository, copied in whole', async () => {
    const other = await createTestRepo();
    try {
      await other.repository.wal.push(SEGMENT, Buffer.from('from elsewhere'));
      await mkdir(path.dirname(objectPath(SEGMENT)), { recursive: true });
      await copyFile(path.join(other.location, 'wal', '00000001', SEGMENT), objectPath(SEGMENT));
      await expectDamaged(SEGMENT, /signature does not verify/);
    } finally {
      await other.cleanup();
    }
  });

  it('is refused from a write-only key retired by a rotation, while what it pushed before still reads', async () => {
    const before = seededBytes('before rotation', 100_000);
    await host.wal.push(SEGMENT, before);
    await repo.repository.rotate(undefined);
    expect((await repo.repository.wal.fetch(SEGMENT))?.equals(before)).toBe(true);
    // It keeps its signing key and every writer secret; what it signs now is not believed.
    await writeFile(
      objectPath(OTHER),
      forge(OTHER, Buffer.from('after'), new SigningKey(hostKey.signingKey)),
    );
    await expectDamaged(OTHER, /which is not a writer of this repository/);
    // Nor can it sign an object again under a name it pushed before the rotation.
    await writeFile(
      objectPath(SEGMENT),
      forge(SEGMENT, Buffer.from('after'), new SigningKey(hostKey.signingKey)),
    );
    await expectDamaged(SEGMENT, /which is not a writer of this repository/);
  });
});

describe("attack: a WAL object's header kept, its content swapped for another's", () => {
  it('is refused, even signed again by a current write-only key', async () => {
    const first = seededBytes('segment 5', 1_200_000);
    const second = seededBytes('segment 6', 1_200_000);
    await host.wal.push(SEGMENT, first);
    await host.wal.push(OTHER, second);
    const genuine = await readFile(objectPath(SEGMENT));
    const donor = await readFile(objectPath(OTHER));
    const hostSigning = new SigningKey(hostKey.signingKey);

    // The other object's data key and frames behind this header: the frames open, the mac differs.
    await writeFile(objectPath(SEGMENT), splice(genuine, donor, hostSigning));
    await expectDamaged(SEGMENT, /mac differs/);
    // This object's data key with the other's frames: they do not open.
    const ownKey = Buffer.concat([
      genuine.subarray(0, 12),
      splitWal(genuine).header,
      splitWal(genuine).stanzas,
      splitWal(donor).frames,
    ]);
    const signer = { repositoryId: repo.repository.config.id, key: hostSigning };
    await writeFile(objectPath(SEGMENT), Buffer.concat([ownKey, walSignatureTrailer(ownKey, signer)]));
    await expectDamaged(SEGMENT, /frame 0 fails authentication/);
    // With no key at all, the signature gives it away first.
    const unsigned = splice(genuine, donor, hostSigning);
    donor.subarray(donor.length - 100).copy(unsigned, unsigned.length - 100);
    await writeFile(objectPath(SEGMENT), unsigned);
    await expectDamaged(SEGMENT, /signature does not verify/);

    await writeFile(objectPath(SEGMENT), genuine);
    expect((await repo.repository.wal.fetch(SEGMENT))?.equals(first)).toBe(true);
  });
});

describe('attack: a WAL object relabelled with the other format version', () => {
  it('is refused either way, while an object of version 1 (signed whole) still reads', async () => {
    const content = seededBytes('segment 5', 1_200_000);
    await host.wal.push(SEGMENT, content);
    const current = await readFile(objectPath(SEGMENT));
    expect(current[4]).toBe(2);
    const signed = current.subarray(0, current.length - 100);
    const hostSigning = new SigningKey(hostKey.signingKey);

    // Version 2 signs a digest of the object, version 1 the object: a version byte changed on its
    // own leaves a signature over something else.
    const relabelled = Buffer.from(current);
    relabelled[4] = 1;
    await writeFile(objectPath(SEGMENT), relabelled);
    await expectDamaged(SEGMENT, /signature does not verify/);

    // What a strongbox that wrote version 1 stored: read as it was.
    const versionOne = Buffer.from(signed);
    versionOne[4] = 1;
    const older = signObject('wal', repo.repository.config.id, versionOne, hostSigning);
    await writeFile(objectPath(SEGMENT), older);
    expect((await repo.repository.wal.fetch(SEGMENT))?.equals(content)).toBe(true);
    const relabelledOlder = Buffer.from(older);
    relabelledOlder[4] = 2;
    await writeFile(objectPath(SEGMENT), relabelledOlder);
    await expectDamaged(SEGMENT, /signature does not verify/);
  });
});
