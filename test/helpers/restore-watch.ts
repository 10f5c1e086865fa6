import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { TestCluster } from './postgres.ts';

/**
 * One psql session kept open on a test cluster, for tests that poll the catalog quickly enough to
 * catch a state that lasts milliseconds (a psql per query costs tens of them).
 */
export interface CatalogSession {
  /** Runs SQL; returns its unaligned rows. */
  query(sql: string): Promise<string[]>;
  close(): Promise<void>;
}

const END = '__end_of_query__';

export function openSession(cluster: TestCluster): CatalogSession {
  const child = spawn(path.join(cluster.binDir, 'psql'), ['-X', '-q', '-A', '-t', '-d', 'postgres'], {
    env: { PATH: process.env.PATH ?? '', ...cluster.env() },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let buffered = '';
  let waiting: ((rows: string[]) => void) | undefined;
  child.stdout.setEncoding('utf8').on('data', (data: string) => {
    buffered += data;
    const end = buffered.indexOf(`${END}\n`);
    if (end < 0 || !waiting) return;
    const rows = buffered.slice(0, end).split('\n').filter(Boolean);
    buffered = buffered.slice(end + END.length + 1);
    const resolve = waiting;
    waiting = undefined;
    resolve(rows);
  });
  let chain: Promise<unknown> = Promise.resolve();
  const query = (sql: string) => {
    const next = chain.then(
      () =>
        new Promise<string[]>((resolve) => {
          waiting = resolve;
          child.stdin.write(`${sql};\n\\echo ${END}\n`);
        }),
    );
    chain = next;
    return next;
  };
  return { query, close: () => closeChild(child) };
}

function closeChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('close', () => resolve());
    child.stdin?.end();
  });
}

/** Resolves when `child` has exited. */
export function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
  });
}
