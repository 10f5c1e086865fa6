import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from './free-port.ts';

/** Debian's prometheus and prometheus-pushgateway packages (.ci/run installs them). */
export const PROMTOOL = '/usr/bin/promtool';
export const PUSHGATEWAY = '/usr/bin/prometheus-pushgateway';

export interface ToolResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs promtool with `args`, feeding `input` on its standard input. */
export function promtool(args: string[], input = ''): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(PROMTOOL, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (data: Buffer) => (stdout += data.toString()));
    child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
    child.stdin.end(input);
  });
}

export interface Pushgateway {
  /** http://127.0.0.1:PORT */
  url: string;
  /** Its /metrics page, as Prometheus would scrape it. */
  metrics(): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Starts a real Pushgateway on a free loopback port and waits until it answers /-/ready. A port
 * taken meanwhile by another process makes it exit at once: then another port is tried.
 */
export async function startPushgateway(): Promise<Pushgateway> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    // Debian's build persists to /var/lib/prometheus/pushgateway.data by default: kept in memory
    // instead, each test starts from an empty gateway and leaves nothing behind.
    const child = spawn(
      PUSHGATEWAY,
      [`--web.listen-address=127.0.0.1:${port}`, '--persistence.file=', '--log.level=warn'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let log = '';
    child.stderr!.on('data', (data: Buffer) => (log += data.toString()));
    const url = `http://127.0.0.1:${port}`;
    if (await ready(child, url)) {
      return {
        url,
        metrics: async () => (await fetch(`${url}/metrics`)).text(),
        stop: async () => {
          if (child.exitCode !== null || child.signalCode !== null) return;
          child.kill('SIGTERM');
          await once(child, 'exit');
        },
      };
    }
    if (attempt >= 5) throw new Error(`the Pushgateway did not start: ${log}`);
  }
}

/** Whether the gateway answers /-/ready before it exits. */
async function ready(child: ChildProcess, url: string): Promise<boolean> {
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) return false;
    try {
      if ((await fetch(`${url}/-/ready`)).ok) return true;
    } catch {
      // Not listening yet.
    }
    await sleep(50);
  }
}
