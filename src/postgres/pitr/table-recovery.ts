import { spawn } from 'node:child_process';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { ConfigError, SourceError, VerificationError } from '../../errors.ts';
import type { Repository, SnapshotFilter } from '../../repository/repository.ts';
import { resolveConnection, type PostgresConnection } from '../connection.ts';
import { findTools, firstError, psql, toolEnvironment, type PostgresTools } from '../tools.ts';
import { copySessionEnvironment, fingerprintCopy } from '../verify/verify.ts';
import type { RecoveryTarget } from './recovery-target.ts';
import { targetStamp, withScratchCluster } from './scratch.ts';

export interface TableRecoveryOptions {
  target: RecoveryTarget;
  timeline?: 'latest' | 'current' | number;
  /** schema.table (public when no schema is given), as they were at the target. */
  tables: readonly string[];
  /** postgres://…/database: the live database they are loaded into. */
  to: string;
  password?: string;
  /** Swap each recovered table in for the live one, which moves to a schema of its own. */
  replace?: boolean;
  pgBin?: string;
  strongbox: readonly string[];
  filter?: SnapshotFilter;
  onStep?: (message: string) => void;
}

export interface RecoveredTable {
  /** As named: schema.table. */
  table: string;
  /** Where its rows as of the target now are in the live database. */
  restoredAs: string;
  /** With replace: where the live table was moved. */
  previousAs?: string;
  rows: number;
  hash: string;
}

export interface TableRecoveryResult {
  snapshot: string;
  target: string;
  database: string;
  schema: string;
  tables: RecoveredTable[];
  recoverySeconds: number;
  durationSeconds: number;
}

/**
 * Tables as they were at a moment, into a live database: the physical backup recovered into a
 * scratch cluster on a free local port (archiving off, removed afterwards), each table moved there
 * into a schema named for the moment, fingerprinted as a backup fingerprints tables, dumped and
 * loaded into the live database with pg_dump and pg_restore, and fingerprinted again there: a
 * difference is exit 7. With `replace`, each live table is then moved into a schema of its own
 * and the recovered one put in its place, in one transaction.
 */
export async function recoverTables(
  repository: Repository,
  reference: string | undefined,
  options: TableRecoveryOptions,
): Promise<TableRecoveryResult> {
  const began = performance.now();
  const step = options.onStep ?? (() => undefined);
  const live = resolveConnection(options.to, process.env, options.password);
  const tools = await findTools(live, options.pgBin);
  const tables = options.tables.map(qualifiedName);
  const stamp = targetStamp(options.target);
  const schema = `recovered_${stamp}`.slice(0, 63);
  if (
    (
      await psql(live, tools.binDir, `select count(*) from pg_namespace where nspname = ${literal(schema)}`)
    ).trim() !== '0'
  )
    throw new ConfigError(`${live.display} already has a schema ${schema}`, {
      hint: 'Drop or rename it, or recover to another moment.',
    });

  return withScratchCluster(
    repository,
    reference,
    {
      target: options.target,
      ...(options.timeline !== undefined ? { timeline: options.timeline } : {}),
      ...(options.pgBin ? { pgBin: options.pgBin } : {}),
      fallbackBinDir: tools.binDir,
      strongbox: options.strongbox,
      ...(options.filter ? { filter: options.filter } : {}),
      onStep: step,
    },
    async (recovered) => {
      const scratchDb = recovered.connection(live.database);
      step(`move ${tables.map(displayName).join(', ')} into schema ${schema} in the scratch cluster`);
      const moves = tables.map(
        (table) => `alter table ${ident(table.schema)}.${ident(table.name)} set schema ${ident(schema)}`,
      );
      await psql(
        scratchDb,
        tools.binDir,
        `begin; create schema ${ident(schema)}; ${moves.join('; ')}; commit`,
      ).catch((error: unknown) => {
        throw new ConfigError(
          `the tables cannot be taken out of the recovered ${live.database}: ${(error as Error).message}`,
          {
            hint: 'Name tables that existed at the target, as schema.table.',
          },
        );
      });
      const fingerprints = new Map<string, { rows: number; hash: string }>();
      const scratchEnv = await copySessionEnvironment(scratchDb, tools, live.database);
      for (const table of tables) {
        const fingerprint = await fingerprintCopy(
          scratchEnv,
          tools,
          { statement: `copy ${ident(schema)}.${ident(table.name)} to stdout` },
          displayName(table),
        );
        fingerprints.set(table.name, { rows: fingerprint.rows, hash: fingerprint.digest() });
      }

      step(`load ${tables.length === 1 ? 'it' : 'them'} into ${live.display}, schema ${schema}`);
      await psql(live, tools.binDir, `create schema ${ident(schema)}`);
      await dumpInto(tools, scratchDb, live, [...tables.map((table) => `${schema}.${table.name}`)]);

      const liveEnv = await copySessionEnvironment(live, tools, live.database);
      const result: RecoveredTable[] = [];
      for (const table of tables) {
        const expected = fingerprints.get(table.name)!;
        const found = await fingerprintCopy(
          liveEnv,
          tools,
          { statement: `copy ${ident(schema)}.${ident(table.name)} to stdout` },
          `${schema}.${table.name}`,
        );
        if (found.rows !== expected.rows || found.digest() !== expected.hash)
          throw new VerificationError(
            `${schema}.${table.name} in ${live.display} holds ${found.rows} rows, not the ${expected.rows} recovered, or other rows: it is left there for inspection`,
          );
        result.push({ table: displayName(table), restoredAs: `${schema}.${table.name}`, ...expected });
      }

      if (options.replace) {
        const previous = `replaced_${stamp}`.slice(0, 63);
        step(`swap the recovered tables in; the live ones move to schema ${previous}`);
        const swaps = tables.flatMap((table) => [
          `alter table ${ident(table.schema)}.${ident(table.name)} set schema ${ident(previous)}`,
          `alter table ${ident(schema)}.${ident(table.name)} set schema ${ident(table.schema)}`,
        ]);
        await psql(
          live,
          tools.binDir,
          `begin; create schema ${ident(previous)}; ${swaps.join('; ')}; drop schema ${ident(schema)}; commit`,
        );
        for (const [index, table] of tables.entries()) {
          result[index]!.restoredAs = displayName(table);
          result[index]!.previousAs = `${previous}.${table.name}`;
        }
      }
      return {
        snapshot: recovered.snapshot,
        target: recovered.target,
        database: live.database,
        schema: options.replace ? (result[0]?.restoredAs.split('.')[0] ?? schema) : schema,
        tables: result,
        recoverySeconds: recovered.reached.recoverySeconds,
        durationSeconds: (performance.now() - began) / 1000,
      };
    },
  );
}

/** pg_dump of the tables from the scratch cluster, straight into pg_restore on the live database. */
async function dumpInto(
  tools: PostgresTools,
  from: PostgresConnection,
  to: PostgresConnection,
  tables: string[],
): Promise<void> {
  const dump = spawn(
    path.join(tools.binDir, 'pg_dump'),
    ['-w', '-Fc', '-Z0', ...tables.flatMap((table) => ['-t', table])],
    { env: toolEnvironment(from.env), stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const restore = spawn(path.join(tools.binDir, 'pg_restore'), ['-w', '--exit-on-error', '-d', to.database], {
    env: toolEnvironment(to.env),
    stdio: ['pipe', 'ignore', 'pipe'],
  });
  dump.stdout.pipe(restore.stdin);
  let dumpErrors = '';
  let restoreErrors = '';
  dump.stderr.on('data', (data: Buffer) => (dumpErrors += data.toString()));
  restore.stderr.on('data', (data: Buffer) => (restoreErrors += data.toString()));
  restore.stdin.on('error', () => undefined);
  const exit = (child: ReturnType<typeof spawn>) =>
    new Promise<number | null>((resolve) =>
      child.exitCode !== null ? resolve(child.exitCode) : child.once('close', resolve),
    );
  const [dumped, restored] = await Promise.all([exit(dump), exit(restore)]);
  if (dumped !== 0)
    throw new SourceError(
      `pg_dump of the recovered tables failed: ${firstError(dumpErrors, 'pg_dump') ?? `exit ${dumped}`}`,
    );
  if (restored !== 0)
    throw new SourceError(
      `pg_restore of the recovered tables into ${to.display} failed: ${firstError(restoreErrors, 'pg_restore') ?? `exit ${restored}`}`,
      { hint: 'Objects they depend on (roles, types, referenced tables) must exist in the live database.' },
    );
}

interface QualifiedName {
  schema: string;
  name: string;
}

/** schema.table, or table in public; quoted parts ("My Table") kept as typed. */
function qualifiedName(text: string): QualifiedName {
  const match = /^(?:("(?:[^"]|"")+"|[^."]+)\.)?("(?:[^"]|"")+"|[^."]+)$/.exec(text);
  if (!match)
    throw new ConfigError(`${JSON.stringify(text)} is not a table name`, { hint: 'Give schema.table.' });
  const part = (value: string) => (value.startsWith('"') ? value.slice(1, -1).replaceAll('""', '"') : value);
  return { schema: match[1] ? part(match[1]) : 'public', name: part(match[2]!) };
}

const displayName = (table: QualifiedName) => `${table.schema}.${table.name}`;
const ident = (name: string) => `"${name.replaceAll('"', '""')}"`;
const literal = (text: string) => `'${text.replaceAll("'", "''")}'`;
