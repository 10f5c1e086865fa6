import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError, ExitCode, StrongboxError } from '../../errors.ts';
import type { WalArchiver } from './archiver.ts';
import type { WalFetcher } from './fetcher.ts';
import { ask, MAX_MESSAGE_BYTES, type WalReply } from './protocol.ts';
import { parseWalFileName } from './segments.ts';

const requestSchema = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('push'), name: z.string().max(64), path: z.string().max(4096) }),
  z.strictObject({ op: z.literal('fetch'), name: z.string().max(64), path: z.string().max(4096) }),
  z.strictObject({ op: z.literal('ping') }),
]);

/** What a server answers with: pushes, fetches, and where a failed request is told. */
export interface WalHandlers {
  archiver?: WalArchiver;
  fetcher?: WalFetcher;
  onError?: (message: string) => void;
}

export interface WalServer {
  socket: string;
  /** Stops accepting, waits for the pushes in flight, removes the socket. */
  close(): Promise<void>;
}

/**
 * Listens on a Unix socket (mode 0600 in a 0700 directory: only the user PostgreSQL runs as may
 * ask) for `wal push` and `wal fetch`, which hand it what PostgreSQL asked of them. A socket left
 * by a daemon that died is replaced; one a live daemon answers on is not.
 */
export async function startWalServer(socket: string, handlers: WalHandlers): Promise<WalServer> {
  await fs.mkdir(path.dirname(socket), { recursive: true, mode: 0o700 });
  if (await answers(socket))
    throw new ConfigError(`a WAL daemon already listens on ${socket}`, {
      hint: 'Stop it first, or give this one another socket.',
    });
  await fs.rm(socket, { force: true });

  const server = net.createServer((connection) => {
    let received = '';
    connection.setEncoding('utf8');
    connection.on('error', () => undefined);
    connection.on('data', (data: string) => {
      received += data;
      if (received.length > MAX_MESSAGE_BYTES) {
        connection.destroy();
        return;
      }
      const end = received.indexOf('\n');
      if (end < 0) return;
      connection.removeAllListeners('data');
      void handle(received.slice(0, end), handlers).then(
        (reply) => connection.end(`${JSON.stringify(reply)}\n`),
        () => connection.destroy(),
      );
    });
  });
  const previousMask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socket, () => resolve());
    });
  } finally {
    process.umask(previousMask);
  }
  await fs.chmod(socket, 0o600);
  return {
    socket,
    async close() {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await handlers.archiver?.settle();
      await fs.rm(socket, { force: true });
    },
  };
}

async function handle(line: string, handlers: WalHandlers): Promise<WalReply> {
  let request: z.infer<typeof requestSchema>;
  try {
    request = requestSchema.parse(JSON.parse(line));
  } catch {
    return { ok: false, error: 'the WAL daemon could not read the request', exitCode: ExitCode.usage };
  }
  if (request.op === 'ping') return { ok: true };
  if (!parseWalFileName(request.name) || !path.isAbsolute(request.path))
    return { ok: false, error: `${request.name} is not a WAL file name`, exitCode: ExitCode.usage };
  try {
    if (request.op === 'push') {
      if (!handlers.archiver)
        return { ok: false, error: 'this WAL daemon does not archive', exitCode: ExitCode.usage };
      const stored = await handlers.archiver.push(request.name, request.path);
      return { ok: true, stored };
    }
    if (!handlers.fetcher)
      return { ok: false, error: 'this WAL daemon does not restore', exitCode: ExitCode.usage };
    return (await handlers.fetcher.fetch(request.name, request.path))
      ? { ok: true }
      : { ok: false, missing: true };
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    handlers.onError?.(`${request.op} ${request.name}: ${message}`);
    return {
      ok: false,
      error: message,
      exitCode: error instanceof StrongboxError ? error.exitCode : ExitCode.general,
    };
  }
}

async function answers(socket: string): Promise<boolean> {
  try {
    return (await ask(socket, { op: 'ping' })).ok;
  } catch {
    return false;
  }
}
