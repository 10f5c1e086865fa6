import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { serverOwnedDir, type Cluster } from './cluster.ts';
import { DATABASE } from './dataset.ts';
import { treeSize } from './files.ts';
import { asServerUser, PGBACKREST, type PhysicalContender, type WalPushMode } from './physical.ts';
import { measure, run, type CommandSpec } from './process.ts';

const STANZA = 'bench';

/**
 * The settings every pgBackRest repository of the bench shares: zstd (at its default level, 3) and
 * two processes, as `process-max=2` on 2 cores; no encryption. `start-fast` has the backup begin
 * with an immediate checkpoint, as strongbox's does, rather than wait for a spread one. Logs go to
 * the console only, warnings and up.
 */
function config(dir: string, cluster: Cluster, pgPath: string, extra: Record<string, string> = {}): string {
  const { PGHOST, PGPORT, PGUSER } = cluster.env(DATABASE) as Record<'PGHOST' | 'PGPORT' | 'PGUSER', string>;
  const global = {
    'repo1-path': path.join(dir, 'repo'),
    // Nothing is expired during a run; set only so that pgBackRest does not warn that it is unset.
    'repo1-retention-full': '9',
    'compress-type': 'zst',
    'process-max': '2',
    'start-fast': 'y',
    'log-level-console': 'warn',
    'log-level-file': 'off',
    'lock-path': path.join(dir, 'lock'),
    ...extra,
  };
  const stanza = {
    'pg1-path': pgPath,
    'pg1-socket-path': PGHOST,
    'pg1-port': PGPORT,
    'pg1-user': PGUSER,
  };
  const section = (name: string, options: Record<string, string>) =>
    [`[${name}]`, ...Object.entries(options).map(([key, value]) => `${key}=${value}`)].join('\n');
  return `${section('global', global)}\n\n${section(STANZA, stanza)}\n`;
}

function pgbackrest(configFile: string, args: string[]): CommandSpec {
  return asServerUser({
    command: 'pgbackrest',
    args: [`--config=${configFile}`, `--stanza=${STANZA}`, ...args],
  });
}

/**
 * Writes the configuration and creates the stanza. `stanza-create` checks pg1-path against the
 * running server's data directory, so it is given the cluster's; the configuration may name another
 * (the data directory the archive_command timings lay the captured segments out in).
 */
async function createRepository(
  dir: string,
  cluster: Cluster,
  pgPath: string,
  extra: Record<string, string> = {},
): Promise<string> {
  await serverOwnedDir(dir);
  const configFile = path.join(dir, 'pgbackrest.conf');
  await writeFile(configFile, config(dir, cluster, pgPath, extra));
  await run(pgbackrest(configFile, [`--pg1-path=${cluster.dataDir}`, 'stanza-create']));
  return configFile;
}

const archivePush = (configFile: string) =>
  `pgbackrest --config=${configFile} --stanza=${STANZA} archive-push %p`;

/**
 * `archive-push` as PostgreSQL runs it: synchronous, each call compressing and storing its segment;
 * or with `archive-async=y` (two processes, a spool directory), where the first call starts a
 * process that pushes every segment whose `.ready` file it finds, and each call returns once its
 * own segment is acknowledged in the spool.
 */
const PUSH_MODES: WalPushMode[] = [
  {
    name: 'sync',
    queues: false,
    prepare: async (cluster, dir, pgData) => archivePush(await createRepository(dir, cluster, pgData)),
  },
  {
    name: 'async',
    queues: true,
    prepare: async (cluster, dir, pgData) =>
      archivePush(
        await createRepository(dir, cluster, pgData, {
          'archive-async': 'y',
          'spool-path': path.join(dir, 'spool'),
        }),
      ),
    // The process started by the first call holds the stanza's archive lock (flock) until it exits.
    settle: async (dir) =>
      void (await run(
        asServerUser({
          command: 'flock',
          args: ['-w', '600', path.join(dir, 'lock', `${STANZA}-archive.lock`), 'true'],
        }),
      )),
  },
];

/** pgBackRest 2.45 on a local repository in `dir`, run as the server's user. */
export function pgBackRest(dir: string): PhysicalContender {
  const configFile = path.join(dir, 'pgbackrest.conf');
  return {
    name: PGBACKREST,
    init: async (cluster) => void (await createRepository(dir, cluster, cluster.dataDir)),
    archiveCommand: archivePush(configFile),
    backup: (type) =>
      measure(pgbackrest(configFile, [`--type=${type === 'full' ? 'full' : 'incr'}`, 'backup'])),
    repositorySize: () => treeSize(path.join(dir, 'repo')),
    // --type=default: recover along the timeline to the end of the archive, then promote.
    restore: (dataDir) =>
      measure(pgbackrest(configFile, [`--pg1-path=${dataDir}`, '--type=default', 'restore'])),
    walPushModes: PUSH_MODES,
  };
}
