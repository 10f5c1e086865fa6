import { resolveConnection } from '../connection.ts';
import {
  findRestoreLeftovers,
  removable,
  removeRestoreLeftovers,
  type RestoreLeftover,
} from './leftovers.ts';
import { RestoreTarget } from './target.ts';
import { findTools } from '../tools.ts';

export interface RestoreCleanupOptions {
  /** A postgres:// URL of the server; its database part is not used. Else the PG* and DB_* variables. */
  to?: string;
  /** The database password, given to the PostgreSQL programs as PGPASSWORD, never as an argument. */
  password?: string;
  pgBin?: string;
  /** Report, remove nothing. */
  dryRun?: boolean;
}

export interface RestoreCleanupResult {
  /** The server, as user@host:port. */
  server: string;
  dryRun: boolean;
  /** Everything found: removed, running, or only reported. */
  found: RestoreLeftover[];
  removed: RestoreLeftover[];
}

/**
 * Finds what restores left on a server (leftovers.ts) and removes what no running
 * restore holds: `strongbox restore --cleanup`, and what a health check reports.
 */
export async function cleanupRestores(options: RestoreCleanupOptions = {}): Promise<RestoreCleanupResult> {
  const connection = resolveConnection(options.to, process.env, options.password);
  const target = new RestoreTarget(connection, await findTools(connection, options.pgBin));
  const found = await findRestoreLeftovers(target);
  return {
    server: connection.display.replace(/\/[^/]*$/, ''),
    dryRun: Boolean(options.dryRun),
    found,
    removed: options.dryRun ? [] : await removeRestoreLeftovers(target, found),
  };
}

/**
 * Before a restore into `database`: removes what earlier restores of it left, says so, and
 * mentions what others left on the server.
 */
export async function clearLeftoversOf(
  target: RestoreTarget,
  database: string,
  step: (message: string) => void,
): Promise<RestoreLeftover[]> {
  const found = await findRestoreLeftovers(target);
  const ours = found.filter(
    (leftover) => removable(leftover) && (leftover.target === undefined || leftover.target === database),
  );
  const removed = await removeRestoreLeftovers(target, ours);
  for (const leftover of removed) step(`removed ${describeLeftover(leftover)}`);
  const others = found.filter((leftover) => !ours.includes(leftover) && !leftover.running);
  for (const leftover of others)
    step(
      `found ${describeLeftover(leftover)}${removable(leftover) ? '; strongbox restore --cleanup removes it' : ''}`,
    );
  return removed;
}

export function describeLeftover(leftover: RestoreLeftover): string {
  const of = leftover.target === undefined ? '' : ` of ${leftover.target}`;
  switch (leftover.kind) {
    case 'scratch':
      return `${leftover.database} (the scratch database of a restore${of} that did not finish)`;
    case 'replaced':
      return `${leftover.database} (the database a restore${of} replaced and was to drop)`;
    case 'closed':
      return `${leftover.database} (accepts no connections: ALTER DATABASE … ALLOW_CONNECTIONS true reopens it)`;
  }
}
