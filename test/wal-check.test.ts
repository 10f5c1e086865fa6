import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRepository, type CheckResult, type CopyResult } from '../src/index.ts';
import { SigningKey } from '../src/crypto/signing.ts';
import { decodeIdentityFile, type KeyMaterial } from '../src/repository/keys.ts';
import { splitSigned } from '../src/repository/signed-object.ts';
import { splitWal, walSignatureTrailer } from '../src/repository/wal-file.ts';
import { expectExit, runCli, tempRepo, type RunResult, type TempRepo } from './helpers/cli.ts';
import { seededBytes } from './helpers/data.ts';
import { startCluster } from './helpers/postgres.ts';

/**
 * `check` reads every archived WAL object, `check --read-data` decrypts it too, and `copy`
 * carries the WAL archive into another repository, from which it fetches back byte for byte: on
 * real segments a cluster wrote, pushed with `wal push`.
 */
let source: TempRepo;
let work: string;
let repositoryId: string;
let writerKey: SigningKey;
/** The segments, by name, as PostgreSQL wrote them. */
const segments = new Map<string, Buffer>();
const names = () => [...segments.keys()];
const WRITE_ONLY_ID = 'db1.id';

const objectPath = (repo: TempRepo, name: string) => path.join(repo.repo, 'wal', name.slice(0, 8), name);
const json = <T>(result: RunResult): T => JSON.parse(result.stdout.toString()) as T;
const check = (repo: TempRepo, args: string[] = []) => runCli(['check', ...args], { env: repo.env });
const copy = (target: TempRepo, args: string[] = []) =>
  runCli(['copy', '--from', source.repo, '--from-password-file', source.passwordFile, '--json', ...args], {
    env: target.env,
  });

/** Replaces an object's bytes for `action`, and puts the genuine ones back after. */
async function withObject<T>(file: string, bytes: Buffer, action: () => Promise<T>): Promise<T> {
  const genuine = await readFile(file);
  await writeFile(file, bytes);
  try {
    return await action();
  } finally {
    await writeFile(file, genuine);
  }
}

async function initialized(password?: string): Promise<TempRepo> {
  const repo = await tempRepo(password);
  expectExit(await runCli(['init'], { env: repo.env }), 0);
  return repo;
}

async function walFilesIn(repo: TempRepo): Promise<string[]> {
  const entries = await readdir(path.join(repo.repo, 'wal'), { recursive: true }).catch(() => []);
  return entries.filter((entry) => /[0-9A-F]{24}$/.test(entry)).map((entry) => path.basename(entry));
}

beforeAll(async () => {
  work = await mkdtemp(path.join(os.tmpdir(), 'strongbox-wal-check-'));
  const cluster = await startCluster();
  try {
    await cluster.psql('create table t (n int, filler text)');
    for (let round = 0; round < 2; round++) {
      await cluster.psql(`insert into t select g, md5(g::text) from generate_series(1, 5000) g`);
      const name = (await cluster.psql('select pg_walfile_name(pg_switch_wal())')).trim();
      // Finished by the switch; no checkpoint recycles it while the cluster runs here.
      segments.set(name, await readFile(path.join(cluster.dataDir, 'pg_wal', name)));
    }
  } finally {
    await cluster.stop();
  }
  source = await initialized();
  const segmentDir = path.join(work, 'segments');
  await mkdir(segmentDir);
  for (const [name, bytes] of segments) {
    await writeFile(path.join(segmentDir, name), bytes);
    expectExit(await runCli(['wal', 'push', path.join(segmentDir, name)], { env: source.env }), 0);
  }
  expectExit(
    await runCli(['backup', 'stdin', '--name', 'base'], {
      env: source.env,
      input: seededBytes('base', 50_000),
    }),
    0,
  );
  const identity = path.join(source.dir, WRITE_ONLY_ID);
  expectExit(
    await runCli(['key', 'add', '--write-only', '--identity-file-out', identity], { env: source.env }),
    0,
  );
  writerKey = new SigningKey(
    (decodeIdentityFile(await readFile(identity, 'utf8')) as KeyMaterial).signingKey,
  );
  const opened = await openRepository({
    repo: source.repo,
    passphrase: (await readFile(source.passwordFile, 'utf8')).trim(),
    stateDirectory: false,
  });
  repositoryId = opened.config.id;
  await opened.close();
}, 120_000);
afterAll(async () => {
  await source?.cleanup();
  await rm(work, { recursive: true, force: true });
});

describe('check of the WAL archive', () => {
  it('reads every WAL object, and with --read-data decrypts each', async () => {
    const plain = await check(source, ['--json']);
    expectExit(plain, 0);
    expect(json<CheckResult>(plain)).toMatchObject({ walFiles: 2, walFilesRead: 0, problems: [] });
    expect(json<CheckResult>(plain).checks).toContain('wal-files');
    expect(json<CheckResult>(plain).checks).not.toContain('wal-data');

    const full = await check(source, ['--read-data']);
    expectExit(full, 0);
    expect(full.stderr).toContain('2 WAL files checked; 2 of them decrypted and authenticated');
    const fullJson = json<CheckResult>(await check(source, ['--read-data', '--json']));
    expect(fullJson).toMatchObject({ walFiles: 2, walFilesRead: 2 });
    expect(fullJson.checks).toEqual(expect.arrayContaining(['wal-files', 'wal-data']));
  });

  it('names a WAL object with a flipped byte, with or without --read-data (its signature covers it all)', async () => {
    const [name] = names();
    const file = objectPath(source, name!);
    const bytes = await readFile(file);
    // In the frames, and in the trailer's magic.
    const flips: [number, string][] = [
      [Math.floor(bytes.length / 2), 'its signature does not verify'],
      [bytes.length - 1, 'it carries no signature'],
    ];
    for (const [at, problem] of flips) {
      const altered = Buffer.from(bytes);
      altered[at] = altered[at]! ^ 0x01;
      await withObject(file, altered, async () => {
        for (const args of [[], ['--read-data']]) {
          const result = await check(source, args);
          expectExit(result, 7);
          expect(result.stderr).toContain(`wal/00000001/${name}: it is not trusted: ${problem}`);
          expect(result.stderr).toMatch(/Do not recover through a damaged WAL file/);
        }
      });
    }
    expectExit(await check(source, ['--read-data']), 0);
  });

  it('finds content a writer re-signed under another header only with --read-data', async () => {
    const [first, second] = names();
    const file = objectPath(source, first!);
    const genuine = splitWal(await readFile(file));
    const donor = splitWal(await readFile(objectPath(source, second!)));
    // This file's header (name, size, mac) over the other's data key and frames, signed by a
    // current write-only key: everything a key that cannot decrypt can check holds.
    const prefix = (await readFile(file)).subarray(0, 12);
    const unsigned = Buffer.concat([prefix, genuine.header, donor.stanzas, donor.frames]);
    const spliced = Buffer.concat([
      unsigned,
      walSignatureTrailer(unsigned, { repositoryId, key: writerKey }),
    ]);
    await withObject(file, spliced, async () => {
      expectExit(await check(source), 0);
      const result = await check(source, ['--read-data']);
      expectExit(result, 7);
      expect(result.stderr).toContain(`wal/00000001/${first}: its content is not what its header says`);
      const report = json<CheckResult>(await check(source, ['--read-data', '--json']));
      expect(report.problems).toEqual([
        expect.objectContaining({ object: `wal/00000001/${first}`, walFile: first }),
      ]);
    });
  });

  it('refuses a WAL object moved to another name', async () => {
    const [name] = names();
    const moved = '0000000100000000000000F0';
    await copyFile(objectPath(source, name!), objectPath(source, moved));
    try {
      const result = await check(source);
      expectExit(result, 7);
      expect(result.stderr).toContain(
        `wal/00000001/${moved}: its header names ${name}: it was moved or copied`,
      );
      expect(result.stderr).toContain('1 problem');
    } finally {
      await rm(objectPath(source, moved));
    }
  });

  it('refuses a WAL object signed by a key that is not a writer', async () => {
    const [name] = names();
    const file = objectPath(source, name!);
    const { content } = splitSigned(await readFile(file))!;
    const foreign = { repositoryId, key: SigningKey.generate() };
    await withObject(file, Buffer.concat([content, walSignatureTrailer(content, foreign)]), async () => {
      const result = await check(source);
      expectExit(result, 7);
      expect(result.stderr).toMatch(new RegExp(`wal/00000001/${name}: it is not trusted: .*not a writer`));
    });
  });

  it('with a write-only key, checks the objects and says their content is not checked', async () => {
    const env = {
      STRONGBOX_REPO: source.repo,
      STRONGBOX_IDENTITY_FILE: path.join(source.dir, WRITE_ONLY_ID),
    };
    const text = await runCli(['check'], { env });
    expectExit(text, 0);
    expect(text.stderr).toMatch(/not checked with a write-only key: .*WAL file contents/);
    expect(text.stderr).toContain('2 WAL files checked; 0 of them decrypted');
    const report = json<CheckResult>(await runCli(['check', '--json'], { env }));
    expect(report).toMatchObject({ walFiles: 2, walFilesRead: 0, problems: [] });
    expect(report.skipped?.checks).toContain('wal-data');
  });
});

describe('copy of the WAL archive', () => {
  it('carries every WAL file, which the copy fetches back byte for byte and checks; a second copy skips them', async () => {
    const target = await initialized('another password altogether');
    try {
      const first = await copy(target);
      expectExit(first, 0);
      expect(json<CopyResult>(first)).toMatchObject({
        snapshotsCopied: 1,
        walFilesCopied: 2,
        walFilesSkipped: 0,
        walBytesCopied: 2 * 16 * 1024 * 1024,
        walProblems: [],
      });
      for (const [name, bytes] of segments) {
        const fetched = path.join(target.dir, name);
        expectExit(await runCli(['wal', 'fetch', name, fetched], { env: target.env }), 0);
        expect((await readFile(fetched)).equals(bytes), name).toBe(true);
      }
      const checked = await check(target, ['--read-data', '--json']);
      expectExit(checked, 0);
      expect(json<CheckResult>(checked)).toMatchObject({ walFiles: 2, walFilesRead: 2 });

      const again = await copy(target);
      expectExit(again, 0);
      expect(json<CopyResult>(again)).toMatchObject({ walFilesCopied: 0, walFilesSkipped: 2 });
      const text = await runCli(
        ['copy', '--from', source.repo, '--from-password-file', source.passwordFile],
        {
          env: target.env,
        },
      );
      expectExit(text, 0);
      expect(text.stderr).toContain(
        'WAL files: 0 copied (0 B, 0 B stored), 2 skipped (in the target already)',
      );
    } finally {
      await target.cleanup();
    }
  });

  it('refuses a WAL file the target holds with other content (exit 7), and copies the rest', async () => {
    const target = await initialized('a third password');
    const [conflicting, other] = names();
    try {
      const altered = Buffer.from(segments.get(conflicting!)!);
      altered[100] = altered[100]! ^ 0xff;
      const file = path.join(target.dir, conflicting!);
      await writeFile(file, altered);
      expectExit(await runCli(['wal', 'push', file], { env: target.env }), 0);
      const result = await copy(target);
      expectExit(result, 7);
      expect(result.stderr).toMatch(/1 WAL file not copied/);
      const report = json<CopyResult>(result);
      expect(report.walProblems).toEqual([
        {
          name: conflicting,
          repository: 'target',
          message: `WAL file ${conflicting} is already archived with different content`,
        },
      ]);
      expect(report.walFilesCopied).toBe(1);
      expect((await walFilesIn(target)).sort()).toEqual([conflicting, other].sort());
    } finally {
      await target.cleanup();
    }
  });

  it('does not copy a WAL file damaged in the source (exit 7)', async () => {
    const target = await initialized('a fourth password');
    const [damaged, intact] = names();
    const file = objectPath(source, damaged!);
    const bytes = await readFile(file);
    const middle = Math.floor(bytes.length / 2);
    bytes[middle] = bytes[middle]! ^ 0x01;
    try {
      await withObject(file, bytes, async () => {
        const text = await runCli(
          ['copy', '--from', source.repo, '--from-password-file', source.passwordFile],
          { env: target.env },
        );
        expectExit(text, 7);
        expect(text.stderr).toContain(
          `error: WAL file ${damaged} not copied: WAL file ${damaged} in the repository is damaged`,
        );
        const result = await copy(target);
        expectExit(result, 7);
        expect(json<CopyResult>(result)).toMatchObject({
          walFilesCopied: 0,
          walFilesSkipped: 1,
          walProblems: [expect.objectContaining({ name: damaged, repository: 'source' })],
        });
      });
      expect(await walFilesIn(target)).toEqual([intact]);
    } finally {
      await target.cleanup();
    }
  });

  it('copies no WAL file with --no-wal', async () => {
    const target = await initialized('a fifth password');
    try {
      const result = await copy(target, ['--no-wal']);
      expectExit(result, 0);
      expect(json<CopyResult>(result)).toMatchObject({
        snapshotsCopied: 1,
        walFilesCopied: 0,
        walFilesSkipped: 0,
      });
      expect(await walFilesIn(target)).toEqual([]);
    } finally {
      await target.cleanup();
    }
  });
});
