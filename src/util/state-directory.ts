import os from 'node:os';
import path from 'node:path';

// Only node: modules here: the WAL client (cli/wal-client.ts) finds its daemon's socket through it
// before anything else is loaded.

/** `STRONGBOX_STATE_DIR`, else `$XDG_STATE_HOME/strongbox`, else `~/.local/state/strongbox`. */
export function defaultStateDirectory(env: NodeJS.ProcessEnv = process.env): string {
  if (env.STRONGBOX_STATE_DIR) return env.STRONGBOX_STATE_DIR;
  const base = env.XDG_STATE_HOME || path.join(env.HOME || os.homedir(), '.local', 'state');
  return path.join(base, 'strongbox');
}
