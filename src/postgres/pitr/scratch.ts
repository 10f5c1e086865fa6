import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Repository, SnapshotFilter } from '../../repository/repository.ts';
import { onInterrupt } from '../../util/interrupt.ts';
import type { PostgresConnection } from '../connection.ts';
import { describeTarget, type RecoveryTarget } from './recovery-target.ts';
import { restorePointInTime, type PointInTimeRestoreResult } from './restore-pitr.ts';
import { stopServer, type RecoveryReached } from './start-recovery.ts';

/**
 * What a scratch cluster (a drill's, a table recovery's) runs with beside its recovery settings:
 * no archiving, as it must never archive into the repository it came from, and no TCP listener.
 */
const SCRATCH_SETTINGS: Readonly<Record<string, string>> = {
  archive_mode: 'off',
  listen_addresses: '',
};

/** A temporary directory for a scratch cluster's data directory, which the server's user can enter. */
async function scratchDirectory(prefix: string): Promise<string> {
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  await fs.chmod(directory, 0o711);
  return directory;
}

/** A TCP port nothing listens on now, for a scratch server of our own. */
function freePort(): Promise<number> {
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
  /**
   * pg_ctl's directory, to stop the server with should an interrupt come before the recovery said
   * which one it ran; without it, a server interrupted then stops itself once its directory is gone.
   */
  fallbackBinDir?: string;
  strongbox: readonly string[];
  filter?: SnapshotFilter;
  /** pg_amcheck every database once recovered (a drill's check); off by default. */
  checkDatabases?: boolean;
  /** Leave the data directory in place, stopped, once the work is done (not when recovery failed). */
  keep?: boolean;
  /** The temporary directory's name prefix; strongbox-scratch- by default. */
  prefix?: string;
  onStep?: (message: string) => void;
}

/** A scratch cluster recovered to a target, running until the work given it is done. */
export interface ScratchCluster {
  /** The base backup recovered. */
  snapshot: string;
  /** The target, as described to the user. */
  target: string;
  reached: RecoveryReached;
  /** The restore as it went: files laid out, timings, pg_amcheck's report when asked for. */
  restored: PointInTimeRestoreResult;
  /** The data directory. */
  pgdata: string;
  /** One of its databases, through its own socket directory, as the server's user. */
  connection(database: string): PostgresConnection;
}

/**
 * Runs `work` against a scratch cluster: the physical backup recovered into a temporary directory
 * (its tablespaces beside the data directory) on a free local port, archiving off and no TCP
 * listener, promoted at the target. The cluster is stopped and its directory removed afterwards,
 * whether `work` succeeded or not (unless `keep` asks to leave a recovered one), and on SIGINT and
 * SIGTERM.
 */
export async function withScratchCluster<T>(
  repository: Repository,
  reference: string | undefined,
  options: ScratchRecoveryOptions,
  work: (cluster: ScratchCluster) => Promise<T>,
): Promise<T> {
  const step = options.onStep ?? (() => undefined);
  const scratch = await scratchDirectory(options.prefix ?? 'strongbox-scratch-');
  const pgdata = path.join(scratch, 'data');
  let binDir = options.fallbackBinDir;
  let recoveredOnce = false;
  const stop = async () => {
    if (binDir) await stopServer(binDir, pgdata).catch(() => undefined);
  };
  const remove = async () => {
    await stop();
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
      checkDatabases: options.checkDatabases ?? false,
      ...(options.pgBin ? { pgBin: options.pgBin } : {}),
      ...(options.filter ? { filter: options.filter } : {}),
      settings: SCRATCH_SETTINGS,
      // Never where they were: those directories are the live cluster's.
      tablespaceRoot: scratch,
      onStep: step,
    });
    if (recovered.binDir) binDir = recovered.binDir;
    recoveredOnce = true;
    const reached = recovered.recovery!;
    return await work({
      snapshot: recovered.snapshot,
      target: recovered.target,
      reached,
      restored: recovered,
      pgdata,
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
    if (options.keep && recoveredOnce) {
      step(`stop the scratch cluster, kept in ${pgdata}`);
      await stop();
    } else {
      step('remove the scratch cluster');
      await remove();
    }
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
