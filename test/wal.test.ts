import { execFileSync, spawn } from 'node:child_process';
import { chmod, copyFile, mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  nextSegment,
  parseLsn,
  segmentName,
  segmentNumber,
  segmentOfLsn,
} from '../src/postgres/wal/segments.ts';
import { archivingSetup, type ArchivingSetup } from './helpers/archiving.ts';
import { CLI, cleanEnv, expectExit, runCli } from './helpers/cli.ts';
import { seededRandom } from './helpers/fault-proxy.ts';
import { seed } from './helpers/soak.ts';
import { startCluster, type TestCluster } from './helpers/postgres.ts';

/** The shell archive_command that answers from the acknowledgement directory. */
const WAL_PUSH_SCRIPT = path.resolve(import.meta.dirname, '../bin/strongbox-wal-push');
const MB16 = 16 * 1024 * 1024;

describe('WAL file names', () => {
  it('count segments across logs as PostgreSQL does', () => {
    expect(nextSegment('0000000100000000000000FE', MB16)).toBe('0000000100000000000000FF');
    expect(nextSegment('0000000100000000000000FF', MB16)).toBe('000000010000000100000000');
    expect(nextSegment('00000002000000010000003F', 64 * 1024 * 1024)).toBe('000000020000000200000000');
    expect(segmentNumber('000000010000000100000002', MB16)).toBe(258);
    expect(segmentName(3, 258, MB16)).toBe('000000030000000100000002');
    expect(segmentOfLsn(1, '1/2000028', MB16)).toBe('000000010000000100000002');
    expect(parseLsn('16/B374D848')).toBe(0x16b374d848n);
  });
});

describe('wal push, fetch and status', () => {
  let cluster: TestCluster;
  let setup: ArchivingSetup;
  const asRoot = (args: string[]) => runCli(args, { env: setup.repo.env });
  const asPostgres = (args: string[], cwd = setup.pgdata) =>
    runCli(args, { env: setup.env, user: process.getuid?.() === 0 ? 'postgres' : undefined, cwd });
  /** The bytes PostgreSQL wrote for a segment, still in pg_wal (no checkpoint recycles it here). */
  const walFile = (name: string) => readFile(path.join(setup.pgdata, 'pg_wal', name));
  const fetched = async (name: string) => {
    const target = path.join(setup.repo.dir, `fetched-${name}`);
    const result = await asRoot(['wal', 'fetch', name, target]);
    expectExit(result, 0);
    const bytes = await readFile(target);
    await rm(target);
    return bytes;
  };

  beforeAll(async () => {
    cluster = await startCluster();
    setup = await archivingSetup(cluster);
  }, 120_000);
  afterAll(async () => {
    await setup?.cleanup();
    await cluster?.stop();
  });

  it('archives every segment through archive_command without a daemon, and fetches each back byte for byte', async () => {
    const names = await setup.switchSegments(3);
    await setup.waitArchived(names.at(-1)!);
    for (const name of names) expect((await fetched(name)).equals(await walFile(name)), name).toBe(true);

    const status = await asRoot(['wal', 'status', '--json']);
    expectExit(status, 0);
    const report = JSON.parse(status.stdout.toString());
    expect(report.newest.name >= names.at(-1)!).toBe(true);
    expect(report.timelines).toHaveLength(1);
    expect(report.timelines[0].gaps).toEqual([]);
    expect(report.segmentSize).toBe(MB16);
    const withServer = await asRoot(['wal', 'status', '--json', '--url', cluster.url('postgres')]);
    expectExit(withServer, 0);
    expect(JSON.parse(withServer.stdout.toString()).archiver).toMatchObject({ failedCount: 0 });
  }, 180_000);

  it('accepts a segment pushed again unchanged, and refuses other content under its name (exit 7)', async () => {
    const [name] = await setup.switchSegments(1);
    await setup.waitArchived(name!);
    expectExit(await asPostgres(['wal', 'push', `pg_wal/${name}`]), 0);
    const altered = path.join(setup.repo.dir, 'altered');
    await makeDirectory(altered);
    const copy = path.join(altered, name!);
    await copyFile(path.join(setup.pgdata, 'pg_wal', name!), copy);
    const bytes = await readFile(copy);
    bytes[1000] = bytes[1000]! ^ 0xff;
    await writeFile(copy, bytes);
    await giveToPostgres(copy);
    const refused = await asPostgres(['wal', 'push', copy]);
    expectExit(refused, 7);
    expect(refused.stderr).toMatch(/already archived with different content/);
    // The archive still holds what PostgreSQL wrote.
    expect((await fetched(name!)).equals(await walFile(name!))).toBe(true);
  }, 120_000);

  it('fetch exits 1 for a file the archive lacks, and above 125 when it cannot be read, so that recovery stops', async () => {
    const missing = await asRoot([
      'wal',
      'fetch',
      '0000000100000000000000F0',
      path.join(setup.repo.dir, 'x'),
    ]);
    expectExit(missing, 1);
    expect(missing.stderr).toMatch(/not in the archive/);
    const wrongKey = await runCli(['wal', 'fetch', '00000001.history', path.join(setup.repo.dir, 'x')], {
      env: { ...setup.repo.env, STRONGBOX_PASSWORD_FILE: '', STRONGBOX_PASSWORD: 'wrong' },
    });
    expect(wrongKey.code, wrongKey.stderr).toBe(128 + 5);
  }, 60_000);

  it('the daemon pushes the segments waiting ahead of archive_command, and answers fetches with the next ones prefetched', async () => {
    // Segments wait while archive_command fails, as after an outage.
    await setup.setArchiveCommand('false');
    const names = await setup.switchSegments(5);
    const daemon = await setup.startDaemon();
    try {
      await setup.setArchiveCommand(setup.strongboxCommand('push'));
      await setup.waitArchived(names.at(-1)!);
      expect(daemon.log()).toMatch(/archived [0-9A-F]{24} .*ahead\)/);
      for (const name of names) expect((await fetched(name)).equals(await walFile(name)), name).toBe(true);

      // Through the daemon, as restore_command runs: the next segments are fetched before asked for.
      const target = path.join(setup.pgdata, 'strongbox-fetch-test');
      for (const name of names.slice(0, 3)) {
        expectExit(await asPostgres(['wal', 'fetch', name, target]), 0);
        expect((await readFile(target)).equals(await walFile(name))).toBe(true);
      }
      expect(daemon.log()).toMatch(/restored [0-9A-F]{24} \(prefetched\)/);
      expectExit(await asPostgres(['wal', 'fetch', '0000000100000000000000F0', target]), 1);
      await rm(target, { force: true });
    } finally {
      daemon.child.kill('SIGTERM');
      await new Promise((resolve) => daemon.child.once('exit', resolve));
    }
  }, 240_000);

  it('never loses a segment it acknowledged when the daemon is killed: PostgreSQL archives the rest itself', async () => {
    await setup.setArchiveCommand('false');
    const names = await setup.switchSegments(6);
    const daemon = await setup.startDaemon(['--parallel', '2']);
    await setup.setArchiveCommand(setup.strongboxCommand('push'));
    // Killed once it has archived something, with more in flight.
    await waitFor(() => /archived [0-9A-F]{24}/.test(daemon.log()), 120_000);
    daemon.child.kill('SIGKILL');
    await new Promise((resolve) => daemon.child.once('exit', resolve));
    // Its socket stays behind; wal push finds no one there and archives on its own.
    await setup.waitArchived(names.at(-1)!);
    for (const name of names) expect((await fetched(name)).equals(await walFile(name)), name).toBe(true);
    const check = await asRoot(['check', '--read-data']);
    expectExit(check, 0);
  }, 240_000);

  it('with --acknowledge-dir, archive_command answers from the shell for files the daemon pushed ahead unasked', async () => {
    await setup.setArchiveCommand('false');
    const names = await setup.switchSegments(4);
    const marks = path.join(setup.repo.dir, 'acknowledged');
    const daemon = await setup.startDaemon(['--parallel', '2', '--acknowledge-dir', marks]);
    try {
      // Nobody asks: the daemon finds the files ready on its own, and marks each once it is durable.
      const marked = async () =>
        (await readdir(marks).catch(() => [] as string[])).filter((n) => names.includes(n));
      await waitForAsync(async () => (await marked()).length === names.length, 120_000);
      expect(daemon.log()).toMatch(new RegExp(`archived ${names[0]} .*ahead\\)`));
      // No push ahead is left marked as running, and the daemon says who it is.
      expect((await readdir(marks)).filter((n) => n.endsWith('.pushing'))).toEqual([]);
      const pid = Number((await readFile(path.join(marks, 'daemon.pid'), 'utf8')).trim());
      expect(() => process.kill(pid, 0)).not.toThrow();
      // Only a mark can make this succeed: the script's fallback is `false`, and PostgreSQL would
      // keep the file.
      await setup.setArchiveCommand(`STRONGBOX_CLI=false ${WAL_PUSH_SCRIPT} ${marks} %p`);
      await setup.waitArchived(names.at(-1)!);
      expect(await marked()).toEqual([]);
      for (const name of names) expect((await fetched(name)).equals(await walFile(name)), name).toBe(true);
    } finally {
      await setup.setArchiveCommand(setup.strongboxCommand('push'));
      daemon.child.kill('SIGTERM');
      await new Promise((resolve) => daemon.child.once('exit', resolve));
    }
  }, 240_000);

  it('refuses an acknowledgement directory other users may write (exit 3)', async () => {
    const open = path.join(setup.repo.dir, 'open-marks');
    await mkdir(open, { mode: 0o777 });
    await chmod(open, 0o777);
    await giveToPostgres(open);
    const result = await runCli(['wal', 'daemon', '--pgdata', setup.pgdata, '--acknowledge-dir', open], {
      env: { ...setup.env, STRONGBOX_WAL_SOCKET: path.join(setup.repo.dir, 'refused.sock') },
      ...(process.getuid?.() === 0 ? { user: 'postgres' } : {}),
    });
    expectExit(result, 3);
    expect(result.stderr).toMatch(/may be written by other users/);
  }, 60_000);

  it('a wal push killed at any moment leaves nothing that stops the next one or a fetch', async () => {
    const random = seededRandom(seed('wal push killed'));
    const [name] = await setup.switchSegments(1);
    await setup.waitArchived(name!);
    const source = await walFile(name!);
    const work = path.join(setup.repo.dir, 'kill');
    await makeDirectory(work);
    for (let round = 0; round < 4; round++) {
      // A name of its own each round, on a timeline no cluster here uses.
      const file = path.join(work, segmentName(0x7f, 100 + round, MB16));
      await writeFile(file, source);
      await giveToPostgres(file);
      const child = spawn(process.execPath, [CLI, 'wal', 'push', file], {
        env: { ...cleanEnv(), ...setup.env },
        cwd: work,
        stdio: 'ignore',
        ...postgresIds(),
      });
      if (round % 2 === 0) {
        // Killed while it writes the object: once its temporary file is in the repository.
        const folder = path.join(setup.repo.repo, 'wal', '0000007F');
        while (
          child.exitCode === null &&
          !(await readdir(folder).catch(() => [])).some((entry) => entry.startsWith('.tmp-'))
        )
          await new Promise((resolve) => setTimeout(resolve, 2));
      } else await new Promise((resolve) => setTimeout(resolve, Math.floor(random() * 1500)));
      const exited = new Promise((resolve) =>
        child.exitCode !== null || child.signalCode !== null
          ? resolve(undefined)
          : child.once('exit', resolve),
      );
      child.kill('SIGKILL');
      await exited;
      expectExit(await asPostgres(['wal', 'push', file], work), 0);
      expect((await fetched(path.basename(file))).equals(source)).toBe(true);
    }
    // Nothing a killed push left behind is mistaken for damage, and every object reads whole.
    const check = await asRoot(['check', '--read-data', '--json']);
    expectExit(check, 0);
    expect(JSON.parse(check.stdout.toString()).walFilesRead).toBeGreaterThanOrEqual(4);
  }, 240_000);

  it('wal status reports a gap where a segment is missing from the archive', async () => {
    const names = await setup.switchSegments(3);
    await setup.waitArchived(names.at(-1)!);
    const middle = names[1]!;
    await rm(path.join(setup.repo.repo, 'wal', middle.slice(0, 8), middle));
    const status = await asRoot(['wal', 'status', '--json']);
    expectExit(status, 0);
    const timeline = JSON.parse(status.stdout.toString()).timelines.find(
      (entry: { timeline: number }) => entry.timeline === 1,
    );
    expect(timeline.gaps).toContainEqual({ from: middle, to: middle, segments: 1 });
    const text = await asRoot(['wal', 'status']);
    expect(text.stdout.toString()).toContain(`gap on timeline 1: 1 segment missing, ${middle} to ${middle}`);
  }, 120_000);
});

async function waitForAsync(condition: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function waitFor(condition: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out waiting');
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

/** Run as the postgres user, as PostgreSQL runs archive_command, when the tests run as root. */
function postgresIds(): { uid: number; gid: number } | Record<string, never> {
  if (process.getuid?.() !== 0) return {};
  const id = (flag: string) => Number(execFileSync('id', [flag, 'postgres'], { encoding: 'utf8' }));
  return { uid: id('-u'), gid: id('-g') };
}

async function makeDirectory(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await giveToPostgres(dir);
}

async function giveToPostgres(file: string): Promise<void> {
  if (process.getuid?.() === 0) execFileSync('chown', ['postgres:postgres', file]);
}
