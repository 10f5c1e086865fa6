import path from 'node:path';
import {
  ask,
  fetchExitCode,
  walSocketPath,
  type WalReply,
  type WalRequest,
} from '../postgres/wal/protocol.ts';

// Only node: modules here: PostgreSQL runs `wal push` for every WAL segment, and this is all that
// loads when a WAL daemon answers (a few tens of milliseconds, instead of the whole program).

/** Exit codes of the fast path: as the full program's (docs/CLI.md). */
const NOT_FOUND = 1;
const STORAGE_FAILURE = 6;

/**
 * `wal push <path>` and `wal fetch <name> <path>` handed to a running WAL daemon. Returns the exit
 * code when the daemon answered, or undefined when this is not such a command or no daemon listens,
 * and the whole program must run it itself.
 */
export async function runWalClient(
  argv: readonly string[],
  cwd = process.cwd(),
): Promise<number | undefined> {
  const request = walRequest(argv, cwd);
  if (!request) return undefined;
  let reply: WalReply;
  try {
    reply = await ask(walSocketPath(cwd), request);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    // No daemon: the program pushes or fetches on its own.
    if (code === 'ENOENT' || code === 'ECONNREFUSED') return undefined;
    // The daemon went away with the request: whether it was stored is unknown, so it was not.
    process.stderr.write(`strongbox: the WAL daemon did not answer: ${(error as Error).message}\n`);
    return request.op === 'fetch' ? fetchExitCode(STORAGE_FAILURE) : STORAGE_FAILURE;
  }
  if (reply.ok) return 0;
  if ('missing' in reply) return NOT_FOUND;
  process.stderr.write(`strongbox: ${reply.error}\n`);
  return request.op === 'fetch' ? fetchExitCode(reply.exitCode) : reply.exitCode;
}

/**
 * Global options naming the repository and its key: the daemon has opened its own repository,
 * so they are passed over. Any other option leaves the command to the program.
 */
const VALUE_OPTIONS = new Set([
  '-r',
  '--repo',
  '--password-file',
  '--password-command',
  '--identity-file',
  '--config',
]);

/** The request a command line makes, when it is `wal push` or `wal fetch` with no other option. */
function walRequest(argv: readonly string[], cwd: string): WalRequest | undefined {
  const words: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const argument = argv[i]!;
    if (VALUE_OPTIONS.has(argument)) i++;
    else if (argument.startsWith('-') && VALUE_OPTIONS.has(argument.split('=')[0]!)) continue;
    else if (argument.startsWith('-')) return undefined;
    else words.push(argument);
  }
  const [command, operation, ...rest] = words;
  if (command !== 'wal') return undefined;
  if (operation === 'push' && rest.length === 1)
    return { op: 'push', name: path.basename(rest[0]!), path: path.resolve(cwd, rest[0]!) };
  if (operation === 'fetch' && rest.length === 2)
    return { op: 'fetch', name: rest[0]!, path: path.resolve(cwd, rest[1]!) };
  return undefined;
}
