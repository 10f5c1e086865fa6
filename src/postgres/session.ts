import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { SourceError } from '../errors.ts';
import { stopOnInterrupt } from '../util/interrupt.ts';
import type { PostgresConnection } from './connection.ts';
import { firstError, toolEnvironment } from './tools.ts';

/**
 * One psql session kept open across several statements, for what must happen in one
 * transaction: exporting the snapshot pg_dump then dumps from, and reading the catalog in that
 * same snapshot. Each statement's output ends at a random marker echoed after it.
 */
export class PsqlSession {
  private readonly child: ChildProcessWithoutNullStreams;
  private buffered = '';
  private stderr = '';
  private waiting:
    { marker: string; resolve: (output: string) => void; reject: (error: Error) => void } | undefined;
  private exited: Error | undefined;
  /** Why psql could not be started, if it could not: 'close' follows. */
  private startFailure: NodeJS.ErrnoException | undefined;

  constructor(
    private readonly connection: PostgresConnection,
    binDir: string,
  ) {
    this.child = spawn(path.join(binDir, 'psql'), ['-X', '-w', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1'], {
      env: toolEnvironment({ ...connection.env, PGTZ: 'UTC' }),
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    stopOnInterrupt(this.child);
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (text: string) => {
      this.buffered += text;
      this.deliver();
    });
    this.child.stderr.on('data', (data: Buffer) => (this.stderr += data.toString()));
    this.child.stdin.on('error', () => undefined);
    this.child.on('error', (cause: NodeJS.ErrnoException) => (this.startFailure = cause));
    this.child.on('close', (code) => {
      const reason = this.startFailure
        ? `cannot run psql: ${this.startFailure.code ?? this.startFailure.message}`
        : (firstError(this.stderr, 'psql') ?? `psql exit ${code}`);
      this.exited = new SourceError(`the session with ${connection.display} ended: ${reason}`, {
        hint: 'Check the connection settings and that the server is up.',
        cause: this.startFailure,
      });
      this.waiting?.reject(this.exited);
      this.waiting = undefined;
    });
  }

  /** Runs one statement and returns its unaligned output. */
  query(sql: string): Promise<string> {
    if (this.exited) return Promise.reject(this.exited);
    if (this.waiting) return Promise.reject(new Error('one statement at a time'));
    const marker = `-- end ${randomBytes(8).toString('hex')}`;
    return new Promise((resolve, reject) => {
      this.waiting = { marker, resolve, reject };
      this.child.stdin.write(`${sql.replace(/;\s*$/, '')};\n\\echo '${marker}'\n`);
    });
  }

  private deliver(): void {
    if (!this.waiting) return;
    const at = this.buffered.indexOf(`${this.waiting.marker}\n`);
    if (at < 0) return;
    const output = this.buffered.slice(0, at);
    this.buffered = this.buffered.slice(at + this.waiting.marker.length + 1);
    const { resolve } = this.waiting;
    this.waiting = undefined;
    resolve(output);
  }

  /** Ends the session (and with it any open transaction). */
  async close(): Promise<void> {
    if (this.exited) return;
    const closed = new Promise<void>((resolve) => this.child.once('close', () => resolve()));
    this.child.stdin.end('\\q\n');
    await closed;
  }
}
