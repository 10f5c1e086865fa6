import { performance } from 'node:perf_hooks';
import { ConfigError, ReplaceNotConfirmedError, TargetExistsError } from '../../errors.ts';
import type { Repository, SnapshotFilter } from '../../repository/repository.ts';
import { CHUNK_BOUNDARY, type ContentPiece } from '../../sources/source.ts';
import { resolveConnection } from '../connection.ts';
import { DATABASE_PROPERTIES } from '../database-properties.ts';
import { openDump } from '../logical/logical.ts';
import { parseServerProperties } from '../record-schema.ts';
import {
  expectedAfter,
  restoreArguments,
  restoreThroughScratch,
  type ScratchRestoreOutcome,
} from '../restore/restore-database.ts';
import { RestoreTarget } from '../restore/target.ts';
import { findTools, psql } from '../tools.ts';
import type { RecoveryTarget } from './recovery-target.ts';
import { withScratchCluster } from './scratch.ts';

export interface DatabaseRecoveryOptions {
  target: RecoveryTarget;
  timeline?: 'latest' | 'current' | number;
  /** The database to take out of the recovered cluster; else the one `to` names. */
  database?: string;
  /** postgres://…/database: the database it is restored into, as a logical restore's. */
  to?: string;
  password?: string;
  /** Swap it in for an existing database, which is kept as <name>_before_<time> (unless dropOld). */
  replace?: boolean;
  dropOld?: boolean;
  /** Asked before replacing a database; the recovery goes ahead only on true. */
  confirm?: (database: string) => Promise<boolean>;
  noOwner?: boolean;
  pgBin?: string;
  strongbox: readonly string[];
  filter?: SnapshotFilter;
  onStep?: (message: string) => void;
}

export interface DatabaseRecoveryResult extends ScratchRestoreOutcome {
  /** The base backup recovered, and the target as described. */
  snapshot: string;
  recoveredTo: string;
  /** Where recovery stopped: the last WAL position and commit time replayed. */
  lsn: string | null;
  lastTransaction: string | null;
  /** The database as it was, and where it now is. */
  sourceDatabase: string;
  target: string;
  database: string;
  recoverySeconds: number;
  durationSeconds: number;
}

/**
 * A whole database as it was at a moment, into a live server: the physical backup recovered into a
 * scratch cluster (scratch.ts, removed afterwards), the database taken out of it with strongbox's
 * logical path, pg_dump fingerprinting every table, sequence, schema object and large object in its
 * own snapshot as a backup does (logical.ts), streamed into pg_restore, then restored as a
 * logical restore is (restore-database.ts): into a scratch database, verified against those
 * fingerprints (a difference is exit 7), renamed to the target's name or, with replace, swapped in.
 */
export async function recoverDatabase(
  repository: Repository,
  reference: string | undefined,
  options: DatabaseRecoveryOptions,
): Promise<DatabaseRecoveryResult> {
  const began = performance.now();
  const step = options.onStep ?? (() => undefined);
  const connection = resolveConnection(options.to, process.env, options.password);
  const admin = { ...connection, env: { ...connection.env, PGDATABASE: 'postgres' } };
  const target = new RestoreTarget(connection, await findTools(admin, options.pgBin));
  const sourceDatabase = options.database ?? connection.database;
  // Asked before the recovery, which takes a while: refused or confirmed now, not after it.
  const exists = await target.exists(connection.database);
  if (exists && !options.replace)
    throw new TargetExistsError(connection.database, connection.display, 'replace');
  if (exists && !(await options.confirm?.(connection.database)))
    throw new ReplaceNotConfirmedError(connection.database);

  return withScratchCluster(
    repository,
    reference,
    {
      target: options.target,
      ...(options.timeline !== undefined ? { timeline: options.timeline } : {}),
      ...(options.pgBin ? { pgBin: options.pgBin } : {}),
      fallbackBinDir: target.tools.binDir,
      strongbox: options.strongbox,
      ...(options.filter ? { filter: options.filter } : {}),
      onStep: step,
    },
    async (recovered) => {
      const source = recovered.connection(sourceDatabase);
      const sourceTools = await findTools(recovered.connection('postgres'), options.pgBin);
      const present = JSON.parse(
        await psql(
          recovered.connection('postgres'),
          sourceTools.binDir,
          `select coalesce(json_agg(datname order by datname), '[]') from pg_database where datallowconn`,
        ),
      ) as string[];
      if (!present.includes(sourceDatabase))
        throw new ConfigError(`the recovered cluster holds no database ${sourceDatabase}`, {
          hint: `It holds ${present.join(', ')}: name one of them, or recover to a moment when it existed.`,
        });
      // The recovered cluster changes no more: its properties read now are those the dump sees.
      const properties = parseServerProperties(
        JSON.parse(await psql(source, sourceTools.binDir, DATABASE_PROPERTIES)),
        sourceDatabase,
      );
      const outcome = await restoreThroughScratch({
        target,
        replace: Boolean(options.replace),
        dropOld: Boolean(options.dropOld),
        noOwner: Boolean(options.noOwner),
        // Confirmed above, before the recovery.
        confirm: () => Promise.resolve(true),
        properties,
        source: recovered.snapshot,
        describeLoad: (scratch) =>
          `pg_dump ${sourceDatabase} of the scratch cluster, fingerprinted as it streams, into ${scratch} with pg_restore, then give it the owner, privileges and settings it had`,
        comparedWith: 'the fingerprints taken in the scratch cluster',
        load: async (scratch) => {
          const dump = await openDump(source, sourceTools, {});
          let dumpFailure: unknown;
          dump.producer.finished.catch((error: unknown) => (dumpFailure = error));
          try {
            await target.restore(scratch, bytesOf(dump.producer.content), restoreArguments(options));
          } catch (error) {
            // pg_dump's own failure says more than pg_restore's at an archive cut short.
            await new Promise((resolve) => setImmediate(resolve));
            if (dumpFailure) throw dumpFailure;
            dump.producer.stop();
            await dump.producer.finished.catch(() => undefined);
            throw error;
          }
          await dump.producer.finished;
          return { expected: expectedAfter(dump.details(), options), compared: [] };
        },
        onStep: step,
      });
      return {
        snapshot: recovered.snapshot,
        recoveredTo: recovered.target,
        lsn: recovered.reached.lsn,
        lastTransaction: recovered.reached.lastTransaction,
        sourceDatabase,
        target: connection.display,
        database: connection.database,
        ...outcome,
        recoverySeconds: recovered.reached.recoverySeconds,
        durationSeconds: (performance.now() - began) / 1000,
      };
    },
  );
}

/** The archive's bytes, without the chunk boundaries the dump's follower marks for a backup. */
async function* bytesOf(content: AsyncIterable<ContentPiece>): AsyncGenerator<Uint8Array> {
  for await (const piece of content) if (piece !== CHUNK_BOUNDARY) yield piece;
}
