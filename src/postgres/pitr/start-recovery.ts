import { execFile, spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { promisify } from 'node:util';
import { ConfigError, VerificationError } from '../../errors.ts';
import { onInterrupt } from '../../util/interrupt.ts';
import { toolEnvironment } from '../tools.ts';
import type { TargetAction } from './recovery-target.ts';

const run = promisify(execFile);

export interface StartRecoveryOptions {
  pgdata: string;
  binDir: string;
  port: number;
  action: TargetAction;
  onStep?: (message: string) => void;
}

export interface RecoveryReached {
  /** How the server was left: running promoted, running paused at the target, or shut down. */
  state: 'promoted' | 'paused' | 'shut down';
  /** The last WAL position replayed, and the commit time of the last transaction replayed. */
  lsn: string | null;
  lastTransaction: string | null;
  timeline: number | null;
  recoverySeconds: number;
  /** Where to connect to it (a socket directory of its own), while it runs. */
  socketDirectory: string;
  port: number;
  /** The server's user, for connections through that socket. */
  user: string;
}

/** Recovery stopped without reaching its target (WAL missing, a wrong timeline…): the server's words. */
export class RecoveryFailedError extends VerificationError {
  constructor(readonly serverLog: string[]) {
    super(
      `recovery failed: ${
        serverLog
          .filter((line) => /FATAL|PANIC|ERROR/.test(line))
          .at(-1)
          ?.replace(/^.*?(FATAL|PANIC|ERROR):\s*/, '') ?? 'the server stopped'
      }`,
      {
        hint: `The server's last lines:\n${serverLog.slice(-8).join('\n')}`,
      },
    );
  }
}

/**
 * Starts the restored server and waits until recovery has reached its target: promoted and open,
 * paused at the target, or shut down there. The server runs as the data directory's owner, on
 * `port`, with a socket directory of its own so that this process can ask it how far it got. A
 * server that stops any other way failed to reach the target: its log says why (exit 7).
 */
export async function startRecovery(options: StartRecoveryOptions): Promise<RecoveryReached> {
  const step = options.onStep ?? (() => undefined);
  const owner = await fs.stat(options.pgdata);
  if (owner.uid === 0)
    throw new ConfigError(`${options.pgdata} belongs to root, and PostgreSQL does not run as root`, {
      hint: 'Restore as the server user, or give the data directory to it before starting.',
    });
  const asOwner = process.getuid?.() === 0 ? { uid: owner.uid, gid: owner.gid } : {};
  const user = (await run('id', ['-nu', String(owner.uid)])).stdout.trim();
  const socketDirectory = await fs.mkdtemp(path.join(os.tmpdir(), 'strongbox-recovery-'));
  if (asOwner.uid !== undefined) await fs.chown(socketDirectory, owner.uid, owner.gid);
  const log = path.join(options.pgdata, 'strongbox-recovery.log');
  const began = performance.now();
  step(`start PostgreSQL on port ${options.port}, replaying WAL`);
  const pgCtl = (args: string[]) =>
    new Promise<void>((resolve, reject) => {
      const child = spawn(path.join(options.binDir, 'pg_ctl'), args, {
        ...asOwner,
        cwd: options.pgdata,
        stdio: 'ignore',
        // The server and its restore_command get no secret of this process.
        env: toolEnvironment({ LC_MESSAGES: 'C' }),
      });
      child.on('error', reject);
      child.on('exit', (code) =>
        code === 0 ? resolve() : reject(new Error(`pg_ctl ${args[0]} exited with ${code}`)),
      );
    });
  // -W: not waiting, as pg_ctl would only until connections are accepted; the loop below waits
  // for the target, and reads the log when the server stops.
  await pgCtl([
    'start',
    '-W',
    '-D',
    options.pgdata,
    '-l',
    log,
    '-o',
    `-p ${options.port} -k ${socketDirectory} -c lc_messages=C`,
  ]);
  const stopOnInterrupt = onInterrupt(() =>
    pgCtl(['stop', '-D', options.pgdata, '-m', 'fast']).catch(() => undefined),
  );
  const query = async (sql: string): Promise<string | undefined> => {
    try {
      const { stdout } = await run(
        path.join(options.binDir, 'psql'),
        [
          '-X',
          '-w',
          '-A',
          '-t',
          '-h',
          socketDirectory,
          '-p',
          String(options.port),
          '-U',
          user,
          '-d',
          'postgres',
          '-c',
          sql,
        ],
        { env: toolEnvironment({ PGCONNECT_TIMEOUT: '5' }) },
      );
      return stdout.trim();
    } catch {
      return undefined;
    }
  };
  const serverLog = async () => (await fs.readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean);
  // The server writes postmaster.pid a moment after pg_ctl returns: until then, not running is not stopped.
  const startDeadline = performance.now() + 120_000;
  let seenRunning = false;
  try {
    for (;;) {
      const running = await serverRunning(options.pgdata);
      if (running) seenRunning = true;
      else if (!seenRunning && performance.now() < startDeadline && !(await stoppedInLog(log))) {
        await new Promise((resolve) => setTimeout(resolve, 100));
        continue;
      }
      if (!running) {
        if (
          options.action === 'shutdown' &&
          (await clusterState(options.binDir, options.pgdata)) === 'shut down in recovery'
        )
          return {
            state: 'shut down',
            lsn: await controlField(options.binDir, options.pgdata, 'Minimum recovery ending location'),
            lastTransaction: null,
            timeline:
              Number(
                await controlField(options.binDir, options.pgdata, "Min recovery ending loc's timeline"),
              ) || null,
            recoverySeconds: (performance.now() - began) / 1000,
            socketDirectory,
            port: options.port,
            user,
          };
        throw new RecoveryFailedError(await serverLog());
      }
      const answer = await query(
        `select pg_is_in_recovery(), case when pg_is_in_recovery() then pg_get_wal_replay_pause_state() end, pg_last_wal_replay_lsn(), coalesce(pg_last_xact_replay_timestamp()::text, ''), (select timeline_id from pg_control_checkpoint())`,
      );
      if (answer) {
        const [inRecovery, pause, lsn, lastTransaction, timeline] = answer.split('|');
        const reached = (state: RecoveryReached['state']): RecoveryReached => ({
          state,
          lsn: lsn || null,
          lastTransaction: lastTransaction || null,
          timeline: Number(timeline) || null,
          recoverySeconds: (performance.now() - began) / 1000,
          socketDirectory,
          port: options.port,
          user,
        });
        if (inRecovery === 'f') {
          // The checkpoint's timeline lags a promotion until the next checkpoint.
          const current = await query(`select pg_walfile_name(pg_current_wal_lsn())`);
          const result = reached('promoted');
          if (current && /^[0-9A-F]{24}$/.test(current)) result.timeline = parseInt(current.slice(0, 8), 16);
          return result;
        }
        if (pause === 'paused' && options.action === 'pause') return reached('paused');
      }
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  } catch (error) {
    if (await serverRunning(options.pgdata))
      await pgCtl(['stop', '-D', options.pgdata, '-m', 'fast']).catch(() => undefined);
    throw error;
  } finally {
    stopOnInterrupt();
  }
}

/** Whether the server log says the server stopped (lc_messages is C: the start sets it). */
async function stoppedInLog(log: string): Promise<boolean> {
  const text = await fs.readFile(log, 'utf8').catch(() => '');
  return /database system is shut down|startup process .* exited|FATAL:|PANIC:/.test(text);
}

/** Whether the server of a data directory runs: its postmaster.pid names a live process. */
export async function serverRunning(pgdata: string): Promise<boolean> {
  try {
    const pid = Number((await fs.readFile(path.join(pgdata, 'postmaster.pid'), 'utf8')).split('\n')[0]);
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function controlField(binDir: string, pgdata: string, field: string): Promise<string | null> {
  try {
    const { stdout } = await run(path.join(binDir, 'pg_controldata'), [pgdata], {
      env: toolEnvironment({ LC_ALL: 'C' }),
    });
    const line = stdout.split('\n').find((entry) => entry.startsWith(`${field}:`));
    return line ? line.slice(field.length + 1).trim() : null;
  } catch {
    return null;
  }
}

function clusterState(binDir: string, pgdata: string): Promise<string | null> {
  return controlField(binDir, pgdata, 'Database cluster state');
}

/** Stops the server of a data directory (fast), as its owner; nothing when none runs. */
export async function stopServer(binDir: string, pgdata: string): Promise<void> {
  const owner = await fs.stat(pgdata).catch(() => undefined);
  if (!owner) return;
  const asOwner = process.getuid?.() === 0 ? { uid: owner.uid, gid: owner.gid } : {};
  await new Promise<void>((resolve) => {
    const child = spawn(path.join(binDir, 'pg_ctl'), ['stop', '-D', pgdata, '-m', 'fast', '-w'], {
      ...asOwner,
      stdio: 'ignore',
      cwd: pgdata,
      env: toolEnvironment({}),
    });
    child.on('error', () => resolve());
    child.on('exit', () => resolve());
  });
}
