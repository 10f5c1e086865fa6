import { existsSync } from 'node:fs';
import path from 'node:path';
import { DATABASE, type Dataset } from './dataset.ts';
import { PG_BIN, withCluster, type Cluster } from './cluster.ts';
import { treeSize, warmTree } from './files.ts';
import { measure, run, type CommandSpec, type Measurement } from './process.ts';

export const STREAM_NAME = 'shop.dump';
/** Not a secret: the repositories live only for one run, or in .bench-cache. */
export const PASSWORD = 'strongbox-bench';

export interface BackupRun extends Measurement {
  /** Growth of the repository's files. */
  stored: number;
  /** What the tool itself says it stored, where it says so. */
  reportedStored?: number;
}

export interface TwoBackups {
  first: BackupRun;
  second: BackupRun;
}

/** What a backup reads: a dump file on standard input, or the shop database of a running cluster. */
export type Source = { dump: string } | { cluster: Cluster };

/** A backup tool and a fresh repository of its own. */
export interface Contender {
  init(): Promise<void>;
  backup(source: Source): Promise<BackupRun>;
}

export interface StrongboxContender extends Contender {
  /** `strongbox restore latest --jobs 2` into a new database of `cluster`, which strongbox creates. */
  restore(cluster: Cluster, database: string): Promise<Measurement>;
  /** `strongbox --json drill latest --jobs 2` into a new database of `cluster`, which it creates and drops. */
  drill(cluster: Cluster, database: string): Promise<Measurement>;
}

async function measureGrowth(
  repository: string,
  backup: () => Promise<Omit<BackupRun, 'stored'>>,
): Promise<BackupRun> {
  const sizeBefore = await treeSize(repository);
  const result = await backup();
  return { ...result, stored: (await treeSize(repository)) - sizeBefore };
}

/** The first backup of the dump, then the second after the day's writes, into one repository. */
export async function twoBackups(contender: Contender, dataset: Dataset): Promise<TwoBackups> {
  await contender.init();
  const first = await contender.backup({ dump: dataset.before });
  const second = await contender.backup({ dump: dataset.after });
  return { first, second };
}

/** The shop database's dump, as pg_dump writes it to standard output. */
export const pgDumpOf = (cluster: Cluster) => cluster.client('pg_dump', DATABASE, ['-Fc', '-Z0']);

/** The built CLI on `repository`, unlocked with the bench's password. */
export function strongboxCommand(
  cli: string,
  repository: string,
  args: string[],
  env: Record<string, string> = {},
): CommandSpec {
  return {
    command: process.execPath,
    args: [cli, '--repo', repository, ...args],
    env: { ...env, STRONGBOX_PASSWORD: PASSWORD },
  };
}

/** A fresh strongbox repository in `dir`, used through the built CLI. */
export function strongbox(cli: string, dir: string): StrongboxContender {
  const repository = path.join(dir, 'strongbox-repo');
  const command = (args: string[], env: Record<string, string> = {}) =>
    strongboxCommand(cli, repository, args, env);
  const backupOnce = (source: Source) =>
    'dump' in source
      ? measure(command(['--json', 'backup', 'stdin', '--name', STREAM_NAME]), { stdinFile: source.dump })
      : measure(command(['--json', 'backup', 'postgres', '--pg-bin', PG_BIN], source.cluster.env(DATABASE)));
  return {
    init: async () => void (await run(command(['init']))),
    backup: (source) =>
      measureGrowth(repository, async () => {
        const result = await backupOnce(source);
        return { ...result, reportedStored: (JSON.parse(result.stdout) as { stored: number }).stored };
      }),
    restore: (cluster, database) =>
      measure(
        command(
          ['restore', 'latest', '--jobs', '2', '--to', `postgres:///${database}`, '--pg-bin', PG_BIN],
          cluster.env(database),
        ),
      ),
    drill: (cluster, database) =>
      measure(
        command(
          ['--json', 'drill', 'latest', '--jobs', '2', '--to', `postgres:///${database}`, '--pg-bin', PG_BIN],
          cluster.env(database),
        ),
      ),
  };
}

/** `producer | consumer` in bash, failing if either fails; the producer's arguments reach it unparsed. */
export function pipe(producer: CommandSpec, consumer: string, env: Record<string, string> = {}): CommandSpec {
  const script = `set -o pipefail; "$@" | ${consumer}`;
  return { command: 'bash', args: ['-c', script, 'bash', producer.command, ...producer.args], env };
}

/** A fresh restic repository in `dir`, its cache beside it so that it is not counted as stored. */
export function restic(dir: string): Contender {
  const repository = path.join(dir, 'restic-repo');
  const env = {
    RESTIC_REPOSITORY: repository,
    RESTIC_PASSWORD: PASSWORD,
    RESTIC_CACHE_DIR: path.join(dir, 'restic-cache'),
  };
  const backupArgs = ['backup', '--stdin', '--stdin-filename', STREAM_NAME];
  return {
    init: async () => void (await run({ command: 'restic', args: ['init'], env })),
    backup: (source) =>
      measureGrowth(repository, () =>
        'dump' in source
          ? measure({ command: 'restic', args: backupArgs, env }, { stdinFile: source.dump })
          : measure(pipe(pgDumpOf(source.cluster), `restic ${backupArgs.join(' ')}`, env)),
      ),
  };
}

/** What a hand-made encrypted backup costs: compress and encrypt, store nothing. */
export function zstdAge(dump: string, recipient: string): Promise<Measurement> {
  const pipeline = 'set -o pipefail; zstd -q -3 -T2 | age -r "$AGE_RECIPIENT"';
  return measure(
    { command: 'bash', args: ['-c', pipeline], env: { AGE_RECIPIENT: recipient } },
    { stdinFile: dump, discardStdout: true },
  );
}

/** pg_dump's own rate, on the cached cluster: the day's writes are in it, as in the after dump. */
export function pgDump(dataset: Dataset): Promise<Measurement> {
  return withCluster(dataset.dataDir, [], async (cluster) => {
    // The relation files: pg_dump reads tables and catalogs, never the WAL.
    for (const dir of ['base', 'global']) await warmTree(path.join(dataset.dataDir, dir));
    return measure(pgDumpOf(cluster), { discardStdout: true });
  });
}

/** An age identity kept in the cache, and its recipient. */
export async function ageRecipient(cacheDir: string): Promise<string> {
  const identity = path.join(cacheDir, 'age-identity.txt');
  if (!existsSync(identity)) await run({ command: 'age-keygen', args: ['-o', identity] });
  return (await run({ command: 'age-keygen', args: ['-y', identity] })).trim();
}
