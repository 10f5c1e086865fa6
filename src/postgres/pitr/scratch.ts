import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Repository, SnapshotFilter } from '../../repository/repository.ts';
import { onInterrupt } from '../../util/interrupt.ts';
import type { PostgresConnection } from '../connection.ts';
import { describeTarget, type RecoveryTarget } from './recovery-target.ts';
import { restorePointInTime } from './restore-pitr.ts';
import { stopServer, type RecoveryReached } from './start-recovery.ts';

/**
 * What a scratch cluster (a drill's, a table recovery's) runs with beside its recovery settings:
 * no archiving, as it must never archive into the repository it came from, and no TCP listener.
 */
export const SCRATCH_SETTINGS: Readonly<Record<string, string>> = {
  archive_mode: 'off',
  listen_addresses: '',
};

/** A temporary directory for a scratch cluster's data directory, which the server's user can enter. */
export async function scratchDirectory(prefix: string): Promise<string> {
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  await fs.chmod(directory, 0o711);
  return directory;
}

/** A TCP port nothing listens on now, for a scratch server of our own. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export interface ScratchRecoveryOptions {
  target: RecoveryTarget;
  timeline?: 'latest' | 'current' | number;
  /** Directory of pg_ctl; else the backup's PostgreSQL version's. */
  pgBin?: string;
  /** pg_ctl to stop the server with should the recovery fail before saying which one it ran. */
  fallbackBinDir: string;
  strongbox: readonly string[];
  filter?: SnapshotFilter;
  onStep?: (message: string) => void;
}

/** A scratch cluster recovered to a target, running until the work given it is done. */
export interface ScratchCluster {
  /** The base backup recovered. */
  snapshot: string;
  /** The target, as described to the user. */
  target: string;
  reached: RecoveryReached;
  /** One of its databases, through its own socket directory, as the server's user. */
  connection(database: string): PostgresConnection;
}

/**
 * Runs `work` against a scratch cluster: the physical backup recovered into a temporary directory
 * (prefix strongbox-scratch-, its tablespaces beside the data directory) on a free local port,
 * archiving off and no TCP listener, promoted at the target. The cluster is stopped and its directory removed afterwards, whether `work`
 * succeeded or not, and on SIGINT/SIGTERM.
 */
export async function withScratchCluster<T>(
  repository: Repository,
  reference: string | undefined,
  options: ScratchRecoveryOptions,
  work: (cluster: ScratchCluster) => Promise<T>,
): Promise<T> {
  const step = options.onStep ?? (() => undefined);
  const scratch = await scratchDirectory('strongbox-scratch-');
  const pgdata = path.join(scratch, 'data');
  let binDir = options.fallbackBinDir;
  const remove = async () => {
    await stopServer(binDir, pgdata).catch(() => undefined);
    await fs.rm(scratch, { recursive: true, force: true });
  };
  const forgetInterrupt = onInterrupt(remove);
  try {
    const port = await freePort();
    step(`recover a scratch cluster to ${describeTarget(options.target)} on port ${port}`);
    const recovered = await restorePointInTime(repository, reference, {
      pgdata,
      target: options.target,
      timeline: options.timeline ?? 'latest',
      action: 'promote',
      start: true,
      port,
      strongbox: options.strongbox,
      checkDatabases: false,
      ...(options.pgBin ? { pgBin: options.pgBin } : {}),
      ...(options.filter ? { filter: options.filter } : {}),
      settings: SCRATCH_SETTINGS,
      // Never where they were: those directories are the live cluster's.
      tablespaceRoot: scratch,
      onStep: step,
    });
    if (recovered.binDir) binDir = recovered.binDir;
    const reached = recovered.recovery!;
    return await work({
      snapshot: recovered.snapshot,
      target: recovered.target,
      reached,
      connection: (database) => ({
        env: {
          PGHOST: reached.socketDirectory,
          PGPORT: String(reached.port),
          PGUSER: reached.user,
          PGDATABASE: database,
        },
        database,
        display: `the scratch cluster/${database}`,
      }),
    });
  } finally {
    step('remove the scratch cluster');
    await remove();
    forgetInterrupt();
  }
}

/** The moment recovered to, as a name part: 20261120_143000 for a time, else the kind and a short form. */
export function targetStamp(target: RecoveryTarget): string {
  if (target.kind === 'time')
    return target.time.toISOString().replace(/[-:]/g, '').replace('T', '_').slice(0, 15);
  if (target.kind === 'lsn') return `lsn_${target.lsn.replace('/', '_').toLowerCase()}`;
  if (target.kind === 'xid') return `xid_${target.xid}`;
  if (target.kind === 'name')
    return `point_${target.name.toLowerCase().replace(/[^a-z0-9]+/g, '_')}`.slice(0, 40);
  return new Date().toISOString().replace(/[-:]/g, '').replace('T', '_').slice(0, 15);
}
