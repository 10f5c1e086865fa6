import { spawn, type ChildProcess } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PASSWORD } from './contenders.ts';
import { PG_BIN, serverOwnedDir, type Cluster } from './cluster.ts';
import { DATABASE } from './dataset.ts';
import { treeSize } from './files.ts';
import { asServerUser, STRONGBOX, type PhysicalContender, type WalPushMode } from './physical.ts';
import { measure, run, type CommandSpec } from './process.ts';

const quote = (text: string) => `'${text.replaceAll("'", "'\\''")}'`;
/** The shell archive_command of the WAL daemon's acknowledgements (bin/). */
const WAL_PUSH_SCRIPT = path.resolve(import.meta.dirname, '../bin/strongbox-wal-push');

/**
 * A strongbox repository set up as on a database host: created with a password, then a full key
 * and a write-only key as identity files (no key derivation per command). Backups and restores use
 * the full key (deltas need it); archive_command the write-only key, as docs/CLI.md recommends.
 */
async function createRepository(
  cli: string,
  dir: string,
): Promise<{ env: Record<string, string>; wal: Record<string, string> }> {
  await serverOwnedDir(dir);
  const repository = path.join(dir, 'repo');
  const state = path.join(dir, 'state');
  await serverOwnedDir(state);
  const base = { STRONGBOX_REPO: repository, STRONGBOX_STATE_DIR: state };
  const strongbox = (args: string[], env: Record<string, string>) =>
    run(asServerUser({ command: process.execPath, args: [cli, ...args], env: { ...base, ...env } }));
  await strongbox(['init'], { STRONGBOX_PASSWORD: PASSWORD });
  const full = path.join(dir, 'full.identity');
  const writeOnly = path.join(dir, 'write-only.identity');
  await strongbox(['key', 'add', '--identity-file-out', full], { STRONGBOX_PASSWORD: PASSWORD });
  await strongbox(['key', 'add', '--write-only', '--identity-file-out', writeOnly], {
    STRONGBOX_PASSWORD: PASSWORD,
  });
  return {
    env: { ...base, STRONGBOX_IDENTITY_FILE: full },
    wal: { ...base, STRONGBOX_IDENTITY_FILE: writeOnly },
  };
}

const walPush = (cli: string, env: Record<string, string>) =>
  `${Object.entries(env)
    .map(([name, value]) => `${name}=${quote(value)}`)
    .join(' ')} ${quote(process.execPath)} ${quote(cli)} wal push %p`;

/** Daemons started for a mode or a restore, stopped once it is measured. */
const daemons = new Map<string, ChildProcess>();

function startDaemon(cli: string, env: Record<string, string>, args: string[]): Promise<ChildProcess> {
  const spec: CommandSpec = asServerUser({
    command: process.execPath,
    args: [cli, 'wal', 'daemon', ...args],
  });
  const child = spawn(spec.command, spec.args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let log = '';
    child.stderr!.on('data', (data: Buffer) => {
      log += data.toString();
      if (log.includes('listening')) resolve(child);
    });
    child.on('exit', (code) => reject(new Error(`strongbox wal daemon exited (${code}): ${log}`)));
  });
}

async function stopDaemon(key: string): Promise<void> {
  const daemon = daemons.get(key);
  daemons.delete(key);
  if (!daemon || daemon.exitCode !== null) return;
  const exited = new Promise((resolve) => daemon.once('exit', resolve));
  // runuser passes SIGTERM on to the daemon, which stops once its pushes are durable.
  daemon.kill('SIGTERM');
  await exited;
}

/**
 * `wal push` as archive_command: on its own (each call opens the repository), or handing segments
 * to `wal daemon`, which pushes the waiting ones ahead (--parallel 2 on 2 cores) and answers each
 * call once its segment is durable.
 */
function pushModes(cli: string): WalPushMode[] {
  return [
    {
      name: 'sync',
      queues: false,
      prepare: async (_cluster, dir) => walPush(cli, (await createRepository(cli, dir)).wal),
    },
    {
      name: 'async',
      queues: true,
      prepare: async (_cluster, dir, pgData) => {
        const { wal } = await createRepository(cli, dir);
        const env = { ...wal, STRONGBOX_WAL_SOCKET: path.join(dir, 'wal.sock') };
        const acknowledged = path.join(dir, 'acknowledged');
        daemons.set(
          dir,
          await startDaemon(cli, env, [
            '--pgdata',
            pgData,
            '--parallel',
            '2',
            '--acknowledge-dir',
            acknowledged,
          ]),
        );
        // As docs/CLI.md recommends: answered from the shell for a file the daemon pushed ahead,
        // or is pushing; Node only for the others.
        const assignments = Object.entries({ ...env, STRONGBOX_CLI: `${process.execPath} ${cli}` })
          .map(([name, value]) => `${name}=${quote(value)}`)
          .join(' ');
        return `${assignments} ${quote(WAL_PUSH_SCRIPT)} ${quote(acknowledged)} %p`;
      },
      settle: (dir) => stopDaemon(dir),
    },
  ];
}

/** strongbox on a local repository in `dir`, run as the server's user. */
export function strongboxPhysical(cli: string, dir: string): PhysicalContender {
  let env: Record<string, string> = {};
  let walEnv: Record<string, string> = {};
  let source: Cluster | undefined;
  const strongbox = (args: string[], extra: Record<string, string> = {}) =>
    asServerUser({ command: process.execPath, args: [cli, ...args], env: { ...env, ...extra } });
  return {
    name: STRONGBOX,
    init: async (cluster) => {
      source = cluster;
      ({ env, wal: walEnv } = await createRepository(cli, dir));
    },
    get archiveCommand() {
      return walPush(cli, walEnv);
    },
    // One kind of backup: each stores only what changed since the last (deltas against it).
    backup: () =>
      measure(
        strongbox(
          ['backup', 'postgres', '--physical', '--method', 'files', '--pg-bin', PG_BIN],
          source!.env(DATABASE) as Record<string, string>,
        ),
      ),
    repositorySize: () => treeSize(path.join(dir, 'repo')),
    // The server the bench starts replays through a daemon serving restore_command from the repository.
    restore: async (dataDir) => {
      const measured = await measure(strongbox(['restore', '--pgdata', dataDir, '--pg-bin', PG_BIN]));
      const socket = path.join(dir, 'restore.sock');
      const conf = path.join(dataDir, 'postgresql.auto.conf');
      const text = await readFile(conf, 'utf8');
      await writeFile(
        conf,
        text.replace("restore_command = '", `restore_command = 'STRONGBOX_WAL_SOCKET=${socket} `),
      );
      daemons.set(
        'restore',
        await startDaemon(cli, { ...env, STRONGBOX_WAL_SOCKET: socket }, ['--pgdata', dataDir]),
      );
      return measured;
    },
    afterRestore: () => stopDaemon('restore'),
    walPushModes: pushModes(cli),
  };
}
