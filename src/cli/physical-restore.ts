import { realpathSync } from 'node:fs';
import type { Command } from 'commander';
import { ConfigError, VerificationError } from '../errors.ts';
import { recoveryTarget, type RecoveryTarget, type TargetAction } from '../postgres/pitr/recovery-target.ts';
import { restorePointInTime, type PointInTimeRestoreResult } from '../postgres/pitr/restore-pitr.ts';
import { recoverDatabase } from '../postgres/pitr/database-recovery.ts';
import { recoverTables } from '../postgres/pitr/table-recovery.ts';
import type { SnapshotFilter } from '../repository/repository.ts';
import { formatElapsed } from '../util/duration.ts';
import { count } from '../util/plural.ts';
import { withRepository, type GlobalOptions } from './context.ts';
import { publicLocation } from './outcome.ts';
import { formatBytes, type Output } from './output.ts';
import { confirmByName } from './prompt.ts';
import { showingMismatch, verificationTable } from './verification.ts';

const collect = (value: string, previous: string[]) => [...previous, value];

/** The options of a physical, point-in-time restore (`restore --pgdata`). */
export interface PhysicalRestoreCliOptions {
  pgdata?: string;
  time?: string;
  lsn?: string;
  xid?: string;
  targetName?: string;
  immediate?: boolean;
  timeline?: string;
  targetAction?: string;
  start?: boolean;
  port?: string;
  force?: boolean;
  tablespace: string[];
  archiveMode?: string;
  prefetch?: string;
  pgBin?: string;
  database?: string;
}

export function physicalRestoreOptions(command: Command): Command {
  return command
    .option(
      '--pgdata <dir>',
      'restore a physical backup into this data directory, for point-in-time recovery',
    )
    .option('--time <time>', 'recover to this moment (e.g. "2026-11-20 14:30:00+00")')
    .option('--lsn <lsn>', 'recover to this WAL position')
    .option('--xid <xid>', 'recover to this transaction')
    .option('--target-name <name>', 'recover to this restore point (pg_create_restore_point)')
    .option('--immediate', 'recover only until the base backup is consistent')
    .option('--timeline <timeline>', 'recover along this timeline: latest (default), current or a number')
    .option('--target-action <action>', 'at the target: promote (default), pause or shutdown')
    .option('--start', 'start the server, wait for the target, then check every database with pg_amcheck')
    .option('--port <port>', 'with --start: the port to start it on (default 5432)')
    .option('--force', 'with --pgdata: empty a data directory that is not empty')
    .option('--tablespace <oid=dir>', 'restore a tablespace elsewhere (repeatable)', collect, [])
    .option(
      '--database <name>',
      'recover this whole database as of the target (the end of the archive without one) into --to',
    )
    .option(
      '--archive-mode <mode>',
      'preserve (default): the restored server archives as the backed-up one did; off: a copy that must not archive into the repository',
    );
}

/** What `restore` hands on: these, and the options a table recovery shares with a logical restore. */
type RestoreCommandOptions = PhysicalRestoreCliOptions & {
  to?: string;
  table: string[];
  replace?: boolean;
  dropOld?: boolean;
  yes?: boolean;
  owner?: boolean;
  password?: string;
};

/**
 * Whether the command line asks for a physical restore: a data directory, a recovery target, or a
 * database to recover (to the end of the archive without a target).
 */
export function isPhysicalRestore(options: PhysicalRestoreCliOptions): boolean {
  return options.pgdata !== undefined || options.database !== undefined || hasTarget(options);
}

function targetOf(options: PhysicalRestoreCliOptions): RecoveryTarget {
  return recoveryTarget({
    ...(options.time !== undefined ? { time: options.time } : {}),
    ...(options.lsn !== undefined ? { lsn: options.lsn } : {}),
    ...(options.xid !== undefined ? { xid: options.xid } : {}),
    ...(options.targetName !== undefined ? { name: options.targetName } : {}),
    ...(options.immediate ? { immediate: true } : {}),
  });
}

function hasTarget(options: PhysicalRestoreCliOptions): boolean {
  return (
    [options.time, options.lsn, options.xid, options.targetName].some((value) => value !== undefined) ||
    Boolean(options.immediate)
  );
}

export async function runPhysicalRestore(
  global: GlobalOptions,
  output: Output,
  reference: string | undefined,
  options: RestoreCommandOptions,
  filter: SnapshotFilter,
): Promise<void> {
  if (options.database !== undefined) {
    if (options.pgdata !== undefined || options.table.length > 0)
      throw new ConfigError('--database recovers one whole database into a live server', {
        hint: 'Leave out --pgdata and --table; or leave out --database to restore the whole cluster or some tables.',
      });
    return runDatabaseRecovery(global, output, reference, options, filter);
  }
  if (options.pgdata === undefined) return runTableRecovery(global, output, reference, options, filter);
  const target = targetOf(options);
  const action = (options.targetAction ?? 'promote') as TargetAction;
  if (!['promote', 'pause', 'shutdown'].includes(action))
    throw new ConfigError(`--target-action ${options.targetAction} is not promote, pause or shutdown`);
  const timeline = timelineOf(options);
  const port = options.port === undefined ? undefined : Number(options.port);
  if (port !== undefined && !(Number.isInteger(port) && port > 0 && port < 65536))
    throw new ConfigError(`--port ${options.port} is not a port number`);
  if (options.archiveMode !== undefined && !['preserve', 'off'].includes(options.archiveMode))
    throw new ConfigError(`--archive-mode ${options.archiveMode} is not preserve or off`);
  const tablespaces: Record<string, string> = {};
  for (const mapping of options.tablespace) {
    const match = /^(\d+)=(.+)$/.exec(mapping);
    if (!match) throw new ConfigError(`--tablespace ${mapping} is not OID=DIRECTORY`);
    tablespaces[match[1]!] = match[2]!;
  }
  const result = await withRepository(global, (repository) =>
    restorePointInTime(repository, reference, {
      pgdata: options.pgdata!,
      target,
      timeline,
      action,
      strongbox: strongboxCommand(global),
      ...(options.start ? { start: true } : {}),
      ...(port !== undefined ? { port } : {}),
      ...(options.force ? { force: true } : {}),
      ...(options.pgBin ? { pgBin: options.pgBin } : {}),
      tablespaces,
      ...(options.archiveMode === 'off' ? { settings: { archive_mode: 'off' } } : {}),
      filter,
      onStep: (message) => output.info(message),
      onProgress: (bytes) => output.progress(`restore: ${formatBytes(bytes)} written`),
    }),
  );
  output.clearProgress();
  if (global.json) output.data(result);
  else output.line(describePhysicalRestore(result));
  if (result.amcheck?.error)
    throw new VerificationError(`pg_amcheck could not check the restored databases: ${result.amcheck.error}`);
  if (result.amcheck && result.amcheck.problems.length > 0)
    throw new VerificationError(
      `pg_amcheck found corruption in the restored databases: ${result.amcheck.problems[0]}${result.amcheck.problems.length > 1 ? ` (and ${result.amcheck.problems.length - 1} more lines)` : ''}`,
    );
}

function timelineOf(options: PhysicalRestoreCliOptions): 'latest' | 'current' | number {
  const timeline =
    options.timeline === undefined || options.timeline === 'latest' || options.timeline === 'current'
      ? (options.timeline ?? 'latest')
      : Number(options.timeline);
  if (typeof timeline === 'number' && !(Number.isInteger(timeline) && timeline > 0))
    throw new ConfigError(`--timeline ${options.timeline} is not latest, current or a timeline number`);
  return timeline;
}

/** A whole database as it was at a moment (the end of the archive without one), into --to's database. */
async function runDatabaseRecovery(
  global: GlobalOptions,
  output: Output,
  reference: string | undefined,
  options: RestoreCommandOptions,
  filter: SnapshotFilter,
): Promise<void> {
  const target = targetOf(options);
  const timeline = timelineOf(options);
  const result = await withRepository(global, (repository) =>
    showingMismatch(
      output,
      recoverDatabase(repository, reference, {
        target,
        timeline,
        database: options.database!,
        ...(options.to !== undefined ? { to: options.to } : {}),
        ...(options.password !== undefined ? { password: options.password } : {}),
        ...(options.replace ? { replace: true } : {}),
        ...(options.dropOld ? { dropOld: true } : {}),
        ...(options.owner === false ? { noOwner: true } : {}),
        confirm: (database) => (options.yes ? Promise.resolve(true) : confirmByName(database)),
        ...(options.pgBin ? { pgBin: options.pgBin } : {}),
        strongbox: strongboxCommand(global),
        filter,
        onStep: (message) => output.info(message),
      }),
    ),
  );
  if (global.json) return output.data(result);
  if (result.verification) output.info(verificationTable(result.verification));
  for (const note of result.notes) output.info(`note: ${note}`);
  output.line(
    `database ${result.sourceDatabase} as of ${result.recoveredTo}${result.lastTransaction ? ` (last transaction committed ${result.lastTransaction})` : ''} restored into ${result.target}, compared with its fingerprints after the load, in ${formatElapsed(result.durationSeconds)}${result.keptAs ? `; the old database is kept as ${result.keptAs}` : ''}`,
  );
}

/** Tables as they were at a moment, into a live database (`--table … --to`, a target and no --pgdata). */
async function runTableRecovery(
  global: GlobalOptions,
  output: Output,
  reference: string | undefined,
  options: RestoreCommandOptions,
  filter: SnapshotFilter,
): Promise<void> {
  if (!options.to || options.table.length === 0)
    throw new ConfigError('a recovery target without --pgdata recovers tables into a live database', {
      hint: 'Name them with --table and the database with --to; or give --pgdata to restore the whole cluster.',
    });
  const target = targetOf(options);
  const result = await withRepository(global, (repository) =>
    recoverTables(repository, reference, {
      target,
      tables: options.table,
      to: options.to!,
      ...(options.password !== undefined ? { password: options.password } : {}),
      ...(options.replace ? { replace: true } : {}),
      ...(options.pgBin ? { pgBin: options.pgBin } : {}),
      strongbox: strongboxCommand(global),
      filter,
      onStep: (message) => output.info(message),
    }),
  );
  if (global.json) output.data(result);
  else
    for (const table of result.tables)
      output.line(
        `${table.table} as of ${result.target}: ${count(table.rows, 'row')}, restored as ${table.restoredAs}${table.previousAs ? `; the live table is now ${table.previousAs}` : ''} (fingerprint checked after the load)`,
      );
}

/**
 * How the server runs strongbox for restore_command: this program, with the repository's location
 * when it holds no credentials. The key is never written into the server's configuration: a WAL
 * daemon, or the server's environment, gives it.
 */
export function strongboxCommand(global: GlobalOptions): string[] {
  const program = [process.execPath, realpathSync(process.argv[1]!)];
  const location = global.repo ?? process.env.STRONGBOX_REPO;
  if (location && publicLocation(location) === location) program.push('--repo', location);
  return program;
}

function describePhysicalRestore(result: PointInTimeRestoreResult): string {
  const lines = [
    `restored base backup ${result.snapshot.slice(0, 8)} of ${result.cluster} (ended ${result.backupEnd}) into ${result.pgdata}: ${count(result.files, 'file')}, ${formatBytes(result.bytes)}`,
    `recovery target: ${result.target}`,
  ];
  for (const tablespace of result.tablespaces)
    lines.push(`tablespace ${tablespace.name || tablespace.oid} in ${tablespace.location}`);
  if (result.recovery) {
    const reached = result.recovery;
    lines.push(
      `recovery ${reached.state} at ${reached.lsn ?? 'an unknown position'}${reached.lastTransaction ? `, last transaction committed ${reached.lastTransaction}` : ''}${reached.timeline ? `, timeline ${reached.timeline}` : ''}, in ${formatElapsed(reached.recoverySeconds)}`,
    );
    if (reached.state !== 'shut down')
      lines.push(`the server runs on port ${reached.port} (socket directory ${reached.socketDirectory})`);
  } else
    lines.push(
      `start the server to recover; its restore_command runs \`${result.restoreCommand}\`, which needs a WAL daemon or the repository's key in the server's environment`,
    );
  if (result.amcheck)
    lines.push(
      result.amcheck.problems.length === 0 && !result.amcheck.error
        ? `pg_amcheck: ${count(result.amcheck.databases.length, 'database')} checked, no corruption`
        : `pg_amcheck: ${result.amcheck.error ?? `${result.amcheck.problems.length} problem lines`}`,
    );
  return lines.join('\n');
}
