import { spawn, type StdioOptions } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';

/** GNU time, for a child's peak memory: Node reports only its own. */
export const GNU_TIME = '/usr/bin/time';

export interface CommandSpec {
  command: string;
  args: string[];
  /** Added to the harness's environment, less any STRONGBOX_ or RESTIC_ variable it has. */
  env?: Record<string, string>;
}

export interface RunOptions {
  /** A file given as standard input, as `< file` would. */
  stdinFile?: string;
  /** Send standard output to /dev/null, as `> /dev/null` would, instead of collecting it. */
  discardStdout?: boolean;
  /** Told each piece of standard error as it comes, for a caller that acts on a command's progress. */
  onStderr?: (text: string) => void;
}

export interface Measurement {
  seconds: number;
  maxRssBytes: number;
  stdout: string;
}

export class CommandError extends Error {
  constructor(spec: CommandSpec, code: number | null, signal: NodeJS.Signals | null, stderr: string) {
    const status = signal ? `was killed by ${signal}` : `exited with ${code}`;
    super(`${[spec.command, ...spec.args].join(' ')} ${status}\n${stderr.slice(-2000)}`);
  }
}

function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const inherited = Object.entries(process.env).filter(([name]) => !/^(STRONGBOX|RESTIC)_/.test(name));
  return { ...Object.fromEntries(inherited), ...extra };
}

/** Runs a command to completion and returns its standard output; fails on a non-zero exit. */
export function run(spec: CommandSpec, options: RunOptions = {}): Promise<string> {
  const stdin = options.stdinFile ? openSync(options.stdinFile, 'r') : 'ignore';
  const stdout = options.discardStdout ? openSync('/dev/null', 'w') : 'pipe';
  const stdio: StdioOptions = [stdin, stdout, 'pipe'];
  const closeFds = () => [stdin, stdout].forEach((fd) => typeof fd === 'number' && closeSync(fd));
  return new Promise<string>((resolve, reject) => {
    const child = spawn(spec.command, spec.args, { env: childEnv(spec.env), stdio });
    const out: Buffer[] = [];
    let err = '';
    child.stdout?.on('data', (data: Buffer) => out.push(data));
    child.stderr?.on('data', (data: Buffer) => {
      err += data.toString();
      options.onStderr?.(data.toString());
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === 0) resolve(Buffer.concat(out).toString());
      else reject(new CommandError(spec, code, signal, err));
    });
  }).finally(closeFds);
}

/** Numbers each measurement's file of GNU time, as two may run at once. */
let measurements = 0;

/** Runs a command once under GNU time: wall time from spawn to exit, and the child's peak RSS. */
export async function measure(spec: CommandSpec, options: RunOptions = {}): Promise<Measurement> {
  const rssFile = path.join(os.tmpdir(), `strongbox-bench-rss-${process.pid}-${++measurements}`);
  const timed: CommandSpec = {
    ...spec,
    command: GNU_TIME,
    args: ['-f', '%M', '-o', rssFile, spec.command, ...spec.args],
  };
  try {
    const started = performance.now();
    const stdout = await run(timed, options);
    const seconds = (performance.now() - started) / 1000;
    const maxRssKiB = Number((await readFile(rssFile, 'utf8')).trim().split('\n').pop());
    return { seconds, maxRssBytes: maxRssKiB * 1024, stdout };
  } finally {
    await rm(rssFile, { force: true });
  }
}
