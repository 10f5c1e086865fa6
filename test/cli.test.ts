import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startCli, tempRepo, type RunOptions, type RunResult, type TempRepo } from './helpers/cli.ts';
import { seededBytes } from './helpers/data.ts';
import { describeTree } from './helpers/files.ts';

/** Runs the binary against `repo` with its password file, plus `env` (undefined removes a variable). */
function cli(repo: TempRepo, args: string[], options: RunOptions = {}): Promise<RunResult> {
  return runCli(args, { ...options, env: { ...repo.env, ...options.env } });
}

function json<T>(result: RunResult): T {
  return JSON.parse(result.stdout.toString('utf8')) as T;
}

/** Fails with the command's stderr, which says more than a bare exit code. */
function expectExit(result: RunResult, code: number): void {
  expect({ code: result.code, stderr: result.stderr }).toMatchObject({ code });
}

interface SnapshotRow {
  id: string;
  time: string;
  host: string;
  kind: string;
  name: string;
  size: number;
  stored: number;
  tags: string[];
}

interface BackupJson {
  snapshot: string;
  parent?: string;
  size: number;
  bytesRead: number;
  bytesNew: number;
  stored: number;
  summary: Record<string, number>;
}

interface KeyRow {
  id: string;
  kind: string;
  current: boolean;
  writer: string;
  status: string;
  slot: boolean;
}

async function snapshotList(
  repo: TempRepo,
  env: Record<string, string | undefined> = {},
): Promise<SnapshotRow[]> {
  const result = await cli(repo, ['snapshots', '--json'], { env });
  expectExit(result, 0);
  return json<SnapshotRow[]>(result);
}

async function lockFiles(repo: TempRepo): Promise<string[]> {
  const names = await fs.readdir(path.join(repo.repo, 'locks')).catch(() => []);
  return names.filter((name) => !name.startsWith('.'));
}

async function packFiles(repo: TempRepo): Promise<{ name: string; size: number }[]> {
  const packs = [];
  const data = path.join(repo.repo, 'data');
  for (const dir of await fs.readdir(data)) {
    for (const file of await fs.readdir(path.join(data, dir))) {
      packs.push({ name: `data/${dir}/${file}`, size: (await fs.stat(path.join(data, dir, file))).size });
    }
  }
  return packs;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

function stackTraceIn(text: string): boolean {
  return /^\s+at /m.test(text);
}

describe('init and passwords', () => {
  const password = 'Zebra-42-never-printed';
  let repo: TempRepo;
  const outputs: RunResult[] = [];
  const run = async (args: string[], env: Record<string, string | undefined>) => {
    const result = await runCli(args, { env });
    outputs.push(result);
    return result;
  };

  beforeAll(async () => {
    repo = await tempRepo(password);
  });
  afterAll(() => repo.cleanup());

  it('creates a repository and prints its id', async () => {
    const result = await run(['init', '--json'], repo.env);
    expectExit(result, 0);
    const created = json<{ id: string; location: string; key: string }>(result);
    expect(created.id).toMatch(/^[0-9a-f]{64}$/);
    expect(created.location).toBe(repo.repo);
    await expect(fs.stat(path.join(repo.repo, 'config'))).resolves.toBeTruthy();
    await expect(fs.stat(path.join(repo.repo, 'keys', created.key))).resolves.toBeTruthy();

    const text = await run(['init', '--repo', path.join(repo.dir, 'second')], {
      STRONGBOX_PASSWORD: password,
    });
    expectExit(text, 0);
    expect(text.stderr).toMatch(/^created repository [0-9a-f]{8} at .*second\n$/);
  });

  it('refuses an initialised or non-empty target', async () => {
    const again = await run(['init'], repo.env);
    expectExit(again, 3);
    expect(again.stderr).toContain('is already a strongbox repository');

    const occupied = path.join(repo.dir, 'occupied');
    await fs.mkdir(occupied);
    await fs.writeFile(path.join(occupied, 'precious.txt'), 'keep me');
    const nonEmpty = await run(['init', '--repo', occupied], repo.env);
    expectExit(nonEmpty, 3);
    expect(nonEmpty.stderr).toMatch(/is not empty \(it holds precious\.txt\)/);
    expect(await fs.readdir(occupied)).toEqual(['precious.txt']);
  });

  it('needs a repository', async () => {
    const result = await run(['snapshots'], { STRONGBOX_PASSWORD: password });
    expectExit(result, 3);
    expect(result.stderr).toBe('strongbox: no repository given\n  Pass --repo or set STRONGBOX_REPO.\n');
  });

  it('says where there is no repository, and how to name one', async () => {
    const empty = path.join(repo.dir, 'no-repository-here');
    await fs.mkdir(empty);
    const result = await run(['snapshots'], { STRONGBOX_REPO: empty, STRONGBOX_PASSWORD: password });
    expectExit(result, 3);
    expect(result.stderr).toBe(
      `strongbox: there is no strongbox repository at ${empty}\n` +
        '  Check --repo / STRONGBOX_REPO, or create one with `strongbox init`.\n',
    );
  });

  it('needs a password when no terminal is attached', async () => {
    const result = await run(['snapshots'], { STRONGBOX_REPO: repo.repo });
    expectExit(result, 3);
    expect(result.stderr).toMatch(/^strongbox: no password given\n {2}Set .*STRONGBOX_PASSWORD.*\n$/);
  });

  it('rejects a wrong password with exit 5 and no stack trace unless --debug', async () => {
    const env = { STRONGBOX_REPO: repo.repo, STRONGBOX_PASSWORD: 'not the password' };
    const result = await run(['snapshots'], env);
    expectExit(result, 5);
    const lines = result.stderr.trimEnd().split('\n');
    expect(lines[0]).toMatch(/^strongbox: wrong password: no key of the repository at .* opens with it$/);
    expect(lines.slice(1)).toEqual(['  Check STRONGBOX_PASSWORD, --password-file or --password-command.']);
    expect(stackTraceIn(result.stderr)).toBe(false);

    const debug = await run(['--debug', 'snapshots'], env);
    expectExit(debug, 5);
    expect(stackTraceIn(debug.stderr)).toBe(true);
  });

  it('reads the password from STRONGBOX_PASSWORD', async () => {
    const result = await run(['snapshots'], { STRONGBOX_REPO: repo.repo, STRONGBOX_PASSWORD: password });
    expectExit(result, 0);
    expect(result.stderr).toBe('0 snapshots\n');
  });

  it('reads the password from --password-file, which wins over the environment', async () => {
    const wrongFile = path.join(repo.dir, 'wrong-password');
    await fs.writeFile(wrongFile, 'wrong\n');
    const env = {
      STRONGBOX_REPO: repo.repo,
      STRONGBOX_PASSWORD_FILE: wrongFile,
      STRONGBOX_PASSWORD: 'wrong',
    };
    expectExit(await run(['snapshots'], env), 5);
    expectExit(await run(['--password-file', repo.passwordFile, 'snapshots'], env), 0);

    const missing = await run(['--password-file', path.join(repo.dir, 'nope'), 'snapshots'], env);
    expectExit(missing, 3);
    expect(missing.stderr).toContain('cannot read the password file');
  });

  it('reads the password from --password-command and STRONGBOX_PASSWORD_COMMAND', async () => {
    const command = `cat '${repo.passwordFile}'`;
    const env = { STRONGBOX_REPO: repo.repo, STRONGBOX_PASSWORD: 'wrong' };
    expectExit(await run(['--password-command', command, 'snapshots'], env), 0);
    expectExit(await run(['snapshots'], { ...env, STRONGBOX_PASSWORD_COMMAND: command }), 0);

    const failing = await run(['--password-command', `cat '${repo.passwordFile}'; exit 1`, 'snapshots'], env);
    expectExit(failing, 3);
    expect(failing.stderr).toContain('the password command failed');
  });

  it('never takes a password as an argument', async () => {
    const result = await run(['--password', password, 'snapshots'], { STRONGBOX_REPO: repo.repo });
    expectExit(result, 3);
    expect(result.stderr).toContain("unknown option '--password'");
  });

  it('never prints the password', () => {
    expect(outputs.length).toBeGreaterThan(10);
    for (const result of outputs) {
      expect(result.stdout.toString('utf8')).not.toContain(password);
      expect(result.stderr).not.toContain(password);
    }
  });
});

describe('backup, snapshots, restore and cat', () => {
  let repo: TempRepo;
  let sourceA: string;
  let sourceB: string;
  let first: SnapshotRow;
  const bigFile = seededBytes('files/big.bin', 1_000_000);
  const dump = seededBytes('stdin/mydb.dump', 3_000_000);

  beforeAll(async () => {
    repo = await tempRepo();
    expectExit(await cli(repo, ['init', '-q']), 0);
    sourceA = path.join(repo.dir, 'src', 'myapp');
    sourceB = path.join(repo.dir, 'src', 'state');
    await fs.mkdir(path.join(sourceA, 'nested', 'deep'), { recursive: true });
    await fs.mkdir(path.join(sourceA, 'cache'), { recursive: true });
    await fs.mkdir(sourceB, { recursive: true });
    await fs.writeFile(path.join(sourceA, 'big.bin'), bigFile);
    await fs.writeFile(path.join(sourceA, 'empty'), '');
    await fs.writeFile(path.join(sourceA, 'nested', 'deep', 'app.conf'), 'listen = 8080\n');
    await fs.writeFile(path.join(sourceA, 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
    await fs.symlink('nested/deep/app.conf', path.join(sourceA, 'app.conf'));
    await fs.writeFile(path.join(sourceA, 'debug.log'), 'excluded by *.log');
    await fs.writeFile(path.join(sourceA, 'nested', 'trace.log'), 'excluded by *.log');
    await fs.writeFile(path.join(sourceA, 'cache', 'blob'), 'excluded by name');
    await fs.writeFile(path.join(sourceB, 'counter'), '42\n', { mode: 0o640 });
  });
  afterAll(() => repo.cleanup());

  it('backs up files with tags and excludes, and restores the same tree', async () => {
    const result = await cli(repo, [
      'backup',
      'files',
      sourceA,
      sourceB,
      '--tag',
      'env=production',
      '--tag',
      'app=myapp',
      '--exclude',
      '*.log',
      '--exclude',
      'cache',
    ]);
    expectExit(result, 0);
    expect(result.stdout.length).toBe(0);
    const saved = /snapshot ([0-9a-f]{8}) saved\n/.exec(result.stderr);
    expect(saved).not.toBeNull();
    expect(result.stderr).toMatch(/read 97\d\.\d KiB of 97\d\.\d KiB in /);
    expect(result.stderr).toMatch(
      /stored [\d.]+ KiB \([\d.]+% of the snapshot's size\), deduplication [\d.]+:1\n/,
    );

    first = (await snapshotList(repo))[0]!;
    expect(first.id.slice(0, 8)).toBe(saved![1]);
    expect(first).toMatchObject({ kind: 'files', name: sourceA, tags: ['env=production', 'app=myapp'] });

    const target = path.join(repo.dir, 'restored');
    const restore = await cli(repo, ['restore', 'files', 'latest', '--target', target]);
    expectExit(restore, 0);
    expect(restore.stderr).toContain(
      `restored snapshot ${saved![1]} to ${target}: 5 files, 7 directories, 1 symlink`,
    );

    const expected = await describeTree(sourceA);
    for (const excluded of ['debug.log', 'nested/trace.log', 'cache', 'cache/blob']) {
      expect(expected.delete(excluded)).toBe(true);
    }
    expect(await describeTree(path.join(target, sourceA))).toEqual(expected);
    expect(await describeTree(path.join(target, sourceB))).toEqual(await describeTree(sourceB));
    expect(await fs.readdir(path.join(target, path.dirname(sourceA)))).toEqual(['myapp', 'state']);
  });

  it('restores only what --include selects, and refuses a non-empty target', async () => {
    const target = path.join(repo.dir, 'partial');
    const restore = await cli(repo, [
      'restore',
      'files',
      first.id.slice(0, 10),
      '--target',
      target,
      '--include',
      '*.conf',
    ]);
    expectExit(restore, 0);
    expect(await fs.readFile(path.join(target, sourceA, 'nested/deep/app.conf'), 'utf8')).toBe(
      'listen = 8080\n',
    );
    await expect(fs.stat(path.join(target, sourceA, 'big.bin'))).rejects.toThrow();

    const again = await cli(repo, ['restore', 'files', 'latest', '--target', target]);
    expectExit(again, 3);
    expect(again.stderr).toBe(
      `strongbox: ${target} is not empty\n  Choose an empty directory, or pass --overwrite to replace what is there.\n`,
    );
  });

  it('a second backup names its parent and stores almost nothing (--json)', async () => {
    const result = await cli(repo, [
      'backup',
      'files',
      sourceA,
      sourceB,
      '--exclude',
      '*.log',
      '--exclude',
      'cache',
      '--json',
    ]);
    expectExit(result, 0);
    const second = json<BackupJson>(result);
    expect(second.parent).toBe(first.id);
    expect(second.size).toBe(first.size);
    expect(second.bytesRead).toBe(0);
    expect(second.summary.unchangedFiles).toBe(5);
    expect(second.stored).toBeLessThan(first.size / 50);

    const text = await cli(repo, [
      'backup',
      'files',
      sourceA,
      sourceB,
      '--exclude',
      '*.log',
      '--exclude',
      'cache',
    ]);
    expectExit(text, 0);
    expect(text.stderr).toContain(`saved (parent ${second.snapshot.slice(0, 8)})`);
  });

  it('backs up piped standard input and cats it back byte for byte', async () => {
    const result = await cli(repo, ['backup', 'stdin', '--name', 'mydb.dump', '--tag', 'db=main'], {
      input: dump,
    });
    expectExit(result, 0);
    const snapshot = (await snapshotList(repo)).at(-1)!;
    expect(snapshot).toMatchObject({ kind: 'stdin', name: 'mydb.dump', size: dump.length });

    const byPrefix = await cli(repo, ['cat', snapshot.id.slice(0, 12)]);
    expectExit(byPrefix, 0);
    expect(byPrefix.stdout.equals(dump)).toBe(true);

    const byPath = await cli(repo, ['cat', first.id.slice(0, 8), path.join(sourceA, 'big.bin')]);
    expectExit(byPath, 0);
    expect(byPath.stdout.equals(bigFile)).toBe(true);
  });

  it('leaves no snapshot when the command fails or is killed', async () => {
    const before = await snapshotList(repo);
    const failed = await cli(repo, [
      'backup',
      'stdin',
      '--name',
      'partial',
      '--stdin-from-command',
      '--',
      'sh',
      '-c',
      'echo partial; exit 3',
    ]);
    expectExit(failed, 4);
    expect(failed.stderr).toContain('sh exited with status 3; no snapshot was written');
    expect(stackTraceIn(failed.stderr)).toBe(false);

    const killed = await cli(repo, [
      'backup',
      'stdin',
      '--name',
      'partial',
      '--stdin-from-command',
      '--',
      'sh',
      '-c',
      'echo partial; kill -KILL $$',
    ]);
    expectExit(killed, 4);
    expect(killed.stderr).toContain('sh was killed by SIGKILL; no snapshot was written');

    expect(await snapshotList(repo)).toEqual(before);
    const partial = await cli(repo, ['snapshots', '--json', '--name', 'partial']);
    expect(json(partial)).toEqual([]);
  });

  it('exits 4 with a one-line message when the command cannot be started', async () => {
    const before = await snapshotList(repo);
    const missing = await cli(repo, [
      'backup',
      'stdin',
      '--name',
      'partial',
      '--stdin-from-command',
      '--',
      'no-such-command-strongbox',
    ]);
    expectExit(missing, 4);
    expect(missing.stderr).toContain('strongbox: cannot run no-such-command-strongbox: ENOENT');
    expect(stackTraceIn(missing.stderr)).toBe(false);
    expect(await snapshotList(repo)).toEqual(before);
  });

  it("stores a successful command's output, which cat gives back", async () => {
    const file = path.join(repo.dir, 'command-output');
    const content = seededBytes('stdin/command', 200_000);
    await fs.writeFile(file, content);
    const result = await cli(repo, [
      'backup',
      'stdin',
      '--name',
      'from-command',
      '--env',
      'staging',
      '--stdin-from-command',
      '--',
      'cat',
      file,
    ]);
    expectExit(result, 0);
    const out = await cli(repo, ['cat', 'latest']);
    expectExit(out, 0);
    expect(out.stdout.equals(content)).toBe(true);
  });

  it('lists snapshots as a table and as JSON, filtered by tag and kind', async () => {
    const table = await cli(repo, ['snapshots']);
    expectExit(table, 0);
    const lines = table.stdout.toString('utf8').trimEnd().split('\n');
    expect(lines[0]!.split(/\s+/)).toEqual([
      'ID',
      'TIME',
      'HOST',
      'KIND',
      'NAME',
      'SIZE',
      'STORED',
      'WRITER',
      'TAGS',
    ]);
    expect(lines).toHaveLength(6);
    expect(lines[1]).toMatch(
      new RegExp(
        `^${first.id.slice(0, 8)}  \\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d  \\S+ +files  ${escapeRegExp(sourceA)} +976\\.\\d KiB .* [0-9a-f]{8} +env=production,app=myapp$`,
      ),
    );
    expect(lines[4]).toMatch(/ stdin +mydb\.dump +2\.86 MiB +2\.\d\d MiB +[0-9a-f]{8} +db=main$/);
    expect(table.stderr).toBe('5 snapshots\n');

    const all = await snapshotList(repo);
    expect(all).toHaveLength(5);
    for (const snapshot of all) {
      expect(Object.keys(snapshot)).toEqual(
        expect.arrayContaining(['id', 'time', 'host', 'kind', 'name', 'size', 'stored', 'tags']),
      );
      expect(snapshot.id).toMatch(/^[0-9a-f]{64}$/);
      expect(Number.isNaN(Date.parse(snapshot.time))).toBe(false);
    }

    const tagged = json<SnapshotRow[]>(await cli(repo, ['snapshots', '--json', '--tag', 'env=production']));
    expect(tagged.map((s) => s.id)).toEqual([first.id]);
    const both = json<SnapshotRow[]>(
      await cli(repo, ['snapshots', '--json', '--tag', 'env=production', '--tag', 'db=main']),
    );
    expect(both).toEqual([]);
    const stdin = json<SnapshotRow[]>(await cli(repo, ['snapshots', '--json', '--kind', 'stdin']));
    expect(stdin.map((s) => s.name)).toEqual(['mydb.dump', 'from-command']);
    // --env NAME is the tag env=NAME, in filters as in backups.
    const production = json<SnapshotRow[]>(await cli(repo, ['snapshots', '--json', '--env', 'production']));
    expect(production.map((s) => s.id)).toEqual([first.id]);
    const staging = json<SnapshotRow[]>(await cli(repo, ['snapshots', '--json', '--env', 'staging']));
    expect(staging.map((s) => [s.name, s.tags])).toEqual([['from-command', ['env=staging']]]);
    expect(
      json<SnapshotRow[]>(await cli(repo, ['snapshots', '--json', '--env', 'staging', '--tag', 'db=main'])),
    ).toEqual([]);
  });

  it('restores the latest snapshot the filters select, whichever side of `files` they are typed', async () => {
    // The newest snapshot here is a stdin one; --kind files must reach past it.
    const all = json<{ id: string; kind: string }[]>(await cli(repo, ['snapshots', '--json']));
    const newestFiles = all.filter((snapshot) => snapshot.kind === 'files').at(-1)!;
    expect(all.at(-1)!.kind).not.toBe('files');
    for (const [i, args] of [
      ['restore', 'files', 'latest', '--kind', 'files'],
      ['restore', '--kind', 'files', 'files', 'latest'],
    ].entries()) {
      const target = path.join(repo.dir, `filtered-${i}`);
      const restored = await cli(repo, [...args, '--target', target, '--json']);
      expectExit(restored, 0);
      expect(json<{ snapshot: string }>(restored).snapshot).toBe(newestFiles.id);
    }
    const target = path.join(repo.dir, 'filtered-out');
    const byId = await cli(repo, [
      'restore',
      'files',
      newestFiles.id,
      '--host',
      'elsewhere',
      '--target',
      target,
    ]);
    expectExit(byId, 3);
    expect(byId.stderr).toBe(
      `strongbox: snapshot ${newestFiles.id.slice(0, 8)} is not one the filters select\n` +
        '  Leave out --host when naming this snapshot by id.\n',
    );
  });

  it('refuses unknown and ambiguous snapshot ids, and files that are not there', async () => {
    const unknown = await cli(repo, ['cat', 'zz']);
    expectExit(unknown, 3);
    expect(unknown.stderr).toBe('strongbox: no snapshot zz\n  Run `strongbox snapshots` to list them.\n');

    const ids = (await snapshotList(repo)).map((s) => s.id).sort();
    let shared = '';
    for (let i = 1; i < ids.length; i++) {
      let length = 0;
      while (ids[i]![length] === ids[i - 1]![length]) length++;
      if (length > shared.length) shared = ids[i]!.slice(0, length);
    }
    const ambiguous = await cli(repo, ['cat', shared]);
    expectExit(ambiguous, 3);
    expect(ambiguous.stderr).toContain(`snapshot id ${shared} is ambiguous`);

    const several = await cli(repo, ['cat', first.id]);
    expectExit(several, 3);
    expect(several.stderr).toContain('this snapshot holds more than one file');

    const absent = await cli(repo, ['cat', first.id, path.join(sourceA, 'debug.log')]);
    expectExit(absent, 3);
    expect(absent.stderr).toContain('is not in this snapshot');
  });

  it('checks the repository, structure only or reading data', async () => {
    const quick = await cli(repo, ['check']);
    expectExit(quick, 0);
    expect(quick.stderr).toMatch(/5 snapshots, \d+ index files, \d+ packs, \d+ blobs checked; 0 packs read/);
    expect(quick.stderr).toMatch(/no errors were found\n$/);

    const full = await cli(repo, ['check', '--read-data', '--json']);
    expectExit(full, 0);
    const result = json<{ snapshots: number; packs: number; packsRead: number; problems: unknown[] }>(full);
    expect(result).toMatchObject({ snapshots: 5, problems: [] });
    expect(result.packsRead).toBe(result.packs);

    const subset = await cli(repo, ['check', '--read-data-subset', '50%', '--json']);
    expectExit(subset, 0);
    const half = json<{ packs: number; packsRead: number }>(subset);
    expect(half.packsRead).toBe(Math.ceil(half.packs / 2));

    const bad = await cli(repo, ['check', '--read-data-subset', '150%']);
    expectExit(bad, 3);
  });
});

describe('check on a damaged pack', () => {
  let repo: TempRepo;
  afterAll(() => repo.cleanup());

  it('exits 7 naming the pack and the affected snapshot', async () => {
    repo = await tempRepo();
    expectExit(await cli(repo, ['init', '-q']), 0);
    expectExit(
      await cli(repo, ['backup', 'stdin', '--name', 'victim', '-q'], {
        input: seededBytes('damaged', 2_000_000),
      }),
      0,
    );
    expectExit(
      await cli(repo, ['backup', 'stdin', '--name', 'bystander', '-q'], { input: 'untouched\n' }),
      0,
    );
    const [victim] = json<SnapshotRow[]>(await cli(repo, ['snapshots', '--json', '--name', 'victim']));

    const largest = (await packFiles(repo)).sort((a, b) => b.size - a.size)[0]!;
    const file = path.join(repo.repo, largest.name);
    const bytes = await fs.readFile(file);
    bytes[bytes.length >> 1]! ^= 0x01;
    await fs.writeFile(file, bytes);

    expectExit(await cli(repo, ['check']), 0);
    // --quiet silences progress and the summary, never the problems found.
    const result = await cli(repo, ['check', '--read-data', '--quiet']);
    expectExit(result, 7);
    expect(result.stderr).not.toContain('packs read');
    expect(result.stderr).toContain(`error: ${largest.name}: 1 blob fails authentication`);
    expect(result.stderr).toContain(`(affects snapshots ${victim!.id.slice(0, 8)})`);
    expect(result.stderr).toContain('strongbox: check found 1 problem');

    const intact = await cli(repo, ['cat', 'latest']);
    expectExit(intact, 0);
    expect(intact.stdout.toString()).toBe('untouched\n');
    const unreadable = await cli(repo, ['cat', victim!.id]);
    expectExit(unreadable, 7);
    expect(unreadable.stderr).toMatch(/blob [0-9a-f]{16} in pack [0-9a-f]{16} is damaged/);
  });
});

describe('keys', () => {
  let repo: TempRepo;
  let file: (name: string, text: string) => Promise<string>;
  let original: string;
  const data = seededBytes('keys/data', 100_000);
  const as = (passwordFile: string) => ({ env: { STRONGBOX_PASSWORD_FILE: passwordFile } });

  beforeAll(async () => {
    repo = await tempRepo();
    file = async (name, text) => {
      const at = path.join(repo.dir, name);
      await fs.writeFile(at, text, { mode: 0o600 });
      return at;
    };
    expectExit(await cli(repo, ['init', '-q']), 0);
    expectExit(await cli(repo, ['backup', 'stdin', '--name', 'before-rotation', '-q'], { input: data }), 0);
  });
  afterAll(() => repo.cleanup());

  it('lists keys as a table and as JSON', async () => {
    const table = await cli(repo, ['key', 'list']);
    expectExit(table, 0);
    const lines = table.stdout.toString('utf8').trimEnd().split('\n');
    expect(lines[0]!.trim().split(/\s+/)).toEqual([
      'ID',
      'KIND',
      'WRITER',
      'STATUS',
      'CREATED',
      'HOST',
      'USER',
    ]);
    expect(lines[1]).toMatch(
      /^\* {2}[0-9a-f]{8} {2}full {2}[0-9a-f]{8} {2}active {2}\d{4}-\d\d-\d\d \d\d:\d\d:\d\d {2}/,
    );
    expect(lines).toHaveLength(2);

    const keys = json<KeyRow[]>(await cli(repo, ['key', 'list', '--json']));
    expect(keys).toHaveLength(1);
    expect(keys[0]).toMatchObject({ kind: 'full', current: true });
    original = keys[0]!.id;
  });

  it('adds a full key that opens the repository', async () => {
    const second = await file('second', 'second password\n');
    const added = await cli(repo, ['key', 'add'], { env: { STRONGBOX_NEW_PASSWORD_FILE: second } });
    expectExit(added, 0);
    expect(added.stderr).toMatch(/^added full key [0-9a-f]{8}\n$/);

    const keys = json<KeyRow[]>(await cli(repo, ['key', 'list', '--json'], as(second)));
    expect(keys.map((k) => [k.kind, k.current])).toEqual([
      ['full', false],
      ['full', true],
    ]);
    const content = await cli(repo, ['cat', 'latest'], as(second));
    expect(content.stdout.equals(data)).toBe(true);
  });

  it('changes the password of the key in use', async () => {
    const third = await file('third', 'third password\n');
    const changed = await cli(repo, ['key', 'passwd'], {
      env: { ...as(path.join(repo.dir, 'second')).env, STRONGBOX_NEW_PASSWORD_FILE: third },
    });
    expectExit(changed, 0);
    expect(changed.stderr).toMatch(/^password changed; the key is now [0-9a-f]{8}\n$/);
    expectExit(await cli(repo, ['snapshots'], as(path.join(repo.dir, 'second'))), 5);
    expectExit(await cli(repo, ['snapshots'], as(third)), 0);
    expect(json<KeyRow[]>(await cli(repo, ['key', 'list', '--json']))).toHaveLength(2);
  });

  it('adds a write-only key that backs up and lists but cannot read', async () => {
    const writeOnly = await file('write-only', 'write only\n');
    const added = await cli(repo, ['key', 'add', '--write-only', '--json'], {
      env: { STRONGBOX_NEW_PASSWORD: 'write only' },
    });
    expectExit(added, 0);
    expect(json(added)).toMatchObject({ kind: 'write-only', id: expect.stringMatching(/^[0-9a-f]{64}$/) });

    const backup = await cli(repo, ['backup', 'stdin', '--name', 'from-db-host'], {
      ...as(writeOnly),
      input: 'written blind\n',
    });
    expectExit(backup, 0);
    const listed = await cli(repo, ['snapshots'], as(writeOnly));
    expectExit(listed, 0);
    expect(listed.stdout.toString()).toContain('from-db-host');

    for (const args of [
      ['cat', 'latest'],
      ['restore', 'files', 'latest', '--target', path.join(repo.dir, 'never')],
      ['check', '--read-data'],
    ]) {
      const refused = await cli(repo, args, as(writeOnly));
      expectExit(refused, 5);
      expect(refused.stderr).toMatch(/^strongbox: a write-only key cannot read .*\n {2}Use a full key/);
      expect(refused.stdout.length).toBe(0);
    }
    await expect(fs.stat(path.join(repo.dir, 'never'))).rejects.toThrow();

    const noKeys = await cli(repo, ['key', 'add'], {
      env: { STRONGBOX_PASSWORD_FILE: writeOnly, STRONGBOX_NEW_PASSWORD: 'x' },
    });
    expectExit(noKeys, 5);
    expect(noKeys.stderr).toContain('a write-only key cannot create keys');

    const blind = await cli(repo, ['cat', 'latest']);
    expectExit(blind, 0);
    expect(blind.stdout.toString()).toBe('written blind\n');
  });

  it('removes another key, never the one in use', async () => {
    const keys = json<KeyRow[]>(await cli(repo, ['key', 'list', '--json']));
    const writeOnly = keys.find((k) => k.kind === 'write-only')!;
    const inUse = await cli(repo, ['key', 'remove', original.slice(0, 8)]);
    expectExit(inUse, 3);
    expect(inUse.stderr).toContain('cannot remove the key in use');

    const removed = await cli(repo, ['key', 'remove', writeOnly.id.slice(0, 8)]);
    expectExit(removed, 0);
    expect(removed.stderr).toContain(`removed key ${writeOnly.id.slice(0, 8)}`);
    expectExit(await cli(repo, ['snapshots'], as(path.join(repo.dir, 'write-only'))), 5);

    const unknown = await cli(repo, ['key', 'remove', 'zzzz']);
    expectExit(unknown, 3);
  });

  it('writes an identity file (mode 0600) that opens the repository without a password', async () => {
    const identity = path.join(repo.dir, 'identity.json');
    const written = await cli(repo, ['key', 'add', '--identity-file-out', identity]);
    expectExit(written, 0);
    expect(written.stderr).toBe(`wrote full identity file ${identity}\n`);
    expect((await fs.stat(identity)).mode & 0o777).toBe(0o600);

    const noPassword = { STRONGBOX_PASSWORD_FILE: undefined };
    const opened = await cli(repo, ['--identity-file', identity, 'cat', 'latest'], { env: noPassword });
    expectExit(opened, 0);
    expect(opened.stdout.toString()).toBe('written blind\n');
    const fromEnv = await cli(repo, ['snapshots', '-q'], {
      env: { ...noPassword, STRONGBOX_IDENTITY_FILE: identity },
    });
    expectExit(fromEnv, 0);

    const exists = await cli(repo, ['key', 'add', '--identity-file-out', identity]);
    expectExit(exists, 3);
    expect(exists.stderr).toContain(`cannot create ${identity}: EEXIST`);
  });

  it('rotates: old snapshots stay readable, every other key retires', async () => {
    const writeOnly = await file('write-only-2', 'write only 2\n');
    expectExit(
      await cli(repo, ['key', 'add', '--write-only', '-q'], {
        env: { STRONGBOX_NEW_PASSWORD_FILE: writeOnly },
      }),
      0,
    );
    const before = json<KeyRow[]>(await cli(repo, ['key', 'list', '--json']));

    const rotated = await cli(repo, ['key', 'rotate', '--json']);
    expectExit(rotated, 0);
    const result = json<{ key: string; removed: string[]; retired: string[] }>(rotated);
    expect(result.removed.sort()).toEqual(
      before
        .filter((k) => k.kind === 'full' && k.slot)
        .map((k) => k.id)
        .sort(),
    );
    // Every writer, the one in use included (it was given new secrets), and the identity file's.
    expect(result.retired.sort()).toEqual(
      before
        .filter((k) => k.status === 'active')
        .map((k) => k.writer)
        .sort(),
    );

    const after = json<KeyRow[]>(await cli(repo, ['key', 'list', '--json']));
    expect(after.map((k) => [k.id, k.kind, k.current, k.status])).toEqual([
      ...before
        .filter((k) => k.kind === 'write-only' && k.slot)
        .map((k) => [k.id, 'write-only', false, 'retired']),
      [result.key, 'full', true, 'active'],
    ]);

    const old = await cli(repo, ['cat', (await snapshotList(repo))[0]!.id.slice(0, 8)]);
    expectExit(old, 0);
    expect(old.stdout.equals(data)).toBe(true);

    expectExit(await cli(repo, ['snapshots'], as(path.join(repo.dir, 'third'))), 5);
    const staleIdentity = await cli(repo, ['snapshots'], {
      env: {
        STRONGBOX_PASSWORD_FILE: undefined,
        STRONGBOX_IDENTITY_FILE: path.join(repo.dir, 'identity.json'),
      },
    });
    expectExit(staleIdentity, 5);

    // A write-only key from before pins the replaced administrator key: refused, saying what to do.
    const stale = await cli(repo, ['backup', 'stdin', '--name', 'after-rotation', '-q'], {
      ...as(writeOnly),
      input: 'new data\n',
    });
    expectExit(stale, 5);
    expect(stale.stderr).toMatch(/issued before the repository's keys were rotated/);
    expect(stale.stderr).toMatch(/strongbox key add --write-only/);

    const reissued = await file('write-only-3', 'write only 3\n');
    expectExit(
      await cli(repo, ['key', 'add', '--write-only', '-q'], {
        env: { STRONGBOX_NEW_PASSWORD_FILE: reissued },
      }),
      0,
    );
    expectExit(
      await cli(repo, ['backup', 'stdin', '--name', 'after-rotation', '-q'], {
        ...as(reissued),
        input: 'new data\n',
      }),
      0,
    );
    const fresh = await cli(repo, ['cat', 'latest']);
    expectExit(fresh, 0);
    expect(fresh.stdout.toString()).toBe('new data\n');
  });
});

describe('unlock', () => {
  let repo: TempRepo;
  afterAll(() => repo.cleanup());

  it('a killed backup leaves a stale lock that backups ignore and unlock removes', async () => {
    repo = await tempRepo();
    expectExit(await cli(repo, ['init', '-q']), 0);
    const child = startCli(
      [
        'backup',
        'stdin',
        '--name',
        'killed',
        '--stdin-from-command',
        '--',
        'sh',
        '-c',
        'head -c 1000000 /dev/zero; sleep 30',
      ],
      {
        env: repo.env,
      },
    );
    const exited = new Promise<NodeJS.Signals | null>((resolve) =>
      child.on('exit', (_code, signal) => resolve(signal)),
    );
    try {
      const deadline = Date.now() + 20_000;
      while ((await lockFiles(repo)).length === 0) {
        if (Date.now() > deadline) throw new Error('the backup never took its lock');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      // A live process's lock is not stale: unlock leaves it alone.
      const live = await cli(repo, ['unlock', '--json']);
      expectExit(live, 0);
      expect(json(live)).toEqual({ removed: 0, incompleteUploads: 0 });
      expect(await lockFiles(repo)).toHaveLength(1);

      process.kill(child.pid!, 'SIGKILL');
      expect(await exited).toBe('SIGKILL');
    } finally {
      // The command it started is orphaned, still in its process group.
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    const [stale] = await lockFiles(repo);
    expect(stale).toBeDefined();

    const backup = await cli(repo, ['backup', 'stdin', '--name', 'after', '-q'], {
      input: 'after the crash\n',
    });
    expectExit(backup, 0);
    expect(await lockFiles(repo)).toEqual([stale]);

    const unlocked = await cli(repo, ['unlock']);
    expectExit(unlocked, 0);
    expect(unlocked.stderr).toBe('removed 1 lock\n');
    expect(await lockFiles(repo)).toEqual([]);

    const check = await cli(repo, ['check']);
    expectExit(check, 0);
    expect(check.stderr).toContain('1 snapshot,');
    expect((await snapshotList(repo)).map((s) => s.name)).toEqual(['after']);
  });
});

describe('usage', () => {
  it('prints help and the version with exit 0', async () => {
    const help = await runCli(['--help']);
    expectExit(help, 0);
    expect(help.stdout.toString()).toMatch(/^Usage: strongbox \[options\] \[command\]/);
    for (const command of ['init', 'backup', 'snapshots', 'restore', 'cat', 'check', 'key', 'unlock']) {
      expect(help.stdout.toString()).toMatch(new RegExp(`\\n  ${command}\\b`));
    }
    const sub = await runCli(['backup', 'stdin', '--help']);
    expectExit(sub, 0);
    expect(sub.stdout.toString()).toContain('--stdin-from-command');
    const version = await runCli(['--version']);
    expectExit(version, 0);
    expect(version.stdout.toString()).toMatch(/^\d+\.\d+\.\d+\n$/);
  });

  it('exits 3 on an unknown command or option, or a missing subcommand', async () => {
    const command = await runCli(['frobnicate']);
    expectExit(command, 3);
    expect(command.stderr).toBe("error: unknown command 'frobnicate'\n(add --help for usage)\n");
    const option = await runCli(['snapshots', '--frobnicate']);
    expectExit(option, 3);
    expect(option.stderr).toContain("error: unknown option '--frobnicate'");
    const missing = await runCli(['key']);
    expectExit(missing, 3);
    expect(missing.stderr).toContain('Usage: strongbox key');
    const required = await runCli(['backup', 'stdin'], { env: { STRONGBOX_REPO: '/nonexistent' } });
    expectExit(required, 3);
    expect(required.stderr).toContain("required option '--name <name>' not specified");
  });
});
