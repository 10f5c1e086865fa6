import { createHash } from 'node:crypto';
import { mkdir, open, readdir, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { check, openRepository, type CheckResult } from '../src/index.ts';
import { expectExit, runCli, tempRepo, type TempRepo } from './helpers/cli.ts';
import { seededBytes } from './helpers/data.ts';
import { backupBuffer, createTestRepo, PASSWORD, type TestRepo } from './helpers/repo.ts';

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name));
}

/** Flips one bit of the byte at `offset`, runs `action`, and flips it back. */
async function withFlippedByte<T>(file: string, offset: number, action: () => Promise<T>): Promise<T> {
  const handle = await open(file, 'r+');
  try {
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, offset);
    await handle.write(Buffer.of(byte[0]! ^ 0x10), 0, 1, offset);
    try {
      return await action();
    } finally {
      await handle.write(byte, 0, 1, offset);
    }
  } finally {
    await handle.close();
  }
}

async function fileSize(file: string): Promise<number> {
  const handle = await open(file, 'r');
  try {
    return (await handle.stat()).size;
  } finally {
    await handle.close();
  }
}

describe('check', () => {
  let repo: TestRepo;
  let snapshots: string[];

  beforeAll(async () => {
    // Small packs so that the data spreads over several of them.
    repo = await createTestRepo({ packSize: 1024 * 1024 });
    const first = await backupBuffer(repo.repository, seededBytes('first', 1_500_000), 'first.bin');
    const second = await backupBuffer(repo.repository, seededBytes('second', 1_500_000), 'second.bin');
    snapshots = [first.snapshot, second.snapshot];
  });
  afterAll(async () => {
    await repo.repository.close();
    await repo.cleanup();
  });

  async function freshCheck(readData: number) {
    const repository = await repo.reopen();
    try {
      return await check(repository, { readData });
    } finally {
      await repository.close();
    }
  }

  it('finds nothing wrong with an intact repository', async () => {
    const result = await freshCheck(1);
    expect(result.problems).toEqual([]);
    expect(result.snapshots).toBe(2);
    expect(result.packsRead).toBe(result.packs);
    expect(result.packs).toBeGreaterThan(2);
  });

  it('catches a flipped byte anywhere in any pack, index or snapshot file', async () => {
    const files = [
      ...(await filesUnder(path.join(repo.location, 'data'))),
      ...(await filesUnder(path.join(repo.location, 'index'))),
      ...(await filesUnder(path.join(repo.location, 'snapshots'))),
    ];
    expect(files.length).toBeGreaterThan(4);
    for (const file of files) {
      const size = await fileSize(file);
      for (const offset of [0, 5, Math.floor(size / 3), Math.floor(size / 2), size - 30, size - 1]) {
        const result = await withFlippedByte(file, offset, () => freshCheck(1));
        expect(result.problems.length, `${path.relative(repo.location, file)} at ${offset}`).toBeGreaterThan(
          0,
        );
      }
    }
    // Dozens of whole checks: on two shared cores this can pass the default minute.
  }, 240_000);

  it('names the snapshot a damaged blob belongs to', async () => {
    const packs = await filesUnder(path.join(repo.location, 'data'));
    // The largest pack holds data blobs; corrupt the middle of it.
    const sizes = await Promise.all(packs.map(fileSize));
    const pack = packs[sizes.indexOf(Math.max(...sizes))]!;
    const result = await withFlippedByte(pack, Math.floor(Math.max(...sizes) / 2), () => freshCheck(1));
    expect(result.problems).toHaveLength(1);
    expect(result.problems[0]!.message).toMatch(/fails? authentication/);
    expect(result.problems[0]!.snapshots.length).toBe(1);
    expect(snapshots).toContain(result.problems[0]!.snapshots[0]);
  });

  it('reports a truncated or missing pack without reading data, with the snapshots affected', async () => {
    const packs = await filesUnder(path.join(repo.location, 'data'));
    const victim = packs[0]!;
    const original = await (await import('node:fs/promises')).readFile(victim);
    try {
      await truncate(victim, original.length - 10);
      const truncated = await freshCheck(0);
      expect(truncated.problems.some((problem) => /bytes, the index says/.test(problem.message))).toBe(true);
      await rm(victim);
      const missing = await freshCheck(0);
      const problem = missing.problems.find((candidate) => /missing/.test(candidate.message))!;
      expect(problem.snapshots.length).toBeGreaterThan(0);
    } finally {
      await (await import('node:fs/promises')).writeFile(victim, original);
    }
    expect((await freshCheck(0)).problems).toEqual([]);
  });

  it('reads only part of the data with a subset', async () => {
    const result = await freshCheck(0.3);
    expect(result.packsRead).toBeGreaterThan(0);
    expect(result.packsRead).toBeLessThan(result.packs);
  });
});

describe('check of packs no index file lists', () => {
  let repo: TestRepo;

  beforeAll(async () => {
    repo = await createTestRepo({ packSize: 1024 * 1024 });
  });
  afterAll(async () => {
    await repo.repository.close();
    await repo.cleanup();
  });

  /** The packs and index files a backup adds, by comparing what storage lists before and after. */
  async function backupAdding(data: Buffer, name: string) {
    const before = new Set(await filesUnder(repo.location));
    const { snapshot } = await backupBuffer(repo.repository, data, name);
    const added = (await filesUnder(repo.location)).filter((file) => !before.has(file));
    return {
      snapshot,
      packs: added.filter((file) => file.includes(`${path.sep}data${path.sep}`)),
      indexFiles: added.filter((file) => file.includes(`${path.sep}index${path.sep}`)),
    };
  }

  it('says why each is there', async () => {
    await backupAdding(seededBytes('kept', 1_200_000), 'kept.bin');
    // An interrupted backup: its packs, but no index file and no snapshot.
    const interrupted = await backupAdding(seededBytes('interrupted', 1_200_000), 'interrupted.bin');
    for (const file of [
      ...interrupted.indexFiles,
      path.join(repo.location, 'snapshots', interrupted.snapshot),
    ])
      await rm(file);
    // A lost index file: the snapshot stays, its blobs are in no index.
    const lost = await backupAdding(seededBytes('lost', 1_200_000), 'lost.bin');
    for (const file of lost.indexFiles) await rm(file);
    // Something that is no pack of this repository.
    const stray = seededBytes('stray', 4096);
    const strayName = createHash('sha256').update(stray).digest('hex');
    await mkdir(path.join(repo.location, 'data', strayName.slice(0, 2)), { recursive: true });
    await writeFile(path.join(repo.location, 'data', strayName.slice(0, 2), strayName), stray);

    // A client that never saw the deleted snapshot: to it, the backup was interrupted before it.
    const repository = await openRepository({
      repo: repo.location,
      passphrase: PASSWORD,
      stateDirectory: false,
    });
    let result;
    try {
      result = await check(repository);
    } finally {
      await repository.close();
    }
    const causes = new Map(result.unindexedPacks.map(({ pack, cause }) => [pack, cause]));
    for (const file of interrupted.packs) expect(causes.get(path.basename(file))).toBe('interrupted-backup');
    for (const file of lost.packs) expect(causes.get(path.basename(file))).toBe('lost-index-file');
    expect(causes.get(strayName)).toBe('unauthenticated-table');
    expect(causes.size).toBe(interrupted.packs.length + lost.packs.length + 1);
    expect(result.unreferencedPacks).toBe(causes.size);
    // The lost snapshot's blobs are the problem; the packs themselves are not.
    expect(result.problems.every((problem) => problem.snapshots.join() === lost.snapshot)).toBe(true);
    expect(result.checks).toEqual([
      'index-files',
      'pack-sizes',
      'snapshot-files',
      'snapshot-contents',
      'pack-tables',
      'wal-files',
    ]);
    expect(result.skipped).toBeUndefined();
  });
});

describe('check with a write-only key', () => {
  let repo: TempRepo;

  beforeAll(async () => {
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
    const identity = path.join(repo.dir, 'db1.id');
    expectExit(
      await runCli(['key', 'add', '--write-only', '--identity-file-out', identity], { env: repo.env }),
      0,
    );
    for (const name of ['one', 'two'])
      expectExit(
        await runCli(['backup', 'stdin', '--name', name], {
          env: repo.env,
          input: seededBytes(name, 300_000),
        }),
        0,
      );
  });
  afterAll(() => repo.cleanup());

  const writeOnly = () => ({
    STRONGBOX_REPO: repo.repo,
    STRONGBOX_IDENTITY_FILE: path.join(repo.dir, 'db1.id'),
  });

  it('says plainly what it checked and what it could not, exit 0, never "no errors"', async () => {
    const result = await runCli(['check'], { env: writeOnly() });
    expectExit(result, 0);
    expect(result.stderr).toContain(
      'checked: index files, packs present at their size, snapshot files, WAL files (signature, header, name, size); not checked with a write-only key: snapshot contents and trees, pack tables, blob data, WAL file contents (2 snapshots) — use a full key',
    );
    expect(result.stderr).toContain('nothing wrong in what a write-only key can check');
    expect(result.stderr).not.toContain('no errors');

    const json = await runCli(['check', '--json'], { env: writeOnly() });
    expectExit(json, 0);
    expect(JSON.parse(json.stdout.toString())).toMatchObject({
      snapshots: 2,
      checks: ['index-files', 'pack-sizes', 'snapshot-files', 'wal-files'],
      skipped: {
        snapshots: 2,
        checks: ['snapshot-contents', 'pack-tables', 'blob-data', 'wal-data'],
        reason: 'write-only key',
      },
      problems: [],
    });
  });

  it('cannot examine packs in no index file, and says so', async () => {
    const [indexFile] = await filesUnder(path.join(repo.repo, 'index'));
    const kept = await readFile(indexFile!);
    await rm(indexFile!);
    try {
      const result = await runCli(['check', '--json'], { env: writeOnly() });
      expectExit(result, 0);
      const { unindexedPacks } = JSON.parse(result.stdout.toString()) as CheckResult;
      expect(unindexedPacks.length).toBeGreaterThan(0);
      expect(unindexedPacks.every(({ cause }) => cause === 'not-examined')).toBe(true);
      const text = await runCli(['check'], { env: writeOnly() });
      expect(text.stderr).toMatch(
        /in no index file: not examined \(a write-only key cannot read pack tables\)/,
      );
      // A full key finds what the lost index file costs.
      expectExit(await runCli(['check'], { env: repo.env }), 7);
    } finally {
      await writeFile(indexFile!, kept);
    }
    expectExit(await runCli(['check'], { env: repo.env }), 0);
  });

  it('refuses --read-data (exit 5)', async () => {
    expectExit(await runCli(['check', '--read-data'], { env: writeOnly() }), 5);
  });
});
