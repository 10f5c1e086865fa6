import { Command, Option } from 'commander';
import { backup, type BackupResult } from '../../ops/backup.ts';
import { filesSource } from '../../sources/files.ts';
import { postgresSource } from '../../postgres/index.ts';
import { commandSource, stdinSource } from '../../sources/stdin.ts';
import type { BackupSource } from '../../sources/source.ts';
import { ConfigError } from '../../errors.ts';
import { awaitedLater } from '../../util/awaited-later.ts';
import { isoTime, positiveInteger } from '../arguments.ts';
import { databaseCredentials, databasePasswordOption, type DatabasePasswordOptions } from '../database.ts';
import { globalOptions, outputFor, withRepository, type GlobalOptions } from '../context.ts';
import { formatBytes, formatRate, type Output } from '../output.ts';
import { copyToOptions, prepareCopyTo, summarizeCopy, type CopyToOptions } from './copy.ts';
import { withEnvironment } from './filters.ts';
import { count } from '../../util/plural.ts';
import { hostname } from 'node:os';
import { describeOutcome } from '../outcome.ts';

interface CommonBackupOptions extends CopyToOptions {
  tag: string[];
  env?: string;
  host?: string;
  time?: Date;
  threads?: number;
}

const collect = (value: string, previous: string[]) => [...previous, value];

function withCommonOptions(command: Command): Command {
  return copyToOptions(command)
    .option('--tag <key=value>', 'tag the snapshot (repeatable)', collect, [])
    .option('--env <name>', 'the environment backed up (short for --tag env=NAME)')
    .option('--host <name>', 'host name recorded in the snapshot (default: this host)')
    .option(
      '--time <time>',
      'the time recorded in the snapshot, ISO 8601 (default: now; for importing older backups)',
      isoTime('--time'),
    )
    .option(
      '--threads <n>',
      'worker threads that compress and encrypt (default: CPUs - 1, at least 1)',
      positiveInteger('--threads'),
    );
}

export function registerBackup(program: Command): void {
  const group = program.command('backup').description('back up a source into a new snapshot');

  withCommonOptions(group.command('files'))
    .description('back up files and directories, with their metadata')
    .argument('<paths...>', 'files or directories')
    .option('--exclude <glob>', 'skip matching paths (repeatable)', collect, [])
    .action(
      async (paths: string[], options: CommonBackupOptions & { exclude: string[] }, command: Command) => {
        const global = globalOptions(command);
        const output = outputFor(global);
        const source = filesSource(paths, {
          exclude: options.exclude,
          onWarning: (message) => output.warn(`warning: ${message}`),
        });
        await runBackup(global, output, source, options);
      },
    );

  withCommonOptions(group.command('stdin'))
    .description('back up standard input, or the output of a command, as one file')
    .requiredOption('--name <name>', 'file name for the stream in the snapshot')
    .option(
      '--stdin-from-command',
      'run the command given after -- and store its output; a failing command leaves no snapshot',
    )
    .argument('[command...]', 'with --stdin-from-command: the command and its arguments, after --')
    .action(
      async (
        commandLine: string[],
        options: CommonBackupOptions & { name: string; stdinFromCommand?: boolean },
        command: Command,
      ) => {
        const global = globalOptions(command);
        let source: BackupSource;
        if (options.stdinFromCommand) {
          const [executable, ...args] = commandLine;
          if (!executable)
            throw new ConfigError('--stdin-from-command needs a command', {
              hint: 'Give it after --, e.g. -- pg_dump -Fc mydb.',
            });
          source = commandSource(options.name, executable, args);
        } else {
          if (commandLine.length > 0)
            throw new ConfigError('unexpected arguments', {
              hint: "To back up a command's output, add --stdin-from-command.",
            });
          if (process.stdin.isTTY)
            throw new ConfigError('standard input is a terminal', {
              hint: 'Pipe data in: pg_dump … | strongbox backup stdin --name NAME.',
            });
          source = stdinSource(options.name);
        }
        await runBackup(global, outputFor(global), source, options);
      },
    );
  databasePasswordOption(withCommonOptions(group.command('postgres')))
    .description(
      "back up one PostgreSQL database with pg_dump (custom format), or the whole cluster's files (--physical), streamed",
    )
    .argument(
      '[url]',
      'postgres://user@host:port/database, without a password (default: PG* or DB_* environment variables)',
    )
    .option(
      '--pg-bin <dir>',
      'directory of pg_dump and psql (default: the newest on PATH or in /usr/lib/postgresql)',
    )
    .option('--all', 'every database of the cluster, and its roles and tablespaces, as one snapshot')
    .option(
      '--physical',
      "the whole cluster's files, read from the data directory on the database host or through pg_basebackup, instead of pg_dump",
    )
    .addOption(
      new Option(
        '--method <method>',
        'with --physical: how the files are read: files (the data directory, on the database host), pg_basebackup (a replication connection), auto (files when they can be read here)',
      ).choices(['auto', 'files', 'pg_basebackup']),
    )
    .option(
      '--include-wal',
      'with --physical: include the WAL the backup needs, so that it restores without a WAL archive',
    )
    .option('--schema-only', 'dump the schema, no data')
    .option('--table <name>', 'dump only this table (repeatable; pg_dump patterns)', collect, [])
    .option('--exclude-table <name>', 'leave this table out (repeatable; pg_dump patterns)', collect, [])
    .action(
      async (
        url: string | undefined,
        options: CommonBackupOptions &
          DatabasePasswordOptions & {
            all?: boolean;
            physical?: boolean;
            includeWal?: boolean;
            method?: 'auto' | 'files' | 'pg_basebackup';
            pgBin?: string;
            schemaOnly?: boolean;
            table: string[];
            excludeTable: string[];
          },
        command: Command,
      ) => {
        const global = globalOptions(command);
        const output = outputFor(global);
        const credentials = await databaseCredentials(url, options, output);
        // Finding pg_dump, asking the server its version and starting the dump take a few process
        // starts and pg_dump's reading of the catalog: they go on while the repository opens (its
        // key derivation runs on another thread).
        const source = postgresSource({
          ...(url ? { url } : {}),
          ...credentials,
          ...(options.pgBin ? { pgBin: options.pgBin } : {}),
          ...(options.all ? { all: true } : {}),
          ...(options.physical ? { physical: true } : {}),
          ...(options.includeWal ? { includeWal: true } : {}),
          ...(options.method ? { method: options.method } : {}),
          ...(options.schemaOnly ? { schemaOnly: true } : {}),
          ...(options.table.length ? { tables: options.table } : {}),
          ...(options.excludeTable.length ? { excludeTables: options.excludeTable } : {}),
          ...(options.physical ? {} : { startNow: true }),
        });
        await runBackup(global, output, source, options);
      },
    );
}

/** The value of the last env=… tag, as --env would have set it. */
function envTag(tags: readonly string[]): string | undefined {
  return tags.findLast((tag) => tag.startsWith('env='))?.slice('env='.length);
}

async function runBackup(
  global: GlobalOptions,
  output: Output,
  source: BackupSource | Promise<BackupSource>,
  options: CommonBackupOptions,
): Promise<void> {
  // Finding pg_dump may fail while the repository opens.
  awaitedLater(Promise.resolve(source));
  describeOutcome({ subject: { host: options.host ?? hostname(), env: options.env ?? envTag(options.tag) } });
  let outcome;
  try {
    const copyTo = await prepareCopyTo(options);
    outcome = await withRepository(global, async (repository) => {
      copyTo?.checkSource(repository);
      const started = await source;
      describeOutcome({ subject: { kind: started.kind, name: started.name } });
      const result = await backup(repository, started, {
        tags: withEnvironment(options.tag, options.env),
        ...(options.host ? { host: options.host } : {}),
        ...(options.time ? { time: options.time } : {}),
        ...(options.threads ? { threads: options.threads } : {}),
        onProgress: (progress) =>
          output.progress(
            `backup: ${formatBytes(progress.bytesRead)} read, ${formatBytes(progress.bytesNew)} new`,
          ),
      });
      return { result, copy: await copyTo?.copy(repository, result.snapshot, output) };
    });
  } catch (error) {
    // A dump begun early (postgres) must not outlive a repository that did not open.
    await Promise.resolve(source).then(
      (started) => started.abandon?.(),
      () => undefined,
    );
    throw error;
  }
  const { result, copy } = outcome;
  describeOutcome({
    snapshot: result.snapshot,
    figures: {
      size_bytes: result.size,
      stored_bytes: result.stored,
      read_bytes: result.bytesRead,
      new_bytes: result.bytesNew,
      duration_seconds: result.durationMs / 1000,
    },
  });
  output.clearProgress();
  if (result.damagedPacks.length > 0) output.warn(damageWarning(result));
  if (global.json) output.data(copy ? { ...result, copy } : result);
  else output.info(copy ? `${summarize(result)}\n${summarizeCopy(copy)}` : summarize(result));
}

/** What a backup found damaged, and what it stored so that the new snapshot does not depend on it. */
function damageWarning(result: BackupResult): string {
  const packs = result.damagedPacks.map((pack) => pack.slice(0, 16)).join(', ');
  return (
    `warning: damaged ${result.damagedPacks.length === 1 ? 'pack' : 'packs'} ${packs}: this snapshot does not use them (${count(result.storedAgain, 'chunk')} stored again, ${result.wholeForDamagedBase} stored whole instead of as deltas); older snapshots may be affected\n` +
    '  Run `strongbox check --read-data` to see which.'
  );
}

/** "3.3:1", "422:1": three significant digits at most. */
function formatRatio(ratio: number): string {
  return `${ratio >= 100 ? Math.round(ratio) : Number(ratio.toPrecision(ratio >= 10 ? 3 : 2))}:1`;
}

function summarize(result: BackupResult): string {
  const share =
    result.size > 0
      ? ((100 * result.stored) / result.size).toFixed(result.stored * 100 < result.size ? 2 : 1)
      : '0';
  const stored =
    result.deduplicationRatio === null
      ? 'stored nothing new'
      : `stored ${formatBytes(result.stored)} (${share}% of the snapshot's size), deduplication ${formatRatio(result.deduplicationRatio)}`;
  return [
    `snapshot ${result.snapshot.slice(0, 8)} saved${result.parent ? ` (parent ${result.parent.slice(0, 8)})` : ''}`,
    `  read ${formatBytes(result.bytesRead)} of ${formatBytes(result.size)} in ${(result.durationMs / 1000).toFixed(1)} s (${formatRate(result.bytesRead, result.durationMs)})`,
    `  new ${formatBytes(result.bytesNew)} in ${count(result.newBlobs, 'blob')} (${count(result.deltaBlobs, 'delta')}), ${stored}`,
  ].join('\n');
}
