import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempRepo, type RunOptions, type RunResult, type TempRepo } from './helpers/cli.ts';
import { createTestRepo, type TestRepo } from './helpers/repo.ts';
import { LocalBackend, Repository } from '../src/index.ts';
import { seededBytes } from './helpers/data.ts';

function cli(repo: TempRepo, args: string[], options: RunOptions = {}): Promise<RunResult> {
  return runCli(args, { ...options, env: { ...repo.env, ...options.env } });
}

function expectExit(result: RunResult, code: number): void {
  expect({ code: result.code, stderr: result.stderr }).toMatchObject({ code });
}

describe('empty passwords', () => {
  let repo: TempRepo;
  let empty: string;

  beforeAll(async () => {
    repo = await tempRepo();
    empty = path.join(repo.dir, 'empty-password');
    await fs.writeFile(empty, '\n');
  });
  afterAll(() => repo.cleanup());

  it('init refuses an empty password file with exit 3 and creates nothing', async () => {
    const result = await cli(repo, ['init'], { env: { STRONGBOX_PASSWORD_FILE: empty } });
    expectExit(result, 3);
    expect(result.stderr).toBe(
      `strongbox: the new password in ${empty} is empty\n` +
        '  A key needs a password: anyone who can read the repository could open it with an empty one.\n',
    );
    await expect(fs.readdir(repo.repo)).rejects.toThrow();
  });

  it('key add and key passwd refuse an empty new password; the old keys still open', async () => {
    expectExit(await cli(repo, ['init']), 0);
    const added = await cli(repo, ['key', 'add', '--new-password-file', empty]);
    expectExit(added, 3);
    expect(added.stderr).toContain(`the new password in ${empty} is empty`);
    const changed = await cli(repo, ['key', 'passwd'], { env: { STRONGBOX_NEW_PASSWORD: '' } });
    expectExit(changed, 3);
    expect(changed.stderr).toContain('the new password in the environment is empty');
    const keys = await cli(repo, ['key', 'list', '--json']);
    expectExit(keys, 0);
    expect(JSON.parse(keys.stdout.toString())).toHaveLength(1);
  });
});

describe('empty passwords in the library', () => {
  let test: TestRepo;

  beforeAll(async () => {
    test = await createTestRepo();
  });
  afterAll(() => test.cleanup());

  it('every way of making a key slot refuses an empty password (ConfigError, exit 3)', async () => {
    const fresh = new LocalBackend(path.join(test.dir, 'fresh'));
    await expect(Repository.init(fresh, '')).rejects.toMatchObject({ exitCode: 3 });
    expect(await fresh.stat('config')).toBeUndefined();
    await expect(test.repository.addKey('', 'full')).rejects.toMatchObject({ exitCode: 3 });
    await expect(test.repository.addKey('', 'write-only')).rejects.toMatchObject({ exitCode: 3 });
    await expect(test.repository.changePassphrase('')).rejects.toMatchObject({ exitCode: 3 });
    await expect(test.repository.rotate('')).rejects.toMatchObject({ exitCode: 3 });
    expect(await test.repository.listKeys()).toHaveLength(1);
  });
});

describe('identity files', () => {
  let repo: TempRepo;
  let identity: Record<string, unknown>;
  const changed = (fields: Record<string, unknown>) => () => JSON.stringify({ ...identity, ...fields });
  const noPassword = { STRONGBOX_PASSWORD_FILE: undefined };
  const openWith = async (content: string) => {
    const file = path.join(repo.dir, 'identity-under-test.json');
    await fs.writeFile(file, content, { mode: 0o600 });
    return {
      file,
      result: await cli(repo, ['--identity-file', file, 'snapshots', '-q'], { env: noPassword }),
    };
  };

  beforeAll(async () => {
    repo = await tempRepo();
    expectExit(await cli(repo, ['init']), 0);
    const file = path.join(repo.dir, 'identity.json');
    expectExit(await cli(repo, ['key', 'add', '--identity-file-out', file]), 0);
    identity = JSON.parse(await fs.readFile(file, 'utf8')) as Record<string, unknown>;
  });
  afterAll(() => repo.cleanup());

  it('opens with an identity file as written', async () => {
    expectExit((await openWith(JSON.stringify(identity))).result, 0);
  });

  it.each([
    ['bytes that are not JSON', () => 'not json {', 'it is not JSON'],
    ['JSON without the marker', changed({ strongboxIdentity: 2 }), 'it has no "strongboxIdentity": 1'],
    ['a field strongbox does not write', changed({ note: 'x' }), 'Unrecognized key: "note"'],
    [
      'a secret of 16 bytes',
      changed({ writerSecret: 'A'.repeat(22) + '==' }),
      'writerSecret: must be base64 of 32 bytes',
    ],
    ['a secret that is a number', changed({ signingKey: 7 }), 'signingKey: Invalid input'],
    ['a kind strongbox does not make', changed({ kind: 'admin' }), 'kind: Invalid'],
  ])('refuses %s with exit 3, naming the file and what is wrong', async (_, content, problem) => {
    const { file, result } = await openWith(content());
    expectExit(result, 3);
    expect(result.stderr).toContain(`strongbox: ${file} is not a strongbox identity file: ${problem}`);
  });
});

describe('sizes and counts in output', () => {
  let repo: TempRepo;

  beforeAll(async () => {
    repo = await tempRepo();
    expectExit(await cli(repo, ['init']), 0);
  });
  afterAll(() => repo.cleanup());

  it("the backup's stored bytes are what `snapshots` lists for it, in JSON and as text", async () => {
    const data = seededBytes('sizes', 3 * 1024 * 1024);
    const first = await cli(repo, ['backup', 'stdin', '--name', 'a.bin', '--json'], { input: data });
    expectExit(first, 0);
    const saved = JSON.parse(first.stdout.toString()) as { snapshot: string; stored: number };
    const listed = await cli(repo, ['snapshots', '--json']);
    const rows = JSON.parse(listed.stdout.toString()) as { id: string; stored: number }[];
    expect(rows.find((row) => row.id === saved.snapshot)?.stored).toBe(saved.stored);

    const second = await cli(repo, ['backup', 'stdin', '--name', 'b.bin'], {
      input: Buffer.concat([data, Buffer.from('more')]),
    });
    expectExit(second, 0);
    const stored = /stored ([\d.]+ [KMG]?i?B) \(/.exec(second.stderr)?.[1];
    expect(stored, second.stderr).toBeDefined();
    const table = await cli(repo, ['snapshots']);
    const id = /snapshot (\w{8}) saved/.exec(second.stderr)![1]!;
    const row = table.stdout
      .toString()
      .split('\n')
      .find((line) => line.startsWith(id));
    expect(row?.split(/\s{2,}/)[6]).toBe(stored);
  });

  it('an unchanged backup says it stored nothing new', async () => {
    // Not under /tmp: a files snapshot records its paths' parent directories, and other tests
    // make and remove directories in /tmp all the time, which changes its tree.
    const dir = await fs.mkdtemp(path.join('/var/tmp', 'strongbox-unchanged-'));
    try {
      await fs.writeFile(path.join(dir, 'a.txt'), seededBytes('unchanged', 200_000));
      expectExit(await cli(repo, ['backup', 'files', dir]), 0);
      const again = await cli(repo, ['backup', 'files', dir]);
      expectExit(again, 0);
      expect(again.stderr).toMatch(/new 0 B in 0 blobs \(0 deltas\), stored nothing new\n$/);
      const json = await cli(repo, ['backup', 'files', dir, '--json']);
      expect(JSON.parse(json.stdout.toString())).toMatchObject({ stored: 0, deduplicationRatio: null });
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('counts one thing in the singular', async () => {
    const other = await tempRepo();
    try {
      expectExit(await cli(other, ['init']), 0);
      expectExit(await cli(other, ['backup', 'stdin', '--name', 'x'], { input: 'x' }), 0);
      const listed = await cli(other, ['snapshots']);
      expect(listed.stderr).toBe('1 snapshot\n');
      const checked = await cli(other, ['check']);
      expect(checked.stderr).toMatch(/\n1 snapshot, 1 index file, 1 pack, \d+ blobs checked; 0 packs read\n/);
    } finally {
      await other.cleanup();
    }
  });
});

describe('restore options of the wrong kind', () => {
  let repo: TempRepo;
  beforeAll(async () => {
    repo = await tempRepo();
  });
  afterAll(() => repo.cleanup());

  it('a physical restore or a recovery to a moment refuses logical-only options (exit 3) before touching anything', async () => {
    const pgdata = path.join(repo.dir, 'pgdata');
    const dryRun = await cli(repo, ['restore', '--pgdata', pgdata, '--dry-run']);
    expectExit(dryRun, 3);
    expect(dryRun.stderr).toMatch(/^strongbox: --dry-run belongs to a logical restore/);
    await expect(fs.stat(pgdata)).rejects.toThrow();

    const database = await cli(repo, [
      'restore',
      '--database',
      'shop',
      '--time',
      '2026-11-20 14:30:00+00',
      '--jobs',
      '2',
      '--schema-only',
      '--to',
      'postgres://nobody@127.0.0.1:1/shop',
    ]);
    expectExit(database, 3);
    expect(database.stderr).toMatch(/^strongbox: --jobs, --schema-only belong to a logical restore/);
  });
});
