import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  runCli,
  startCli,
  tempRepo,
  type RunOptions,
  type RunResult,
  type TempRepo,
  expectExit,
} from './helpers/cli.ts';
import type { CopyResult } from '../src/ops/copy.ts';
import type { SnapshotHeader } from '../src/repository/snapshot.ts';
import { seededBytes } from './helpers/data.ts';
import { describeTree } from './helpers/files.ts';
import { freePort } from './helpers/free-port.ts';

function cli(repo: TempRepo, args: string[], options: RunOptions = {}): Promise<RunResult> {
  return runCli(args, { ...options, env: { ...repo.env, ...options.env } });
}

function json<T>(result: RunResult): T {
  return JSON.parse(result.stdout.toString('utf8')) as T;
}

/** What `snapshots --json` and `copy --json` print. */
type SnapshotRow = SnapshotHeader & { id: string };

async function snapshots(repo: TempRepo, env: Record<string, string> = {}): Promise<SnapshotRow[]> {
  const result = await cli(repo, ['snapshots', '--json'], { env });
  expectExit(result, 0);
  return json<SnapshotRow[]>(result);
}

/** Names of every object in a local repository, by folder: to see that a copy wrote nothing. */
/** The repository's objects but its locks and audit records (every command appends one). */
async function objects(repo: TempRepo): Promise<string[]> {
  const names: string[] = [];
  for (const entry of await fs.readdir(repo.repo, { recursive: true, withFileTypes: true }))
    if (entry.isFile()) names.push(path.relative(repo.repo, path.join(entry.parentPath, entry.name)));
  return names.filter((name) => !name.startsWith('locks/') && !name.startsWith('audit/')).sort();
}

/**
 * Creates the repository (small packs, so that a few MB make several) and an identity file that
 * every later command uses: opening with a password costs a key derivation per key slot tried.
 */
async function init(repo: TempRepo): Promise<string> {
  expectExit(await cli(repo, ['init', '--pack-size', '1', '-q']), 0);
  return identityFor(repo, 'identity', []);
}

/** Writes an identity file of a new key (`--write-only` in `flags` for one) and returns its path. */
async function identityFor(repo: TempRepo, name: string, flags: string[]): Promise<string> {
  const file = path.join(repo.dir, name);
  expectExit(await cli(repo, ['key', 'add', ...flags, '--identity-file-out', file, '-q']), 0);
  if (flags.length === 0) repo.env.STRONGBOX_IDENTITY_FILE = file;
  return file;
}

describe('strongbox copy between local repositories', () => {
  let a: TempRepo;
  let b: TempRepo;
  let files: string;
  const stream = Buffer.concat([seededBytes('stream', 3_000_000), seededBytes('stream', 500_000)]);
  const changed = Buffer.concat([
    stream.subarray(0, 1_000_000),
    Buffer.from('an edit'),
    stream.subarray(1_000_000),
  ]);

  const from = (repo: TempRepo) => [
    '--from',
    repo.repo,
    '--from-identity-file',
    repo.env.STRONGBOX_IDENTITY_FILE!,
  ];

  beforeAll(async () => {
    a = await tempRepo('source password');
    b = await tempRepo('target password');
    await init(a);
    await init(b);
    files = path.join(a.dir, 'files');
    await fs.mkdir(path.join(files, 'etc/app'), { recursive: true });
    await fs.writeFile(path.join(files, 'etc/app/app.conf'), 'listen = 5432\n');
    await fs.writeFile(path.join(files, 'etc/app/big.bin'), seededBytes('big', 2_500_000));
    await fs.writeFile(path.join(files, 'etc/app/empty'), '');
    await fs.chmod(path.join(files, 'etc/app/app.conf'), 0o640);
    await fs.symlink('app.conf', path.join(files, 'etc/app/current'));
    expectExit(
      await cli(a, ['backup', 'stdin', '--name', 'db.dump', '--tag', 'env=prod'], { input: stream }),
      0,
    );
    expectExit(await cli(a, ['backup', 'files', files]), 0);
    // Stored in A as deltas of the first stream's chunks; the copy must read them whole.
    expectExit(await cli(a, ['backup', 'stdin', '--name', 'db.dump'], { input: changed }), 0);
  });

  afterAll(async () => {
    await a?.cleanup();
    await b?.cleanup();
  });

  it('copies every snapshot into a repository with other keys, which restores them byte for byte', async () => {
    const copy = await cli(b, [
      'copy',
      '--from',
      a.repo,
      '--from-password-file',
      a.passwordFile,
      '--to',
      b.repo,
      '--json',
    ]);
    expectExit(copy, 0);
    const result = json<CopyResult>(copy);
    expect(result).toMatchObject({ snapshotsCopied: 3, snapshotsSkipped: 0 });
    expect(result.blobsCopied).toBeGreaterThan(10);
    expect(result.bytesRead).toBeGreaterThanOrEqual(stream.length);

    const sources = await snapshots(a);
    const copies = await snapshots(b);
    expect(copies).toHaveLength(3);
    for (const [i, copied] of copies.entries()) {
      const original = sources[i]!;
      expect(copied.origin).toBe(original.id);
      expect(copied.id).not.toBe(original.id);
      expect(copied).toMatchObject({
        time: original.time,
        host: original.host,
        kind: original.kind,
        name: original.name,
        tags: original.tags,
        size: original.size,
      });
    }
    // The parent is the copy of the source's parent.
    expect(sources[2]!.parent).toBe(sources[0]!.id);
    expect(copies[2]!.parent).toBe(copies[0]!.id);

    for (const [i, input] of [
      [0, stream],
      [2, changed],
    ] as const) {
      const cat = await cli(b, ['cat', copies[i]!.id]);
      expectExit(cat, 0);
      expect(cat.stdout.equals(input)).toBe(true);
    }
    const restored = path.join(b.dir, 'restored');
    expectExit(await cli(b, ['restore', 'files', copies[1]!.id, '--target', restored]), 0);
    expect(await describeTree(path.join(restored, files))).toEqual(await describeTree(files));

    const check = await cli(b, ['check', '--read-data']);
    expectExit(check, 0);
    expect(check.stderr).toContain('no errors were found');
  });

  it('copies nothing the second time', async () => {
    const before = await objects(b);
    const again = await cli(b, ['copy', ...from(a), '--json']);
    expectExit(again, 0);
    expect(json<CopyResult>(again)).toMatchObject({
      snapshotsCopied: 0,
      snapshotsSkipped: 3,
      blobsCopied: 0,
      bytesRead: 0,
      stored: 0,
    });
    expect(await objects(b)).toEqual(before);
    const human = await cli(b, ['copy', ...from(a)]);
    expectExit(human, 0);
    expect(human.stderr).toMatch(
      /skipped [0-9a-f]{8} \(stdin db\.dump, .*\): in the target already as [0-9a-f]{8}/,
    );
    expect(human.stderr).toContain('copy: 0 snapshots copied, 3 skipped (in the target already)');
  });

  it('copies only the snapshots named or filtered, taking the source from the environment', async () => {
    const c = await tempRepo('source password');
    try {
      await init(c);
      const [first, , last] = await snapshots(a);
      const env = {
        STRONGBOX_FROM_REPO: a.repo,
        STRONGBOX_FROM_IDENTITY_FILE: a.env.STRONGBOX_IDENTITY_FILE!,
      };
      const named = await cli(c, ['copy', first!.id.slice(0, 10), '--json'], { env });
      expectExit(named, 0);
      expect(json<CopyResult>(named).snapshots.map((s) => s.source)).toEqual([first!.id]);

      const filtered = await cli(c, ['copy', '--kind', 'stdin', '--json'], { env });
      expectExit(filtered, 0);
      expect(json<CopyResult>(filtered)).toMatchObject({ snapshotsCopied: 1, snapshotsSkipped: 1 });
      const copies = await snapshots(c);
      expect(copies.map((s) => s.origin)).toEqual([first!.id, last!.id]);
      expect(copies.every((s) => s.kind === 'stdin')).toBe(true);
    } finally {
      await c.cleanup();
    }
  });

  it('reads only what a mirror with the same keys lacks', async () => {
    const mirror = await tempRepo('source password');
    try {
      // The same repository copied as files: the same secrets, so the same blob ids.
      await fs.cp(a.repo, mirror.repo, { recursive: true });
      mirror.env.STRONGBOX_IDENTITY_FILE = a.env.STRONGBOX_IDENTITY_FILE!;
      const more = seededBytes('more', 400_000);
      expectExit(await cli(a, ['backup', 'stdin', '--name', 'more.bin'], { input: more }), 0);
      const copy = await cli(mirror, ['copy', ...from(a), '--json']);
      expectExit(copy, 0);
      const result = json<CopyResult>(copy);
      expect(result).toMatchObject({ snapshotsCopied: 1, snapshotsSkipped: 3 });
      expect(result.bytesRead).toBe(more.length);
      const copied = (await snapshots(mirror)).find((s) => s.name === 'more.bin')!;
      expect((await cli(mirror, ['cat', copied.id])).stdout.equals(more)).toBe(true);
      expectExit(await cli(mirror, ['check', '--read-data']), 0);
    } finally {
      await mirror.cleanup();
    }
  });

  it('copies into a target opened with a write-only key, and skips what it copied on the next run', async () => {
    const target = await tempRepo('the full key');
    try {
      await init(target);
      const writeOnly = await identityFor(target, 'write-only', ['--write-only']);
      const asWriteOnly = { env: { STRONGBOX_IDENTITY_FILE: writeOnly } };
      const copy = await cli(target, ['copy', ...from(a), '--json'], asWriteOnly);
      expectExit(copy, 0);
      const count = (await snapshots(a)).length;
      expect(json<CopyResult>(copy)).toMatchObject({ snapshotsCopied: count });
      const again = await cli(target, ['copy', ...from(a), '--json'], asWriteOnly);
      expectExit(again, 0);
      expect(json<CopyResult>(again)).toMatchObject({
        snapshotsCopied: 0,
        snapshotsSkipped: count,
        blobsCopied: 0,
      });

      const copies = await snapshots(target);
      const cat = await cli(target, ['cat', copies[0]!.id]);
      expectExit(cat, 0);
      expect(cat.stdout.equals(stream)).toBe(true);
      expectExit(await cli(target, ['check', '--read-data']), 0);
    } finally {
      await target.cleanup();
    }
  });

  it('leaves no partial snapshot when killed mid-copy, and the next run completes it', async () => {
    const target = await tempRepo('killed');
    try {
      await init(target);
      const child = startCli(['copy', ...from(a), '--threads', '1'], { env: target.env });
      const exited = new Promise<NodeJS.Signals | null>((resolve) =>
        child.on('exit', (_code, signal) => resolve(signal)),
      );
      while ((await objects(target)).filter((name) => name.startsWith('data/')).length === 0) {
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      process.kill(-child.pid!, 'SIGKILL');
      expect(await exited).toBe('SIGKILL');
      const sources = await snapshots(a);
      expect((await snapshots(target)).length).toBeLessThan(sources.length);
      expectExit(await cli(target, ['check', '--read-data']), 0);

      const resumed = await cli(target, ['copy', ...from(a), '--json']);
      expectExit(resumed, 0);
      const copies = await snapshots(target);
      expect(copies.map((s) => s.origin)).toEqual(sources.map((s) => s.id));
      expectExit(await cli(target, ['check', '--read-data']), 0);
    } finally {
      await target.cleanup();
    }
  });

  it('refuses a source opened with a write-only key, and a snapshot the source does not have', async () => {
    const writeOnly = await identityFor(a, 'write-only', ['--write-only']);
    const before = await objects(b);
    const blind = await cli(b, ['copy', '--from', a.repo, '--from-identity-file', writeOnly]);
    expectExit(blind, 5);
    expect(blind.stderr).toMatch(/^strongbox: the source repository is open with a write-only key/);
    expect(blind.stderr).toContain('Give the source a full key');

    const missing = await cli(b, ['copy', ...from(a), 'deadbeef']);
    expectExit(missing, 3);
    expect(missing.stderr).toContain(`strongbox: no snapshot deadbeef in the source repository at ${a.repo}`);
    expect(missing.stderr).toContain(
      '  List them with `strongbox snapshots --repo SOURCE` (the filters given apply too).',
    );

    const wrong = await cli(b, ['copy', '--from', a.repo, '--from-password-file', b.passwordFile]);
    expectExit(wrong, 5);
    expect(wrong.stderr).toContain('--from-password-file');

    const noSource = await cli(b, ['copy']);
    expectExit(noSource, 3);
    expect(noSource.stderr).toContain('Pass --from or set STRONGBOX_FROM_REPO');
    expect(await objects(b)).toEqual(before);
  });
});

describe('strongbox backup --copy-to', () => {
  let a: TempRepo;
  let b: TempRepo;

  beforeAll(async () => {
    a = await tempRepo('first copy');
    b = await tempRepo('second copy');
    await init(a);
    await init(b);
  });

  afterAll(async () => {
    await a?.cleanup();
    await b?.cleanup();
  });

  it('backs up, then copies the new snapshot into the second repository in the same run', async () => {
    const input = seededBytes('three-two-one', 1_500_000);
    const backup = await cli(a, ['backup', 'stdin', '--name', 'nightly', '--copy-to', b.repo, '--json'], {
      input,
      env: { STRONGBOX_COPY_TO_PASSWORD_FILE: b.passwordFile },
    });
    expectExit(backup, 0);
    const result = json<{ snapshot: string; copy: CopyResult }>(backup);
    expect(result.copy).toMatchObject({ snapshotsCopied: 1, snapshotsSkipped: 0 });
    expect(result.copy.snapshots[0]!.source).toBe(result.snapshot);
    const [copied] = await snapshots(b);
    expect(copied).toMatchObject({ origin: result.snapshot, name: 'nightly' });
    const cat = await cli(b, ['cat', copied!.id]);
    expect(cat.stdout.equals(input)).toBe(true);
    expectExit(await cli(b, ['check', '--read-data']), 0);

    const human = await cli(a, ['backup', 'stdin', '--name', 'nightly', '--copy-to', b.repo], {
      input,
      env: { STRONGBOX_COPY_TO_IDENTITY_FILE: b.env.STRONGBOX_IDENTITY_FILE! },
    });
    expectExit(human, 0);
    expect(human.stderr).toContain('copy: 1 snapshot copied, 0 skipped');
    expect(await snapshots(b)).toHaveLength(2);
  });

  it('refuses --copy-to before backing up when the backup key is write-only', async () => {
    const writeOnly = await identityFor(a, 'write-only', ['--write-only']);
    const before = await objects(a);
    const refused = await cli(
      a,
      ['backup', 'stdin', '--name', 'blind', '--copy-to', b.repo, '--copy-to-password-file', b.passwordFile],
      { input: 'never stored', env: { STRONGBOX_IDENTITY_FILE: writeOnly } },
    );
    expectExit(refused, 5);
    expect(refused.stderr).toMatch(/^strongbox: --copy-to needs a full key/);
    expect(await objects(a)).toEqual(before);
  });

  it('keeps the backup and says so when the copy fails', async () => {
    const nowhere = path.join(b.dir, 'not-a-repository');
    const failed = await cli(a, ['backup', 'stdin', '--name', 'kept', '--copy-to', nowhere], {
      input: 'kept anyway\n',
      env: { STRONGBOX_COPY_TO_PASSWORD: 'anything' },
    });
    expectExit(failed, 3);
    const kept = (await snapshots(a)).find((s) => s.name === 'kept')!;
    expect(failed.stderr).toContain(`backup: snapshot ${kept.id.slice(0, 8)} is saved in ${a.repo}`);
    expect(failed.stderr).toContain(`strongbox: there is no strongbox repository at ${nowhere}`);
    expect((await cli(a, ['cat', kept.id])).stdout.toString()).toBe('kept anyway\n');
  });

  it('says where the copy failed without the credentials its location holds', async () => {
    const port = await freePort();
    // Each backend refuses a secret in its URL, so each of these fails, after the backup is saved.
    const locations = [
      {
        given: `s3://AKIAEXAMPLEKEY:secretvalue@127.0.0.1:${port}/bucket`,
        shown: `s3://127.0.0.1:${port}/bucket`,
      },
      // A secret as AWS makes them, slashes in it, typed without %-encoding: not a URL the parser reads.
      {
        given: `s3://AKIAEXAMPLEKEY:wJalrXUtnFEMI/K7MDENG/secretvalue@127.0.0.1:${port}/bucket`,
        shown: `s3://<withheld>@127.0.0.1:${port}/bucket`,
      },
      {
        given: `sftp://user:secretvalue@127.0.0.1:${port}/srv/copy`,
        shown: `sftp://127.0.0.1:${port}/srv/copy`,
      },
      {
        given: `sftp://127.0.0.1:${port}/srv/copy?token=secretvalue`,
        shown: `sftp://127.0.0.1:${port}/srv/copy`,
      },
    ];
    for (const { given, shown } of locations) {
      const failed = await cli(a, ['backup', 'stdin', '--name', 'guarded', '--copy-to', given], {
        input: 'kept, not copied\n',
        env: { STRONGBOX_COPY_TO_PASSWORD: 'anything' },
      });
      expect(failed.code, given).not.toBe(0);
      const output = failed.stdout.toString() + failed.stderr;
      expect(output, given).toMatch(/backup: snapshot [0-9a-f]{8} is saved in /);
      expect(output, given).toContain(
        `but copying it to ${shown} failed; retry with: strongbox copy --from ${a.repo} --to ${shown} `,
      );
      expect(output, given).toContain(
        '(give --to the whole --copy-to location: part of it is not shown here)',
      );
      expect(output, given).not.toContain('secretvalue');
      expect(output, given).not.toContain('AKIAEXAMPLEKEY');
    }
  });
});
