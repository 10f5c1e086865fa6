import { positiveInteger } from '../arguments.ts';
import type { Command } from 'commander';
import { restoreSnapshotFiles } from '../../ops/restore.ts';
import { restorePostgres } from '../../postgres/restore/restore-database.ts';
import { restorePostgresCluster } from '../../postgres/restore/restore-cluster.ts';
import { cleanupRestores, describeLeftover } from '../../postgres/restore/cleanup.ts';
import { removable } from '../../postgres/restore/leftovers.ts';
import type { SnapshotFilter } from '../../repository/repository.ts';
import type { Output } from '../output.ts';
import { ConfigError } from '../../errors.ts';
import { confirmByName } from '../prompt.ts';
import {
  databaseCredentials,
  databasePasswordOption,
  type DatabaseCredentials,
  type DatabasePasswordOptions,
} from '../database.ts';
import { globalOptions, outputFor, withRepository, type GlobalOptions } from '../context.ts';
import { formatBytes } from '../output.ts';
import {
  isPhysicalRestore,
  physicalRestoreOptions,
  runPhysicalRestore,
  type PhysicalRestoreCliOptions,
} from '../physical-restore.ts';
import { showingMismatch, verificationTable } from '../verification.ts';
import { filterOptions, snapshotFilter, type FilterOptions } from './filters.ts';
import { count } from '../../util/plural.ts';

const collect = (value: string, previous: string[]) => [...previous, value];

export function registerRestore(program: Command): void {
  const group = program.command('restore').description('restore a snapshot');
  physicalRestoreOptions(databasePasswordOption(filterOptions(group)))
    .argument('[snapshot]', 'PostgreSQL snapshot: id, id prefix, or latest (default)', 'latest')
    .option(
      '--to <url>',
      'database to restore into: postgres://user@host:port/database, without a password (default: PG*/DB_* variables)',
    )
    .option('--at <time>', 'the newest snapshot taken at or before this time (e.g. "2026-11-20 14:30")')
    .option('--all', 'restore a cluster snapshot (backup postgres --all): roles, then every database')
    .option(
      '--replace',
      'replace an existing database: restore beside it, then swap names, keeping the old one',
    )
    .option(
      '--drop-old',
      'with --replace: drop the old database instead of keeping it as <name>_before_<time>',
    )
    .option('--yes', 'do not ask before replacing a database')
    .option(
      '--cleanup',
      'restore nothing: remove the scratch databases killed restores left on the server --to names',
    )
    .option('--dry-run', 'print the plan and change nothing')
    .option('--single-transaction', 'restore as one transaction: all or nothing')
    .option(
      '-j, --jobs <n>',
      'pg_restore runs at once, each restoring some of the tables (default 1)',
      positiveInteger('--jobs'),
    )
    .option('--table <name>', 'restore only this table (repeatable)', collect, [])
    .option('--schema-only', 'restore the schema, no data')
    .option('--data-only', 'restore the data into an existing schema')
    .option('--no-owner', 'do not set object owners (restore as the connecting user)')
    .option('--pg-bin <dir>', 'directory of pg_restore and psql')
    .action(async (reference: string, options: PostgresRestoreCliOptions, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      const credentials = await databaseCredentials(options.to, options, output);
      if (isPhysicalRestore(options)) {
        refuseLogicalOnlyOptions(options);
        return runPhysicalRestore(
          global,
          output,
          reference === 'latest' ? undefined : reference,
          { ...options, ...credentials },
          snapshotFilter(options),
        );
      }
      if (options.cleanup) {
        if (options.replace || options.all)
          throw new ConfigError('--cleanup restores nothing', { hint: 'Leave out --replace and --all.' });
        return cleanup(global, output, options, credentials);
      }
      const filter = snapshotFilter(options);
      if (options.all) return restoreCluster(global, output, reference, options, credentials, filter);
      if (options.at) {
        const before = new Date(options.at);
        if (Number.isNaN(before.getTime()))
          throw new ConfigError(`--at ${options.at} is not a time`, {
            hint: 'Use e.g. "2026-11-20 14:30" or an ISO time.',
          });
        filter.before = before;
      }
      const result = await withRepository(global, (repository) =>
        showingMismatch(
          output,
          restorePostgres(repository, reference, {
            ...(options.to ? { to: options.to } : {}),
            ...credentials,
            ...(options.pgBin ? { pgBin: options.pgBin } : {}),
            replace: Boolean(options.replace),
            dropOld: Boolean(options.dropOld),
            dryRun: Boolean(options.dryRun),
            singleTransaction: Boolean(options.singleTransaction),
            ...(options.jobs ? { jobs: options.jobs } : {}),
            schemaOnly: Boolean(options.schemaOnly),
            dataOnly: Boolean(options.dataOnly),
            noOwner: options.owner === false,
            ...(options.table.length ? { tables: options.table } : {}),
            filter,
            confirm: (database) => (options.yes ? Promise.resolve(true) : confirmByName(database)),
            onStep: (message) => output.info(message),
            onProgress: (bytes, total) => showRestoreProgress(output, bytes, total),
          }),
        ),
      );
      output.clearProgress();
      if (global.json) output.data(result);
      else if (result.dryRun) {
        output.line(
          `plan: restore snapshot ${result.snapshot.slice(0, 8)} of ${result.sourceDatabase} (${result.snapshotTime}, ${formatBytes(result.archiveBytes)}) into ${result.target}`,
        );
        for (const planned of result.steps) output.line(`  - ${planned}`);
        for (const note of result.notes) output.line(`  note: ${note}`);
      } else {
        if (result.verification) output.info(verificationTable(result.verification));
        for (const note of result.notes) output.info(`note: ${note}`);
        output.info(
          `restored snapshot ${result.snapshot.slice(0, 8)} into ${result.target} in ${(result.durationMs / 1000).toFixed(1)} s${result.keptAs ? `; the old database is kept as ${result.keptAs}` : ''}`,
        );
      }
    });
  // The snapshot filters (--tag, --kind…) are the `restore` command's: commander hands them to it
  // wherever they are typed, so `restore files` reads them from there.
  group
    .command('files')
    .description('restore files and directories under a target directory')
    .argument('<snapshot>', 'snapshot id, id prefix, or latest')
    .requiredOption('--target <dir>', 'directory to restore into (must be empty unless --overwrite)')
    .option('--include <glob>', 'restore only matching paths (repeatable)', collect, [])
    .option('--overwrite', 'replace existing files in the target')
    .action(
      async (
        reference: string,
        options: { target: string; include: string[]; overwrite?: boolean },
        command: Command,
      ) => {
        const global = globalOptions(command);
        const output = outputFor(global);
        const result = await withRepository(global, (repository) =>
          restoreSnapshotFiles(repository, reference, options.target, {
            filter: snapshotFilter(command.parent!.opts<FilterOptions>()),
            ...(options.include.length ? { include: options.include } : {}),
            ...(options.overwrite ? { overwrite: true } : {}),
            onProgress: (bytes) => output.progress(`restore: ${formatBytes(bytes)} written`),
          }),
        );
        output.clearProgress();
        if (global.json) output.data(result);
        else
          output.info(
            `restored snapshot ${result.snapshot.slice(0, 8)} to ${options.target}: ${count(result.files, 'file')}, ${count(result.dirs, 'directory', 'directories')}, ${count(result.symlinks, 'symlink')}, ${formatBytes(result.bytes)}`,
          );
      },
    );
}

interface PostgresRestoreCliOptions
  extends FilterOptions, DatabasePasswordOptions, Omit<PhysicalRestoreCliOptions, 'pgBin'> {
  all?: boolean;
  cleanup?: boolean;
  jobs?: number;
  to?: string;
  at?: string;
  replace?: boolean;
  dropOld?: boolean;
  yes?: boolean;
  dryRun?: boolean;
  singleTransaction?: boolean;
  table: string[];
  schemaOnly?: boolean;
  dataOnly?: boolean;
  owner?: boolean;
  pgBin?: string;
}

function showRestoreProgress(output: Output, bytes: number, total: number): void {
  output.progress(`restore: ${formatBytes(bytes)} of ${formatBytes(total)} restored`);
}

async function cleanup(
  global: GlobalOptions,
  output: Output,
  options: PostgresRestoreCliOptions,
  credentials: DatabaseCredentials,
): Promise<void> {
  const result = await cleanupRestores({
    ...(options.to ? { to: options.to } : {}),
    ...credentials,
    ...(options.pgBin ? { pgBin: options.pgBin } : {}),
    dryRun: Boolean(options.dryRun),
  });
  if (global.json) return output.data(result);
  for (const leftover of result.found) {
    const size = leftover.bytes === undefined ? '' : ` ${formatBytes(leftover.bytes)}`;
    const done = result.removed.includes(leftover)
      ? 'removed'
      : leftover.running
        ? 'running'
        : removable(leftover)
          ? 'would remove'
          : 'found';
    output.line(
      `${done.padEnd(12)} ${describeLeftover(leftover)}${leftover.running ? ', still restoring' : ''}${size}`,
    );
  }
  const freed = result.removed.reduce((sum, leftover) => sum + (leftover.bytes ?? 0), 0);
  output.info(
    result.found.length === 0
      ? `nothing left by restores on ${result.server}`
      : `removed ${count(result.removed.length, 'database')} left by restores on ${result.server} (${formatBytes(freed)})`,
  );
}

/**
 * Options of a logical restore that a physical one (--pgdata, a recovery target, --database)
 * has no use for: refused rather than silently ignored.
 */
function refuseLogicalOnlyOptions(options: PostgresRestoreCliOptions): void {
  const given = (
    [
      ['--all', options.all],
      ['--at', options.at],
      ['--cleanup', options.cleanup],
      ['--dry-run', options.dryRun],
      ['--single-transaction', options.singleTransaction],
      ['--jobs', options.jobs],
      ['--schema-only', options.schemaOnly],
      ['--data-only', options.dataOnly],
    ] as const
  )
    .filter(([, value]) => value !== undefined && value !== false)
    .map(([flag]) => flag);
  if (given.length > 0)
    throw new ConfigError(
      `${given.join(', ')} ${given.length === 1 ? 'belongs' : 'belong'} to a logical restore, not to a physical one or a recovery to a moment`,
      {
        hint: 'Leave them out; or leave out --pgdata, --database and the recovery target to restore a logical snapshot.',
      },
    );
}

const clusterDatabaseTitle = (database: string) => `${database}, compared with the backup`;

async function restoreCluster(
  global: GlobalOptions,
  output: Output,
  reference: string,
  options: PostgresRestoreCliOptions,
  credentials: DatabaseCredentials,
  filter: SnapshotFilter,
): Promise<void> {
  if (
    options.replace ||
    options.table.length ||
    options.schemaOnly ||
    options.dataOnly ||
    options.singleTransaction
  ) {
    throw new ConfigError('--all restores whole databases into new ones', {
      hint: 'Leave out --replace, --table, --schema-only, --data-only and --single-transaction, or restore one database with --name.',
    });
  }
  const result = await withRepository(global, (repository) =>
    showingMismatch(
      output,
      restorePostgresCluster(repository, reference, {
        ...(options.to ? { to: options.to } : {}),
        ...credentials,
        ...(options.pgBin ? { pgBin: options.pgBin } : {}),
        noOwner: options.owner === false,
        ...(options.jobs ? { jobs: options.jobs } : {}),
        dryRun: Boolean(options.dryRun),
        filter,
        onStep: (message) => output.info(message),
        onProgress: (bytes, total) => showRestoreProgress(output, bytes, total),
      }),
      clusterDatabaseTitle,
    ),
  );
  output.clearProgress();
  if (global.json) return output.data(result);
  if (result.dryRun) {
    output.line(`plan: restore cluster snapshot ${result.snapshot.slice(0, 8)} into ${result.target}`);
    for (const planned of result.steps) output.line(`  - ${planned}`);
    return;
  }
  for (const [database, verification] of Object.entries(result.verification))
    output.info(verificationTable(verification, clusterDatabaseTitle(database)));
  for (const note of result.notes) output.info(`note: ${note}`);
  output.info(
    `restored ${count(result.databases.length, 'database')} and the roles of snapshot ${result.snapshot.slice(0, 8)} into ${result.target} in ${(result.durationMs / 1000).toFixed(1)} s`,
  );
}
