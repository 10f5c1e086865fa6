import { createHash } from 'node:crypto';
import { realpathSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { defaultStateDirectory } from '../../util/state-directory.ts';

// Only node: modules here and in what this imports: `wal push` and `wal fetch` load this first,
// for every file PostgreSQL archives or restores, and reach the WAL daemon before anything else.

/** What `wal push` and `wal fetch` ask the daemon: one request, one reply, per connection. */
export type WalRequest =
  { op: 'push'; name: string; path: string } | { op: 'fetch'; name: string; path: string } | { op: 'ping' };

export type WalReply =
  | { ok: true; stored?: boolean }
  | { ok: false; missing: true }
  | { ok: false; error: string; exitCode: number };

/**
 * The exit code `wal fetch` gives PostgreSQL: 1 when the archive does not hold the file, which
 * PostgreSQL takes for the end of the archive; anything else that failed exits above 125, which
 * PostgreSQL takes for a failed command and stops recovery, rather than ending it early and
 * opening a database that is missing what could not be fetched (a storage outage, a damaged file).
 */
export function fetchExitCode(code: number): number {
  return code === 0 ? 0 : 128 + code;
}

/** A request or reply is one line of JSON; nothing longer is read. */
export const MAX_MESSAGE_BYTES = 64 * 1024;

/**
 * The daemon's socket for a data directory: `STRONGBOX_WAL_SOCKET`, else one per data directory in
 * the state directory, named by a hash of its real path (a socket path must stay under 108 bytes).
 * PostgreSQL runs archive_command and restore_command in the data directory, so `wal push` finds
 * the socket of the cluster that called it without being told.
 */
export function walSocketPath(pgdata: string, env: NodeJS.ProcessEnv = process.env): string {
  if (env.STRONGBOX_WAL_SOCKET) return env.STRONGBOX_WAL_SOCKET;
  let real = path.resolve(pgdata);
  try {
    real = realpathSync(real);
  } catch {
    // A data directory that does not exist yet still names its socket.
  }
  const hash = createHash('sha256').update(real).digest('hex').slice(0, 16);
  return path.join(defaultStateDirectory(env), `wal-${hash}.sock`);
}

/** Sends one request and reads its reply; rejects when the connection fails or closes without one. */
export function ask(socket: string, request: WalRequest): Promise<WalReply> {
  return new Promise((resolve, reject) => {
    const connection = net.createConnection(socket);
    let received = '';
    connection.setEncoding('utf8');
    connection.on('connect', () => connection.write(`${JSON.stringify(request)}\n`));
    connection.on('data', (data: string) => {
      received += data;
      if (received.length > MAX_MESSAGE_BYTES) connection.destroy(new Error('the reply is too long'));
    });
    connection.on('error', reject);
    connection.on('close', () => {
      const line = received.split('\n')[0] ?? '';
      try {
        resolve(parseReply(JSON.parse(line)));
      } catch {
        reject(new Error(received ? 'the reply could not be read' : 'the connection closed without a reply'));
      }
    });
  });
}

function parseReply(value: unknown): WalReply {
  const reply = value as Record<string, unknown>;
  if (reply?.ok === true) return { ok: true };
  if (reply?.ok === false && reply.missing === true) return { ok: false, missing: true };
  if (reply?.ok === false && typeof reply.error === 'string' && typeof reply.exitCode === 'number')
    return { ok: false, error: reply.error.slice(0, 4096), exitCode: reply.exitCode };
  throw new Error('not a reply');
}
