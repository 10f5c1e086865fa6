import {
  ConfigError,
  ConflictingOptionsError,
  ReplaceNotConfirmedError,
  SourceError,
  TargetExistsError,
} from '../../errors.ts';
import type { Repository, SnapshotFilter } from '../../repository/repository.ts';
import { resolveConnection } from '../connection.ts';
import { RestoreTarget } from './target.ts';
import { checksFor } from '../verify/checks.ts';
import {
  applyDatabaseProperties,
  creationFor,
  type DatabaseCreation,
  type DatabaseProperties,
} from '../database-properties.ts';
import { findTools } from '../tools.ts';
import type { PostgresSnapshotDetails } from '../logical/logical.ts';
import {
  verifyDatabase,
  type TableComparison,
  type CatalogExpectations,
  type DatabaseVerification,
} from '../verify/verify.ts';
import { keptName, markText, MAX_NAME_BYTES, restoreStamp, scratchName } from './restore-names.ts';
import { onInterrupt } from '../../util/interrupt.ts';
import { archiveSize, findDatabaseSnapshot } from '../database-snapshot.ts';
import { clearLeftoversOf } from './cleanup.ts';
import { restoreArchive } from './restore-parallel.ts';

export interface PostgresRestoreOptions {
  /** postgres://…/database to restore into; else the PG* and DB_* environment variables. */
  to?: string;
  /** The database password, given to the PostgreSQL programs as PGPASSWORD, never as an argument. */
  password?: string;
  pgBin?: string;
  /** Replace an existing database: restore beside it, then swap names, keeping the old one. */
  replace?: boolean;
  /** With replace: drop the old database after the swap instead of keeping it. */
  dropOld?: boolean;
  /** Asked before replacing a database; the restore goes ahead only on true. */
  confirm?: (database: string) => Promise<boolean>;
  singleTransaction?: boolean;
  /** pg_restore runs at once (restore-parallel.ts); 1 restores in one run. */
  jobs?: number;
  tables?: string[];
  schemaOnly?: boolean;
  dataOnly?: boolean;
  noOwner?: boolean;
  /** Work out and return the plan, change nothing. */
  dryRun?: boolean;
  filter?: SnapshotFilter;
  onStep?: (message: string) => void;
  /** Called as the archive is handed to pg_restore: bytes so far, and the archive's size. */
  onProgress?: (bytes: number, archiveBytes: number) => void;
  /** Called once the archive is restored, as the comparison with the backup begins (a drill times both). */
  onVerifying?: () => void;
}

export interface PostgresRestorePlan {
  snapshot: string;
  snapshotTime: string;
  sourceDatabase: string;
  target: string;
  database: string;
  replace: boolean;
  /** Bytes of the archive to restore. */
  archiveBytes: number;
  steps: string[];
  /** What of the database's own properties could not be reproduced here (a missing role…). */
  notes: string[];
}

export interface PostgresRestoreResult extends PostgresRestorePlan {
  dryRun: boolean;
  verification?: DatabaseVerification;
  /** With replace: what the old database is called now (unless dropped). */
  keptAs?: string;
  durationMs: number;
}

/**
 * Restores a PostgreSQL snapshot into a database, always through a scratch database loaded and
 * verified under a name of its own: into a new database, the scratch is then renamed to it; over
 * an existing one (replace), the names are swapped in one transaction. Any failure, or a kill at
 * any moment, leaves the target as it was (absent, or the original) and at most a scratch
 * database that the next restore of the same target removes.
 */
export async function restorePostgres(
  repository: Repository,
  reference: string,
  options: PostgresRestoreOptions = {},
): Promise<PostgresRestoreResult> {
  const started = Date.now();
  const step = options.onStep ?? (() => undefined);
  if (options.schemaOnly && options.dataOnly)
    throw new ConflictingOptionsError('a restore cannot be both schema-only and data-only', [
      'schemaOnly',
      'dataOnly',
    ]);
  const jobs = options.jobs ?? 1;
  if (!Number.isInteger(jobs) || jobs < 1)
    throw new ConfigError(`the number of jobs must be a positive whole number, not ${jobs}`);
  if (jobs > 1 && options.singleTransaction) {
    throw new ConflictingOptionsError('a restore in a single transaction cannot run in parallel jobs', [
      'jobs',
      'singleTransaction',
    ]);
  }
  return repository.withReadLock('restore postgres', async () => {
    const connection = resolveConnection(options.to, process.env, options.password);
    const found = await findDatabaseSnapshot(repository, reference, options.filter, connection.database);
    const { snapshot, details: recorded } = found;
    const target = new RestoreTarget(
      connection,
      await findTools({ ...connection, env: { ...connection.env, PGDATABASE: 'postgres' } }, options.pgBin),
    );
    // A parallel restore needs to know where each table's data lies in the archive (backups
    // record it), and restores whole databases only: pg_restore --table selects too little for it.
    const parallel = jobs > 1 && recorded?.blocks !== undefined && !options.tables?.length;
    const archiveBytes = await archiveSize(repository, found);
    const expected = expectedAfter(recorded, options);
    const outcome = await restoreThroughScratch({
      target,
      replace: Boolean(options.replace),
      dropOld: Boolean(options.dropOld),
      dryRun: Boolean(options.dryRun),
      noOwner: Boolean(options.noOwner),
      ...(options.confirm ? { confirm: options.confirm } : {}),
      properties: recorded?.databaseProperties,
      source: snapshot.id,
      describeLoad: (scratch) =>
        `restore snapshot ${snapshot.id.slice(0, 8)} (${found.database}, ${snapshot.header.time}) into ${scratch} with pg_restore${parallel ? `, ${jobs} at a time` : ''}${recorded?.databaseProperties ? ', then give it the owner, privileges and settings backed up' : ''}`,
      prepare: () => repository.loadIndex(),
      load: async (scratch) => ({
        expected,
        compared: await restoreArchive({
          repository,
          tree: found.tree,
          path: found.path,
          target,
          database: scratch,
          args: restoreArguments(options),
          jobs: parallel ? jobs : 1,
          blocks: recorded?.blocks,
          schemaOnly: options.schemaOnly,
          dataOnly: options.dataOnly,
          tables: expected.tables,
          onStep: step,
          onProgress: options.onProgress,
        }),
      }),
      onStep: step,
      ...(options.onVerifying ? { onVerifying: options.onVerifying } : {}),
    });
    return {
      snapshot: snapshot.id,
      snapshotTime: snapshot.header.time,
      sourceDatabase: found.database,
      target: connection.display,
      database: connection.database,
      archiveBytes,
      ...outcome,
      durationMs: Date.now() - started,
    };
  });
}

/** What expectedAfter says a restored database must hold. */
export type ExpectedDatabase = ReturnType<typeof expectedAfter>;

export interface ScratchRestore {
  /** The server, and (its connection's database) the database to restore into. */
  target: RestoreTarget;
  /** Swap the restored database in for an existing one, keeping the old one (or dropping it: dropOld). */
  replace?: boolean;
  dropOld?: boolean;
  /** Asked before replacing a database; the restore goes ahead only on true. */
  confirm?: (database: string) => Promise<boolean>;
  /** Work out the plan, change nothing. */
  dryRun?: boolean;
  noOwner?: boolean;
  /** The database's own properties, as recorded: created as they say, and given them after the load. */
  properties: DatabaseProperties | undefined;
  /** What the restored database is compared with, as a mismatch names it (a snapshot's id). */
  source: string;
  /** The step that loads the scratch database, as reported. */
  describeLoad: (scratch: string) => string;
  /** What the restored database is compared with, as the step reports it: else the backup's record. */
  comparedWith?: string;
  /** Run once the plan is made and confirmed, before anything is created. */
  prepare?: () => Promise<unknown>;
  /** Loads the scratch database: returns what it must then hold, and the tables compared already. */
  load: (scratch: string) => Promise<{ expected: ExpectedDatabase; compared: TableComparison[] }>;
  onStep?: (message: string) => void;
  onVerifying?: () => void;
}

export interface ScratchRestoreOutcome {
  replace: boolean;
  steps: string[];
  notes: string[];
  dryRun: boolean;
  verification?: DatabaseVerification;
  keptAs?: string;
}

/**
 * The one path every restore of a database takes, whatever fills it (an archive from the
 * repository, or pg_dump of a recovered cluster): a scratch database created as the recorded one
 * was, loaded, given the recorded properties, verified, then renamed to the target's name, or
 * swapped in for an existing target in one transaction. Any failure, or a kill at any moment,
 * leaves the target as it was (absent, or the original) and at most a scratch database that the
 * next restore of the same target removes.
 */
export async function restoreThroughScratch(restore: ScratchRestore): Promise<ScratchRestoreOutcome> {
  const { target } = restore;
  const { connection } = target;
  const step = restore.onStep ?? (() => undefined);
  const database = connection.database;
  if (Buffer.byteLength(database) > MAX_NAME_BYTES) {
    throw new ConfigError(`database name ${database} is longer than PostgreSQL's ${MAX_NAME_BYTES} bytes`);
  }
  const exists = await target.exists(database);
  if (exists && !restore.replace) throw new TargetExistsError(database, connection.display, 'replace');
  const replace = exists && Boolean(restore.replace);
  const stamp = restoreStamp(new Date());
  // The first choices: a name already taken is skipped for the next (restore-names.ts). A new
  // database is loaded under a scratch name too, and renamed only once verified.
  let scratch = scratchName(database, stamp);
  let keptAs = keptName(database, stamp);
  // Created as the backed-up database was, from template0 with its encoding and locale.
  const creation = await creationFor(target, restore.properties, database);
  const notes = creation.notes;
  const steps = () => [
    `create database ${scratch}`,
    restore.describeLoad(scratch),
    `compare the restored database with ${restore.comparedWith ?? 'what the backup recorded'}`,
    ...(replace
      ? [
          `end sessions on ${database}, and in one transaction rename it to ${keptAs} and ${scratch} to ${database}`,
          ...(restore.dropOld ? [`drop ${keptAs}`] : []),
        ]
      : [`rename ${scratch} to ${database}`]),
  ];
  if (restore.dryRun) return { replace, steps: steps(), notes, dryRun: true };
  if (replace && !(await restore.confirm?.(database))) throw new ReplaceNotConfirmedError(database);
  await restore.prepare?.();
  await clearLeftoversOf(target, database, step);
  const release = await createScratch(target, database, stamp, (name) => (scratch = name), creation.creation);
  // On SIGINT/SIGTERM the half-loaded database goes; after a SIGKILL the next restore of the
  // same target, or `restore --cleanup`, finds and removes it (leftovers.ts).
  const forget = onInterrupt(async () => {
    await release();
    await target.drop(scratch, true);
  });
  const abandon = async () => {
    forget();
    await release();
    await target.drop(scratch, true).catch(() => undefined);
  };
  step(steps()[0]!);
  let loaded: Awaited<ReturnType<ScratchRestore['load']>>;
  try {
    step(steps()[1]!);
    loaded = await restore.load(scratch);
    notes.push(
      ...(await applyDatabaseProperties(target, scratch, restore.properties, {
        owners: !restore.noOwner,
        comment: false,
        label: database,
      })),
    );
  } catch (error) {
    await abandon();
    throw error;
  }
  step(steps()[2]!);
  restore.onVerifying?.();
  // The scratch database's mark gives way to the recorded comment as it takes its name.
  const comment = restore.properties?.comment ?? null;
  let verification: DatabaseVerification;
  try {
    verification = await verifyDatabase(
      connection,
      target.tools,
      scratch,
      loaded.expected,
      {
        snapshot: restore.source,
        // Over an existing database nothing is swapped; a new one is left for inspection.
        hint: replace
          ? `${database} was left as it was.`
          : `${database} was not created; the restored copy was left as ${scratch} for inspection, and the next restore into ${database} (or \`restore --cleanup\`) removes it.`,
      },
      loaded.compared,
    );
  } catch (error) {
    if (replace) await abandon();
    else {
      forget();
      await release();
    }
    throw error;
  }
  if (!replace) {
    step(steps()[3]!);
    try {
      if (!(await target.moveIntoPlace({ scratch, target: database, comment })))
        throw new TargetExistsError(database, connection.display, 'replace', {
          createdDuringRestore: true,
        });
    } catch (error) {
      await abandon();
      throw error;
    }
    forget();
    await release();
    return { replace, steps: steps(), notes, dryRun: false, verification };
  }
  try {
    keptAs = await swapIn(
      target,
      { database, scratch, stamp, dropOld: Boolean(restore.dropOld), comment },
      (name) => {
        keptAs = name;
        step(steps()[3]!);
      },
    );
  } catch (error) {
    await abandon();
    throw error;
  }
  forget();
  await release();
  if (restore.dropOld) {
    step(steps()[4]!);
    await target.drop(keptAs, true);
  }
  return {
    replace,
    steps: steps(),
    notes,
    dryRun: false,
    verification,
    ...(restore.dropOld ? {} : { keptAs }),
  };
}

/** Tries for a free name before giving up: each taken name is one more try. */
const NAME_ATTEMPTS = 100;

/**
 * Creates the scratch database a replace loads into, under the first free name, holding that
 * name (RestoreTarget.claim) so that cleanups leave it alone, and marked with its target;
 * `as` the backed-up database was, when its backup recorded how. Returns the release of the claim.
 */
async function createScratch(
  target: RestoreTarget,
  database: string,
  stamp: string,
  named: (name: string) => void,
  as: DatabaseCreation | undefined,
): Promise<() => Promise<void>> {
  for (let attempt = 0; attempt < NAME_ATTEMPTS; attempt++) {
    const name = scratchName(database, stamp, attempt);
    const release = await target.claim(name);
    if (!release) continue;
    try {
      if (await target.createIfFree(name, as)) {
        named(name);
        // Killed before this mark, the scratch is still known by its name, and holds nothing.
        await target.comment(name, markText({ kind: 'scratch', target: database }));
        return release;
      }
    } catch (error) {
      await release();
      throw error;
    }
    await release();
  }
  throw new SourceError(
    `no free name for a scratch database beside ${database} after ${NAME_ATTEMPTS} tries`,
  );
}

/**
 * Swaps the scratch database in for `database` (RestoreTarget.swap: one transaction), the old
 * one renamed to the first free <database>_before_<stamp>; `naming` hears each name tried.
 * Returns the name the old database has now.
 */
async function swapIn(
  target: RestoreTarget,
  swap: { database: string; scratch: string; stamp: string; dropOld: boolean; comment: string | null },
  naming: (keptAs: string) => void,
): Promise<string> {
  for (let attempt = 0; attempt < NAME_ATTEMPTS; attempt++) {
    const keptAs = keptName(swap.database, swap.stamp, attempt);
    if (await target.exists(keptAs)) continue;
    naming(keptAs);
    const swapped = await target.swap({
      target: swap.database,
      scratch: swap.scratch,
      keptAs,
      comment: swap.comment,
      ...(swap.dropOld ? { keptMark: markText({ kind: 'replaced', target: swap.database }) } : {}),
    });
    if (swapped) return keptAs;
  }
  throw new SourceError(`no free name to keep ${swap.database} under after ${NAME_ATTEMPTS} tries`, {
    hint: `${swap.database} was left as it was.`,
  });
}

/**
 * What a restore with these options brings back of what the backup recorded: every table's rows
 * (or only the --table ones), sequences unless only the schema came back, object counts unless
 * only data or some tables did.
 */
export function expectedAfter(
  recorded: PostgresSnapshotDetails | undefined,
  options: Pick<PostgresRestoreOptions, 'tables' | 'schemaOnly' | 'dataOnly' | 'noOwner'>,
) {
  const subset = Boolean(options.tables?.length);
  const wanted = new Set(options.tables ?? []);
  const tables = options.schemaOnly
    ? []
    : (recorded?.tables ?? []).filter(
        (table) => !subset || wanted.has(table.name) || wanted.has(`${table.schema}.${table.name}`),
      );
  return {
    tables,
    catalog: recorded?.catalog,
    expect: {
      sequences: !options.schemaOnly && !subset,
      objects: !options.dataOnly && !subset,
    } satisfies CatalogExpectations,
    checks: checksFor(recorded, {
      schema: !options.dataOnly && !subset,
      largeObjects: !options.schemaOnly && !subset,
      database: true,
      owners: !options.noOwner,
      materializedViewRows: !options.schemaOnly,
    }),
  };
}

export function restoreArguments(
  options: Pick<
    PostgresRestoreOptions,
    'singleTransaction' | 'schemaOnly' | 'dataOnly' | 'noOwner' | 'tables'
  >,
): string[] {
  const args: string[] = [];
  if (options.singleTransaction) args.push('--single-transaction');
  if (options.schemaOnly) args.push('--schema-only');
  if (options.dataOnly) args.push('--data-only');
  if (options.noOwner) args.push('--no-owner');
  for (const table of options.tables ?? []) args.push(`--table=${table}`);
  return args;
}
