import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CopyResult } from '../src/ops/copy.ts';
import type { SnapshotHeader } from '../src/repository/snapshot.ts';
import { AZURITE_ACCOUNT, AZURITE_KEY, startAzurite } from './helpers/azurite.ts';
import { runCli, tempRepo, type RunResult, type TempRepo, expectExit } from './helpers/cli.ts';
import { seededBytes } from './helpers/data.ts';
import { S3RVER_ACCESS_KEY, S3RVER_SECRET_KEY, startS3Server } from './helpers/s3-server.ts';
import { startSshd } from './helpers/sshd.ts';

/**
 * `strongbox copy` and `backup --copy-to` between local repositories and a repository on each
 * remote backend, served by a real server on loopback, every repository with a key of its own.
 */

type Env = Record<string, string | undefined>;

/** A test server of one backend: where a repository on it lives, and what logging in needs. */
interface Remote {
  /** The location of a new (not yet initialised) repository named `name` on the server. */
  location(name: string): string;
  /** Credentials and settings a strongbox process needs to reach the server. */
  env: Env;
  stop(): Promise<void>;
}

async function s3Remote(): Promise<Remote> {
  const server = await startS3Server();
  const endpoint = encodeURIComponent(server.endpoint);
  return {
    location: (name) => `s3://${server.bucket}/${name}?endpoint=${endpoint}&path-style=true`,
    env: { S3_ACCESS_KEY: S3RVER_ACCESS_KEY, S3_SECRET_KEY: S3RVER_SECRET_KEY },
    stop: () => server.close(),
  };
}

async function azureRemote(): Promise<Remote> {
  const azurite = await startAzurite();
  try {
    const container = await azurite.createContainer();
    const query = new URLSearchParams({ account: AZURITE_ACCOUNT, endpoint: azurite.endpoint });
    return {
      location: (name) => `azure://${container}/${name}?${query}`,
      // Variables of the machine running the tests would change which credentials are used.
      env: {
        AZURE_STORAGE_CONNECTION_STRING: undefined,
        AZURE_STORAGE_ACCOUNT: undefined,
        AZURE_STORAGE_SAS_TOKEN: undefined,
        AZURE_STORAGE_KEY: AZURITE_KEY,
      },
      stop: () => azurite.stop(),
    };
  } catch (error) {
    await azurite.stop();
    throw error;
  }
}

async function sftpRemote(): Promise<Remote> {
  const sshd = await startSshd();
  return {
    location: (name) => sshd.url(`${sshd.dir}/${name}`),
    env: { SSH_AUTH_SOCK: undefined, ...sshd.env() },
    stop: () => sshd.stop(),
  };
}

const backends: [name: string, start: () => Promise<Remote>][] = [
  ['S3 (s3rver)', s3Remote],
  ['Azure Blob storage (Azurite)', azureRemote],
  ['SFTP (sshd)', sftpRemote],
];

function json<T>(result: RunResult): T {
  return JSON.parse(result.stdout.toString('utf8')) as T;
}

/** Fails with the command's stderr, which says more than a bare exit code. */
/** Expects `actual` to be exactly `expected`, without printing megabytes when it is not. */
function expectSameBytes(actual: Buffer, expected: Buffer): void {
  expect({ length: actual.length, equal: actual.equals(expected) }).toEqual({
    length: expected.length,
    equal: true,
  });
}

/** What `snapshots --json` prints. */
type SnapshotRow = SnapshotHeader & { id: string };

describe.each(backends)('strongbox copy between local repositories and %s', (backend, start) => {
  let remote: Remote;
  let a: TempRepo;
  let b: TempRepo;
  let c: TempRepo;
  /** Repository B, on the server; `b` only holds its password file. */
  let bLocation: string;
  const first = seededBytes(`copy-remote-first-${backend}`, 4_000_000);
  // Shares its first megabyte with `first`, whose chunks B therefore has already.
  const second = Buffer.concat([
    first.subarray(0, 1_000_000),
    seededBytes(`copy-remote-second-${backend}`, 2_500_000),
  ]);
  let firstSnapshot: string;

  /** Runs strongbox on `location` with `repo`'s password, through the environment. */
  function cli(repo: TempRepo, location: string, args: string[], input?: Buffer): Promise<RunResult> {
    return runCli(args, {
      input,
      env: { ...remote.env, STRONGBOX_REPO: location, STRONGBOX_PASSWORD_FILE: repo.passwordFile },
    });
  }

  /** Runs strongbox with keys and locations only from the command line. */
  function cliArgs(args: string[]): Promise<RunResult> {
    return runCli(args, { env: remote.env });
  }

  /** `copy --json` from one repository to another, each opened with its own password file. */
  function copyBetween(
    from: TempRepo,
    fromLocation: string,
    to: TempRepo,
    toLocation: string,
  ): Promise<RunResult> {
    return cliArgs([
      'copy',
      '--from',
      fromLocation,
      '--from-password-file',
      from.passwordFile,
      '--to',
      toLocation,
      '--password-file',
      to.passwordFile,
      '--json',
    ]);
  }

  async function snapshots(repo: TempRepo, location: string): Promise<SnapshotRow[]> {
    const listed = await cli(repo, location, ['snapshots', '--json']);
    expectExit(listed, 0);
    return json<SnapshotRow[]>(listed);
  }

  /** `check --read-data` passes and read at least `packs` packs. */
  async function expectCheckPasses(repo: TempRepo, location: string, packs: number): Promise<void> {
    const check = await cli(repo, location, ['check', '--read-data']);
    expectExit(check, 0);
    expect(check.stderr).toContain('no errors were found');
    const read = /(\d+) packs read/.exec(check.stderr);
    expect(read, check.stderr).not.toBeNull();
    expect(Number(read![1])).toBeGreaterThanOrEqual(packs);
  }

  async function expectCat(repo: TempRepo, location: string, snapshot: string, input: Buffer): Promise<void> {
    const cat = await cli(repo, location, ['cat', snapshot]);
    expectExit(cat, 0);
    expectSameBytes(cat.stdout, input);
  }

  beforeAll(async () => {
    remote = await start();
    a = await tempRepo('password of A');
    b = await tempRepo('password of B');
    c = await tempRepo('password of C');
    bLocation = remote.location(`copy-${randomBytes(4).toString('hex')}/b`);
  });

  afterAll(async () => {
    await remote?.stop();
    await a?.cleanup();
    await b?.cleanup();
    await c?.cleanup();
  });

  it('copies a local repository into the remote one, which has another key and restores it exactly', async () => {
    expectExit(await cli(a, a.repo, ['init', '--pack-size', '1', '-q']), 0);
    expectExit(await cli(b, bLocation, ['init', '--pack-size', '1', '-q']), 0);
    const backup = await cli(a, a.repo, ['backup', 'stdin', '--name', 'db.dump', '--json'], first);
    expectExit(backup, 0);
    firstSnapshot = json<{ snapshot: string }>(backup).snapshot;

    const copy = await copyBetween(a, a.repo, b, bLocation);
    expectExit(copy, 0);
    const result = json<CopyResult>(copy);
    expect(result).toMatchObject({ snapshotsCopied: 1, snapshotsSkipped: 0, blobsSkipped: 0 });
    expect(result.snapshots.map((s) => [s.source, s.skipped])).toEqual([[firstSnapshot, false]]);
    expect(result.blobsCopied).toBeGreaterThan(3);
    expect(result.bytesRead).toBeGreaterThanOrEqual(first.length);
    expect(result.stored).toBeGreaterThanOrEqual(first.length);

    const copies = await snapshots(b, bLocation);
    expect(copies).toHaveLength(1);
    expect(copies[0]).toMatchObject({ origin: firstSnapshot, name: 'db.dump', kind: 'stdin' });
    expect(copies[0]!.id).toBe(result.snapshots[0]!.target);
    expect(copies[0]!.id).not.toBe(firstSnapshot);

    // A 4 MB stream in 1 MiB packs: several packs on the server, every one read back.
    await expectCheckPasses(b, bLocation, 3);
    await expectCat(b, bLocation, 'latest', first);

    // The keys differ: A's password does not open B.
    expectExit(await cli(a, bLocation, ['snapshots']), 5);

    const again = await copyBetween(a, a.repo, b, bLocation);
    expectExit(again, 0);
    expect(json<CopyResult>(again)).toMatchObject({
      snapshotsCopied: 0,
      snapshotsSkipped: 1,
      blobsCopied: 0,
      bytesRead: 0,
      stored: 0,
    });
    expect(await snapshots(b, bLocation)).toHaveLength(1);
  });

  it('copies the remote repository back into a new local one', async () => {
    expectExit(await cli(c, c.repo, ['init', '--pack-size', '1', '-q']), 0);
    const copy = await copyBetween(b, bLocation, c, c.repo);
    expectExit(copy, 0);
    const result = json<CopyResult>(copy);
    expect(result).toMatchObject({ snapshotsCopied: 1, snapshotsSkipped: 0 });
    expect(result.bytesRead).toBeGreaterThanOrEqual(first.length);

    const copies = await snapshots(c, c.repo);
    expect(copies).toHaveLength(1);
    // The origin is kept through copies of copies: it is still A's snapshot.
    expect(copies[0]).toMatchObject({ origin: firstSnapshot, name: 'db.dump' });
    await expectCat(c, c.repo, 'latest', first);
    await expectCheckPasses(c, c.repo, 3);
  });

  it('backs up into the local repository and copies the new snapshot to the remote one with --copy-to', async () => {
    const backup = await cli(
      a,
      a.repo,
      [
        'backup',
        'stdin',
        '--name',
        'db.dump',
        '--copy-to',
        bLocation,
        '--copy-to-password-file',
        b.passwordFile,
        '--json',
      ],
      second,
    );
    expectExit(backup, 0);
    const result = json<{ snapshot: string; copy: CopyResult }>(backup);
    expect(result.snapshot).not.toBe(firstSnapshot);
    expect(result.copy).toMatchObject({ snapshotsCopied: 1, snapshotsSkipped: 0 });
    expect(result.copy.snapshots.map((s) => s.source)).toEqual([result.snapshot]);
    // The shared first megabyte is in B already.
    expect(result.copy.blobsSkipped).toBeGreaterThan(0);
    expect(result.copy.blobsCopied).toBeGreaterThan(0);

    const inB = await snapshots(b, bLocation);
    expect(inB.map((s) => s.origin)).toEqual([firstSnapshot, result.snapshot]);
    const copied = inB[1]!;
    expect(copied).toMatchObject({
      id: result.copy.snapshots[0]!.target,
      name: 'db.dump',
      size: second.length,
    });
    await expectCat(b, bLocation, copied.id, second);
    await expectCat(b, bLocation, inB[0]!.id, first);
    await expectCheckPasses(b, bLocation, 3);
  });
});
