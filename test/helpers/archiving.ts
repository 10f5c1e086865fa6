import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmod, chown, mkdir, readdir } from 'node:fs/promises';
import path from 'node:path';
import { CLI, cleanEnv, expectExit, runCli, tempRepo, type TempRepo } from './cli.ts';
import type { TestCluster } from './postgres.ts';

/**
 * A test cluster archiving into a strongbox repository, as a database host would: the repository,
 * its password file and the client state belong to the postgres user, which PostgreSQL runs
 * archive_command as.
 */
export interface ArchivingSetup {
  repo: TempRepo;
  /** The data directory. */
  pgdata: string;
  /** What archive_command and the daemon need: the repository, its password, the state directory. */
  env: Record<string, string>;
  /** Sets archive_command: strongbox's, or another (`false`, to let segments wait). */
  setArchiveCommand(command: string): Promise<void>;
  strongboxCommand(operation: 'push' | 'fetch'): string;
  /** Switches to a new segment after some writes, `count` times; the names of the segments finished. */
  switchSegments(count: number): Promise<string[]>;
  /** Waits until PostgreSQL says it archived `name` (or a later segment). */
  waitArchived(name: string, timeoutMs?: number): Promise<void>;
  /** Starts `strongbox wal daemon` as the postgres user; resolves once it listens. */
  startDaemon(args?: string[]): Promise<{ child: ChildProcess; log: () => string }>;
  cleanup(): Promise<void>;
}

const BIN_DIR = '/usr/lib/postgresql/15/bin';
const asRoot = process.getuid?.() === 0;

function postgresIds(): { uid: number; gid: number } | undefined {
  if (!asRoot) return undefined;
  return {
    uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' })),
    gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' })),
  };
}

async function chownTree(target: string, ids: { uid: number; gid: number }): Promise<void> {
  await chown(target, ids.uid, ids.gid);
  for (const entry of await readdir(target, { withFileTypes: true })) {
    const child = path.join(target, entry.name);
    if (entry.isDirectory()) await chownTree(child, ids);
    else await chown(child, ids.uid, ids.gid);
  }
}

const quote = (text: string) => `'${text.replaceAll("'", "'\\''")}'`;

export async function archivingSetup(cluster: TestCluster): Promise<ArchivingSetup> {
  const repo = await tempRepo();
  const result = await runCli(['init'], { env: repo.env });
  expectExit(result, 0);
  const state = path.join(repo.dir, 'state');
  await mkdir(state, { mode: 0o700 });
  const ids = postgresIds();
  if (ids) await chownTree(repo.dir, ids);
  await chmod(repo.dir, 0o755);
  const pgdata = path.join(cluster.host, 'data');
  const env = { ...repo.env, STRONGBOX_STATE_DIR: state };
  const prefix = Object.entries(env)
    .map(([name, value]) => `${name}=${quote(value)}`)
    .join(' ');
  const strongboxCommand = (operation: 'push' | 'fetch') =>
    `${prefix} ${quote(process.execPath)} ${quote(CLI)} wal ${operation === 'push' ? 'push %p' : 'fetch %f %p'}`;

  const restart = async () => {
    const args = ['restart', '-w', '-D', pgdata, '-m', 'fast'];
    const [command, argv] = asRoot
      ? ['runuser', ['-u', 'postgres', '--', path.join(BIN_DIR, 'pg_ctl'), ...args]]
      : [path.join(BIN_DIR, 'pg_ctl'), args];
    execFileSync(command as string, argv as string[], { cwd: cluster.host, stdio: 'ignore' });
  };
  const setArchiveCommand = async (command: string) => {
    await cluster.psql(`alter system set archive_command = '${command.replaceAll("'", "''")}'`);
    await cluster.psql('select pg_reload_conf()');
  };
  await cluster.psql(`alter system set archive_mode = 'on'`);
  await setArchiveCommand(strongboxCommand('push'));
  await restart();

  const daemons: ChildProcess[] = [];
  return {
    repo,
    pgdata,
    env,
    setArchiveCommand,
    strongboxCommand,
    async switchSegments(count) {
      const names: string[] = [];
      await cluster.psql('create table if not exists archiving_test (n int, filler text)');
      for (let i = 0; i < count; i++) {
        await cluster.psql(
          `insert into archiving_test select g, md5(g::text) from generate_series(1, 2000) g`,
        );
        names.push((await cluster.psql('select pg_walfile_name(pg_switch_wal())')).trim());
      }
      return names;
    },
    async waitArchived(name, timeoutMs = 120_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const [last = '', failed = ''] = (
          await cluster.psql(`select coalesce(last_archived_wal, ''), failed_count from pg_stat_archiver`)
        )
          .trim()
          .split('|');
        if (last >= name && /^[0-9A-F]{24}$/.test(last)) return;
        if (Date.now() > deadline)
          throw new Error(
            `${name} was not archived in time: last archived ${last || 'none'}, ${failed} failures`,
          );
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    },
    async startDaemon(args = []) {
      const child = spawn(process.execPath, [CLI, 'wal', 'daemon', '--pgdata', pgdata, ...args], {
        env: { ...cleanEnv(), ...env },
        cwd: repo.dir,
        stdio: ['ignore', 'ignore', 'pipe'],
        ...(ids ? { uid: ids.uid, gid: ids.gid } : {}),
      });
      daemons.push(child);
      let log = '';
      child.stderr!.on('data', (data: Buffer) => (log += data.toString()));
      await new Promise<void>((resolve, reject) => {
        const check = () => {
          if (log.includes('listening')) resolve();
        };
        child.stderr!.on('data', check);
        child.on('exit', (code) => reject(new Error(`the WAL daemon exited (${code}): ${log}`)));
      });
      return { child, log: () => log };
    },
    async cleanup() {
      for (const daemon of daemons) if (daemon.exitCode === null) daemon.kill('SIGKILL');
      await repo.cleanup();
    },
  };
}
