import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { MissingToolError } from '../../errors.ts';
import type { Repository } from '../../repository/repository.ts';
import { WalFetcher } from '../wal/fetcher.ts';
import { startWalServer } from '../wal/server.ts';
import { amcheckAll, type AmcheckReport } from './amcheck.ts';
import { confLiteral, describeTarget } from './recovery-target.ts';
import { layOutPhysicalRestore, type PhysicalRestoreOptions } from './restore-physical.ts';
import { startRecovery, type RecoveryReached } from './start-recovery.ts';

export interface PointInTimeRestoreOptions extends Omit<PhysicalRestoreOptions, 'restoreCommand'> {
  /** How the server runs strongbox for restore_command: the program and its arguments before `wal fetch`. */
  strongbox: readonly string[];
  /** Start the server and wait until recovery reaches the target. */
  start?: boolean;
  port?: number;
  /** Directory of pg_ctl, psql and pg_amcheck; else the backup's PostgreSQL version's. */
  pgBin?: string;
  /** Segments fetched ahead while the server replays. */
  prefetch?: number;
  /** pg_amcheck every database once recovered (default true, with `start`). */
  checkDatabases?: boolean;
}

export interface PointInTimeRestoreResult {
  snapshot: string;
  cluster: string;
  backupEnd: string;
  target: string;
  pgdata: string;
  files: number;
  bytes: number;
  tablespaces: { oid: string; name: string; location: string }[];
  /** What the server's restore_command runs from now on. */
  restoreCommand: string;
  recovery?: RecoveryReached;
  amcheck?: AmcheckReport;
  amcheckSeconds?: number;
  /** The PostgreSQL programs the server was started with. */
  binDir?: string;
  durationSeconds: number;
}

const quote = (word: string) => (/^[\w@%+=:,./-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`);

/**
 * A point-in-time restore: the data directory laid out from a base backup
 * (restore-physical.ts), and, with `start`, the server started and recovered to the target while
 * this process serves its restore_command from the repository through a socket of its own (no key
 * or password reaches the server), then every database checked with pg_amcheck. restore_command is
 * left as `strongbox wal fetch %f %p` afterwards, which needs a WAL daemon or the repository's key
 * in the server's environment.
 */
export async function restorePointInTime(
  repository: Repository,
  reference: string | undefined,
  options: PointInTimeRestoreOptions,
): Promise<PointInTimeRestoreResult> {
  const began = performance.now();
  const step = options.onStep ?? (() => undefined);
  const lasting = [...options.strongbox.map(quote), 'wal', 'fetch', '%f', '%p'].join(' ');
  let socketDirectory: string | undefined;
  let restoreCommand = lasting;
  if (options.start) {
    socketDirectory = await fs.mkdtemp(path.join(os.tmpdir(), 'strongbox-wal-'));
    const socket = path.join(socketDirectory, 'fetch.sock');
    restoreCommand = `STRONGBOX_WAL_SOCKET=${quote(socket)} ${lasting}`;
  }
  try {
    const layout = await layOutPhysicalRestore(repository, reference, { ...options, restoreCommand });
    const result: PointInTimeRestoreResult = {
      snapshot: layout.backup.id,
      cluster: layout.backup.details.cluster,
      backupEnd: layout.backup.details.stopTime,
      target: describeTarget(options.target),
      pgdata: layout.pgdata,
      files: layout.files,
      bytes: layout.bytes,
      tablespaces: layout.tablespaces,
      restoreCommand: lasting,
      durationSeconds: 0,
    };
    if (options.start && socketDirectory) {
      const binDir = await serverBinDir(
        Math.floor(layout.backup.details.serverVersion / 10000),
        options.pgBin,
      );
      result.binDir = binDir;
      const owner = await fs.stat(layout.pgdata);
      if (process.getuid?.() === 0) await fs.chown(socketDirectory, owner.uid, owner.gid);
      const socket = path.join(socketDirectory, 'fetch.sock');
      const server = await startWalServer(socket, {
        fetcher: new WalFetcher(repository.wal, { ahead: options.prefetch ?? 4 }),
        onError: (message) => repository.onWarning(message),
      });
      if (process.getuid?.() === 0) await fs.chown(socket, owner.uid, owner.gid);
      try {
        result.recovery = await startRecovery({
          pgdata: layout.pgdata,
          binDir,
          port: options.port ?? 5432,
          action: options.action ?? 'promote',
          onStep: step,
        });
      } finally {
        await server.close();
        await replaceRestoreCommand(layout.pgdata, restoreCommand, lasting);
      }
      if (result.recovery.state !== 'shut down' && options.checkDatabases !== false) {
        step('check every database with pg_amcheck (heapallindexed)');
        const checking = performance.now();
        result.amcheck = await amcheckAll({ binDir, ...result.recovery });
        result.amcheckSeconds = (performance.now() - checking) / 1000;
      }
    }
    result.durationSeconds = (performance.now() - began) / 1000;
    return result;
  } finally {
    if (socketDirectory) await fs.rm(socketDirectory, { recursive: true, force: true });
  }
}

/** Once recovery is over, restore_command no longer names the socket this process served. */
async function replaceRestoreCommand(pgdata: string, served: string, lasting: string): Promise<void> {
  const file = path.join(pgdata, 'postgresql.auto.conf');
  const text = await fs.readFile(file, 'utf8');
  await fs.writeFile(file, text.replace(confLiteral(served), confLiteral(lasting)));
}

/** pg_ctl and its fellows of the backup's major version. */
async function serverBinDir(major: number, pgBin?: string): Promise<string> {
  const candidates = pgBin ? [pgBin] : [`/usr/lib/postgresql/${major}/bin`];
  for (const dir of candidates) {
    try {
      await fs.access(path.join(dir, 'pg_ctl'));
      return dir;
    } catch {
      // try the next
    }
  }
  throw new MissingToolError(
    `pg_ctl of PostgreSQL ${major} was not found${pgBin ? ` in ${pgBin}` : ''}`,
    'pg_ctl',
    major,
  );
}
