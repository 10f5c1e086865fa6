import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { CLI, cleanEnv, runCli, tempRepo, type TempRepo } from './helpers/cli.ts';
import { startCluster, type TestCluster } from './helpers/postgres.ts';
import { createTestRepo } from './helpers/repo.ts';
import { backup, InterruptedError, stdinSource } from '../src/index.ts';
import { runInterruptCleanups } from '../src/util/interrupt.ts';

interface Started {
  child: ChildProcess;
  /** Everything printed on standard error so far. */
  stderr(): string;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Starts the binary with standard error collected (off a terminal, so progress is plain lines). */
function start(args: string[], env: Record<string, string>): Started {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...cleanEnv(), ...env, STRONGBOX_PROGRESS_INTERVAL: '0.05' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (data: Buffer) => (stderr += data.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => resolve({ code, signal })),
  );
  return { child, stderr: () => stderr, exited };
}

/** Polls `condition` until it holds; the test's timeout bounds the wait. */
async function until(condition: () => Promise<boolean> | boolean): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 20));
}

async function entries(dir: string): Promise<string[]> {
  return (await fs.readdir(dir).catch(() => [])).filter((name) => !name.startsWith('.'));
}

/** Processes whose parent is `pid`, with their command names, from /proc. */
async function childrenOf(pid: number): Promise<{ pid: number; name: string }[]> {
  const found = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await fs.readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    // pid (comm) state ppid …: comm may hold spaces and parentheses, so split after the last ')'.
    const close = stat.lastIndexOf(')');
    if (close < 0) continue;
    const ppid = Number(stat.slice(close + 2).split(' ')[1]);
    if (ppid === pid) found.push({ pid: Number(entry), name: stat.slice(stat.indexOf('(') + 1, close) });
  }
  return found;
}

async function running(pid: number): Promise<boolean> {
  const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  // A zombie has exited; only its parent's wait is missing.
  return stat !== undefined && stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
}

/** What a stopped run leaves: one message line (besides the progress lines), no lock, no snapshot. */
async function expectStoppedCleanly(
  repo: TempRepo,
  run: Started,
  signal: 'SIGINT' | 'SIGTERM',
  children: { pid: number }[],
): Promise<void> {
  const { code } = await run.exited;
  expect({ code, stderr: run.stderr() }).toMatchObject({ code: signal === 'SIGINT' ? 130 : 143 });
  const lines = run.stderr().split('\n').filter(Boolean);
  expect(lines.filter((line) => !line.startsWith('backup: '))).toEqual([
    `strongbox: interrupted by ${signal}`,
  ]);
  expect(await entries(path.join(repo.repo, 'locks'))).toEqual([]);
  expect(await entries(path.join(repo.repo, 'snapshots'))).toEqual([]);
  for (const child of children) expect(await running(child.pid)).toBe(false);
}

describe('SIGINT and SIGTERM', () => {
  let repo: TempRepo;
  let cluster: TestCluster;

  beforeEach(async () => {
    repo = await tempRepo();
    expect((await runCli(['init'], { env: repo.env })).code).toBe(0);
  });
  afterEach(() => repo.cleanup());

  beforeAll(async () => {
    cluster = await startCluster();
    await cluster.createDatabase('big');
    await cluster.psql(
      `create table rows (id int, payload text);
       insert into rows select g, md5(g::text) || md5((g * 7)::text) from generate_series(1, 2000000) g`,
      'big',
    );
  });
  afterAll(() => cluster?.stop());

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal} stops a backup of a command's output: one line, its lock removed, the command stopped`, async () => {
      const run = start(
        ['backup', 'stdin', '--name', 'zeros', '--stdin-from-command', '--', 'cat', '/dev/zero'],
        repo.env,
      );
      await until(
        async () =>
          run.stderr().includes('backup: ') && (await entries(path.join(repo.repo, 'locks'))).length === 1,
      );
      const children = await childrenOf(run.child.pid!);
      expect(children.map((child) => child.name)).toContain('cat');
      run.child.kill(signal);
      await expectStoppedCleanly(repo, run, signal, children);
    });
  }

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    it(`${signal} stops a PostgreSQL backup while pg_dump copies rows, and pg_dump with it`, async () => {
      const run = start(['backup', 'postgres'], { ...repo.env, ...cluster.env(), PGDATABASE: 'big' });
      await until(
        async () =>
          (await entries(path.join(repo.repo, 'locks'))).length === 1 &&
          (await cluster.psql(
            `select count(*) from pg_stat_activity where application_name = 'pg_dump' and query like 'COPY %'`,
          )) === '1\n',
      );
      const children = await childrenOf(run.child.pid!);
      expect(children.map((child) => child.name)).toContain('pg_dump');
      run.child.kill(signal);
      await expectStoppedCleanly(repo, run, signal, children);
    });
  }
});

describe('a backup whose source ends after an interrupt', () => {
  it('writes no snapshot: the stream may have ended because the same Ctrl-C killed its writer', async () => {
    const test = await createTestRepo();
    try {
      const input = new PassThrough();
      const running = backup(test.repository, stdinSource('cut.dump', input), { threads: 1 });
      input.write(Buffer.alloc(200_000, 7));
      // What the CLI's signal handler does first; this file's later tests run no backup in-process.
      await runInterruptCleanups();
      input.end();
      await expect(running).rejects.toBeInstanceOf(InterruptedError);
      expect(await test.repository.listSnapshots()).toEqual([]);
    } finally {
      await test.repository.close();
      await test.cleanup();
    }
  });
});
