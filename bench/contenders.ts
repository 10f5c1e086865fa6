import { existsSync } from 'node:fs';
import path from 'node:path';
import { DATABASE, type Dataset } from './dataset.ts';
import { withCluster } from './cluster.ts';
import { treeSize, warmTree } from './files.ts';
import { measure, run, type CommandSpec, type Measurement } from './process.ts';

const STREAM_NAME = 'shop.dump';
/** Not a secret: the repositories live only for one run. */
const PASSWORD = 'strongbox-bench';

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

/** A backup tool and a fresh repository of its own. */
interface Contender {
  init(): Promise<void>;
  backup(dump: string): Promise<BackupRun>;
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
  const first = await contender.backup(dataset.before);
  const second = await contender.backup(dataset.after);
  return { first, second };
}

export function strongbox(cli: string, workDir: string): Contender {
  const repository = path.join(workDir, 'strongbox-repo');
  const command = (args: string[]): CommandSpec => ({
    command: process.execPath,
    args: [cli, '--repo', repository, ...args],
    env: { STRONGBOX_PASSWORD: PASSWORD },
  });
  return {
    init: async () => void (await run(command(['init']))),
    backup: (dump) =>
      measureGrowth(repository, async () => {
        const result = await measure(command(['--json', 'backup', 'stdin', '--name', STREAM_NAME]), {
          stdinFile: dump,
        });
        return { ...result, reportedStored: (JSON.parse(result.stdout) as { stored: number }).stored };
      }),
  };
}

export function restic(workDir: string): Contender {
  const repository = path.join(workDir, 'restic-repo');
  const env = {
    RESTIC_REPOSITORY: repository,
    RESTIC_PASSWORD: PASSWORD,
    RESTIC_CACHE_DIR: path.join(workDir, 'restic-cache'),
  };
  return {
    init: async () => void (await run({ command: 'restic', args: ['init'], env })),
    backup: (dump) =>
      measureGrowth(repository, () =>
        measure(
          { command: 'restic', args: ['backup', '--stdin', '--stdin-filename', STREAM_NAME], env },
          { stdinFile: dump },
        ),
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
    return measure(cluster.client('pg_dump', DATABASE, ['-Fc', '-Z0']), { discardStdout: true });
  });
}

/** An age identity kept in the cache, and its recipient. */
export async function ageRecipient(cacheDir: string): Promise<string> {
  const identity = path.join(cacheDir, 'age-identity.txt');
  if (!existsSync(identity)) await run({ command: 'age-keygen', args: ['-o', identity] });
  return (await run({ command: 'age-keygen', args: ['-y', identity] })).trim();
}
