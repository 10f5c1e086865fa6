import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';

/** The built command-line entry point; `npm test` builds before running the tests. */
export const CLI = fileURLToPath(new URL('../../dist/bin/strongbox.js', import.meta.url));

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

export interface RunOptions {
  env?: Record<string, string | undefined>;
  input?: Buffer | string;
  cwd?: string;
  /** Run as this user (through runuser), as when the repository is another user's. */
  user?: string;
}

/** Runs the real `strongbox` binary and collects what it printed. */
export function runCli(args: string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const command = [process.execPath, CLI, ...args];
    const [program, ...argv] = options.user ? ['runuser', '-u', options.user, '--', ...command] : command;
    // Another OS user is another client, with local state of its own.
    const asUser = options.user
      ? { STRONGBOX_STATE_DIR: path.join(process.env.STRONGBOX_STATE_DIR!, options.user) }
      : {};
    const child = spawn(program!, argv, {
      env: { ...cleanEnv(), ...asUser, ...options.env },
      cwd: options.cwd ?? process.cwd(),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const stdout: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (data: Buffer) => stdout.push(data));
    child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(stdout), stderr }));
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

export interface StartOptions extends Omit<RunOptions, 'input'> {
  /** 'pipe' to feed its standard input (or read its output) from the test, at the pace it chooses. */
  stdin?: 'pipe' | 'ignore';
  stdout?: 'pipe' | 'ignore';
}

/**
 * Starts the binary without waiting for it, as the leader of its own process group, for tests
 * that kill it: `process.kill(-child.pid, ...)` then also reaches the commands it started.
 */
export function startCli(args: string[], options: StartOptions = {}): ChildProcess {
  return spawn(process.execPath, [CLI, ...args], {
    env: { ...cleanEnv(), ...options.env },
    cwd: options.cwd ?? process.cwd(),
    stdio: [options.stdin ?? 'ignore', options.stdout ?? 'ignore', 'pipe'],
    detached: true,
  });
}

/**
 * The environment without the variables of the machine running the tests that strongbox reads:
 * STRONGBOX_*, libpq's PG* and the DB_* of backup scripts, PUSHGATEWAY_URL. A developer's PGHOST
 * must not send a test to another server, nor override the connection a test gives.
 */
export function cleanEnv(): Record<string, string | undefined> {
  return {
    ...Object.fromEntries(Object.entries(process.env).filter(([name]) => !MACHINE_SETTINGS.test(name))),
    // The test file's own client state (helpers/setup.ts).
    STRONGBOX_STATE_DIR: process.env.STRONGBOX_STATE_DIR,
  };
}

const MACHINE_SETTINGS = /^(STRONGBOX_|PG[A-Z]+$|DB_(HOST|PORT|NAME|USER|PASSWORD)$|PUSHGATEWAY_URL$)/;

export interface TempRepo {
  dir: string;
  repo: string;
  passwordFile: string;
  env: Record<string, string>;
  cleanup(): Promise<void>;
}

/** A temp directory with a repository path (not yet initialised) and a password file. */
export async function tempRepo(password = 'correct horse battery staple'): Promise<TempRepo> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'strongbox-test-'));
  const repo = path.join(dir, 'repo');
  const passwordFile = path.join(dir, 'password');
  await writeFile(passwordFile, password + '\n', { mode: 0o600 });
  return {
    dir,
    repo,
    passwordFile,
    env: { STRONGBOX_REPO: repo, STRONGBOX_PASSWORD_FILE: passwordFile },
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** Asserts a run's exit code, showing what it printed to stderr when it is not the one expected. */
export function expectExit(result: RunResult, code: number): void {
  expect(result.code, result.stderr).toBe(code);
}
