import type { ChildProcess } from 'node:child_process';
import { cp, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { expect } from 'vitest';
import { openRepository, type Repository } from '../../src/index.ts';
import { startCli, type StartOptions } from './cli.ts';
import { PASSWORD, readAll } from './repo.ts';

/**
 * Repositories that prune tests share between the library (to build histories and read them
 * back) and the real `strongbox` processes they run, kill and run beside each other.
 */

/** Small chunks and 1 MiB packs: a few megabytes make many packs, some shared between snapshots. */
export const SMALL = { chunker: { min: 4096, avg: 16384, max: 65536 }, packSize: 1024 * 1024 };

export interface CliRepo {
  dir: string;
  location: string;
  /** What `strongbox` needs to open it, and a client state of its own (the library's). */
  env: Record<string, string>;
  open(): Promise<Repository>;
  cleanup(): Promise<void>;
}

/** A repository location in a fresh temp directory, with its password file and client state. */
async function cliRepoAt(dir: string): Promise<CliRepo> {
  const location = path.join(dir, 'repo');
  const stateDirectory = path.join(dir, 'state');
  const passwordFile = path.join(dir, 'password');
  await writeFile(passwordFile, PASSWORD + '\n', { mode: 0o600 });
  return {
    dir,
    location,
    env: {
      STRONGBOX_REPO: location,
      STRONGBOX_PASSWORD_FILE: passwordFile,
      STRONGBOX_STATE_DIR: stateDirectory,
    },
    open: () => openRepository({ repo: location, passphrase: PASSWORD, stateDirectory }),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

export async function emptyCliRepo(): Promise<CliRepo> {
  return cliRepoAt(await mkdtemp(path.join(os.tmpdir(), 'strongbox-prune-')));
}

/** Another location holding the same repository as `template` (its client state starts empty). */
export async function copyCliRepo(template: CliRepo): Promise<CliRepo> {
  const copy = await emptyCliRepo();
  await cp(template.location, copy.location, { recursive: true });
  return copy;
}

/** The files of a repository folder (packs lie one level down), without unfinished writes. */
export async function storedFiles(location: string, folder: string): Promise<Set<string>> {
  try {
    const entries = await readdir(path.join(location, folder), { recursive: true, withFileTypes: true });
    return new Set(
      entries
        .filter((entry) => entry.isFile() && !entry.name.startsWith('.tmp-'))
        .map((entry) => path.relative(location, path.join(entry.parentPath, entry.name))),
    );
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return new Set();
    throw error;
  }
}

/** A `strongbox` process started by a test, with what it printed to stderr so far. */
export interface Running {
  child: ChildProcess;
  stderr: () => string;
  stdout: () => string;
  /** Resolves when it has exited (killed or not). */
  closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  hasExited: () => boolean;
}

export function start(args: string[], env: Record<string, string>, options: StartOptions = {}): Running {
  const child = startCli(args, { ...options, env });
  let stderr = '';
  let stdout = '';
  let exited = false;
  child.stderr!.setEncoding('utf8').on('data', (text: string) => (stderr += text));
  child.stdout?.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stdin?.on('error', () => undefined);
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => {
      exited = true;
      resolve({ code, signal });
    }),
  );
  return { child, stderr: () => stderr, stdout: () => stdout, closed, hasExited: () => exited };
}

/**
 * Polls until `reached` holds: 'exited' when `running` ended first. A state to wait for, never a
 * time: a test that kills a process at a moment waits for what marks that moment.
 */
export async function waitUntil(
  what: string,
  reached: () => Promise<boolean>,
  running?: Running,
  timeoutMs = 60_000,
): Promise<'reached' | 'exited'> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await reached()) return 'reached';
    if (running?.hasExited()) return 'exited';
    if (Date.now() > deadline) throw new Error(`never got to where ${what}`);
    await sleep(2);
  }
}

/** Writes `data` to a process's standard input; resolves once the pipe took all of it. */
export function feed(running: Running, data: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    running.child.stdin!.write(data, (error) => (error ? reject(error) : resolve()));
  });
}

/** Every snapshot of `expected` reads back byte for byte. */
export async function expectReadsBack(repository: Repository, expected: Map<string, Buffer>): Promise<void> {
  for (const [snapshot, data] of expected) {
    const read = await readAll(repository, snapshot);
    expect(read.length, `snapshot ${snapshot}`).toBe(data.length);
    expect(read.equals(data), `snapshot ${snapshot} reads back other bytes`).toBe(true);
  }
}
