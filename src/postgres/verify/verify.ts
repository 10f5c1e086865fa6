import { spawn } from 'node:child_process';
import path from 'node:path';
import { SourceError, VerificationError } from '../../errors.ts';
import { stopOnInterrupt } from '../../util/interrupt.ts';
import { count } from '../../util/plural.ts';
import type { PostgresConnection } from '../connection.ts';
import { TableFingerprint, type CopyTextProblem } from '../logical/fingerprint.ts';
import {
  CATALOG_FINGERPRINT,
  copyOutStatement,
  databaseEncoding,
  displayIdentifier,
  displayTable,
  sessionLikePgDump,
} from '../queries.ts';

export { displayIdentifier, displayTable };
import { firstError, psql, toolEnvironment, withLargeStdioBuffers, type PostgresTools } from '../tools.ts';

/** What a backup recorded of one table, to compare a restore against. */
export interface RecordedTable {
  schema: string;
  name: string;
  /** pg_dump's COPY … FROM stdin statement for the table: its columns, in order. */
  copyStatement: string;
  rows: number;
  hash: string;
}

/** The catalog query's answer (queries.ts, CATALOG_FINGERPRINT). */
export interface CatalogFingerprint {
  sequences: Record<string, number | null>;
  objects: Record<string, Record<string, number>>;
  serverVersion: number;
  databaseSize: number;
}

/** Which parts of the catalog a restore is expected to bring back. */
export interface CatalogExpectations {
  sequences: boolean;
  objects: boolean;
}

/**
 * A comparison beyond table rows, sequences and object counts (schema objects, large objects,
 * database properties…), with its line in the verification table.
 */
export interface VerificationCheck {
  /** Its line in the verification table: "schema", "large objects", "database". */
  name: string;
  /** What was compared, as the table shows it: "214 objects". */
  compared: string;
  /** Each difference, one sentence naming the object and what differs: any fails the verification. */
  differences: string[];
  /** Differences expected by design, reported without failing (docs/CLI.md lists them). */
  notes: string[];
}

/** Where a check reads the database it verifies. */
export interface CheckTarget {
  /** The connection, pointed at the database verified. */
  connection: PostgresConnection;
  tools: PostgresTools;
  database: string;
}

/** One comparison of the database verified with what its backup recorded. */
export type Checker = (target: CheckTarget) => Promise<VerificationCheck>;

export interface TableComparison {
  schema: string;
  name: string;
  expectedRows: number;
  actualRows: number;
  matches: boolean;
}

export interface DatabaseVerification {
  /** Tables compared, and rows found in them. */
  tables: number;
  rows: number;
  /** Sequences and schemas whose values and object counts were compared (0: not compared). */
  sequences: number;
  schemas: number;
  /** Tables whose row count or fingerprint differs from the snapshot's. */
  mismatched: TableComparison[];
  /** Sequences whose value differs, one sentence each. */
  sequenceDifferences: string[];
  /** Object counts that differ, one sentence each. */
  objectDifferences: string[];
  /** Both of the above. */
  catalogDifferences: string[];
  /** The other comparisons made (schema objects, large objects, database properties…). */
  checks: VerificationCheck[];
}

/** A restored database that differs from its snapshot (exit 7), with what was compared. */
export class DatabaseMismatchError extends VerificationError {
  constructor(
    message: string,
    readonly database: string,
    readonly verification: DatabaseVerification,
    options: { hint: string },
  ) {
    super(message, options);
  }
}

/**
 * Compares `database` with what a backup recorded: every table's rows, and (as far as the
 * restore was meant to bring them back) sequences and object counts. Throws VerificationError
 * (exit 7) naming every difference.
 */
export async function verifyDatabase(
  connection: PostgresConnection,
  tools: PostgresTools,
  database: string,
  recorded: {
    tables: readonly RecordedTable[];
    catalog?: CatalogFingerprint | undefined;
    expect: CatalogExpectations;
    /** Further comparisons, run in order after the tables. */
    checks?: readonly Checker[];
  },
  onMismatch: { snapshot: string; hint: string },
  /** Tables compared already (as a parallel restore does while it runs); the rest are compared here. */
  compared: readonly TableComparison[] = [],
): Promise<DatabaseVerification> {
  const done = new Set(compared.map((comparison) => `${comparison.schema}.${comparison.name}`));
  const comparisons = [
    ...compared,
    ...(await compareTables(
      connection,
      tools,
      database,
      recorded.tables.filter((table) => !done.has(`${table.schema}.${table.name}`)),
    )),
  ];
  const mismatched = comparisons.filter((comparison) => !comparison.matches);
  const sequenceDifferences: string[] = [];
  const objectDifferences: string[] = [];
  let sequences = 0;
  let schemas = 0;
  // Asked of the database verified, which may not be the connection's (a restore's scratch).
  const on = { ...connection, env: { ...connection.env, PGDATABASE: database }, database };
  if (recorded.catalog && (recorded.expect.sequences || recorded.expect.objects)) {
    const actual = JSON.parse(await psql(on, tools.binDir, CATALOG_FINGERPRINT)) as CatalogFingerprint;
    if (recorded.expect.sequences) {
      sequences = Object.keys(recorded.catalog.sequences).length;
      sequenceDifferences.push(...differences('sequence', recorded.catalog.sequences, actual.sequences));
    }
    if (recorded.expect.objects) {
      schemas = Object.keys(recorded.catalog.objects).length;
      for (const schema of new Set([
        ...Object.keys(recorded.catalog.objects),
        ...Object.keys(actual.objects),
      ])) {
        objectDifferences.push(
          ...differences(
            `schema ${displayIdentifier(schema)}:`,
            recorded.catalog.objects[schema] ?? {},
            actual.objects[schema] ?? {},
          ),
        );
      }
    }
  }
  const catalogDifferences = [...sequenceDifferences, ...objectDifferences];
  const checks: VerificationCheck[] = [];
  for (const check of recorded.checks ?? []) checks.push(await check({ connection: on, tools, database }));
  const checkDifferences = checks.flatMap((check) => check.differences);
  const verification: DatabaseVerification = {
    tables: comparisons.length,
    rows: comparisons.reduce((sum, comparison) => sum + comparison.actualRows, 0),
    sequences,
    schemas,
    mismatched,
    sequenceDifferences,
    objectDifferences,
    catalogDifferences,
    checks,
  };
  if (mismatched.length > 0 || catalogDifferences.length > 0 || checkDifferences.length > 0) {
    const tables = mismatched.map((table) => `${displayTable(table)} (${differenceOf(table)})`);
    throw new DatabaseMismatchError(
      `${database} differs from snapshot ${onMismatch.snapshot.slice(0, 8)}: ${[...(tables.length ? [`${count(tables.length, 'table')}: ${tables.join(', ')}`] : []), ...catalogDifferences, ...checkDifferences].join('; ')}`,
      database,
      verification,
      { hint: onMismatch.hint },
    );
  }
  return verification;
}

/** One line of a verification's summary: what was compared, how many, and what differed. */
export interface VerificationRow {
  /** "tables", "sequences", "objects", or a further check's name. */
  what: string;
  /** "6 (12853334 rows)", "3 schemas". */
  compared: string;
  differences: string[];
  notes: string[];
}

/** The summary of a verification, a line for each thing compared: what a restore prints, and a drill's report. */
export function verificationRows(verification: DatabaseVerification): VerificationRow[] {
  const rows: VerificationRow[] = [];
  const { mismatched, sequenceDifferences, objectDifferences } = verification;
  if (verification.tables > 0 || mismatched.length > 0)
    rows.push({
      what: 'tables',
      compared: `${verification.tables} (${count(verification.rows, 'row')})`,
      differences: mismatched.map((table) => `${displayTable(table)}: ${differenceOf(table)}`),
      notes: [],
    });
  if (verification.sequences > 0 || sequenceDifferences.length > 0)
    rows.push({
      what: 'sequences',
      compared: String(verification.sequences),
      differences: sequenceDifferences,
      notes: [],
    });
  if (verification.schemas > 0 || objectDifferences.length > 0)
    rows.push({
      what: 'objects',
      compared: count(verification.schemas, 'schema'),
      differences: objectDifferences,
      notes: [],
    });
  for (const check of verification.checks)
    rows.push({
      what: check.name,
      compared: check.compared,
      differences: check.differences,
      notes: check.notes,
    });
  return rows;
}

/** "1000 rows backed up, 999 found", or "…, contents differ" when the counts agree. */
export function differenceOf(table: TableComparison): string {
  return `${table.expectedRows} rows backed up, ${table.actualRows} found${table.expectedRows === table.actualRows ? ', contents differ' : ''}`;
}

/** "sequence shop.orders_id_seq: 5000 backed up, 4999 found" for every key whose values differ. */
function differences(
  what: string,
  expected: Record<string, unknown>,
  actual: Record<string, unknown>,
): string[] {
  const found: string[] = [];
  for (const key of new Set([...Object.keys(expected), ...Object.keys(actual)])) {
    if (expected[key] !== actual[key])
      found.push(
        `${what} ${key}: ${String(expected[key] ?? 'none')} backed up, ${String(actual[key] ?? 'none')} found`,
      );
  }
  return found;
}

/**
 * Reads every recorded table back from a restored database, COPY text in a session set up as
 * pg_dump's, and fingerprints it the way the backup did (fingerprint.ts), one row at a time.
 */
export async function compareTables(
  connection: PostgresConnection,
  tools: PostgresTools,
  database: string,
  tables: readonly RecordedTable[],
): Promise<TableComparison[]> {
  if (tables.length === 0) return [];
  const compare = await tableComparer(connection, tools, database);
  const comparisons: TableComparison[] = [];
  for (const table of tables) comparisons.push(await compare(table));
  return comparisons;
}

/** Compares one table at a time with what the backup recorded; several may run at once. */
export async function tableComparer(
  connection: PostgresConnection,
  tools: PostgresTools,
  database: string,
): Promise<(table: RecordedTable) => Promise<TableComparison>> {
  const env = await copySessionEnvironment(connection, tools, database);
  return async (table) => {
    const fingerprint = await fingerprintCopy(
      env,
      tools,
      { statement: copyOutStatement(table) },
      displayTable(table),
    );
    return {
      schema: table.schema,
      name: table.name,
      expectedRows: table.rows,
      actualRows: fingerprint.rows,
      matches: fingerprint.rows === table.rows && fingerprint.digest() === table.hash,
    };
  };
}

/**
 * The environment of a psql session that reads `database`'s rows as pg_dump did: in the
 * database's encoding, and in UTC.
 */
export async function copySessionEnvironment(
  connection: PostgresConnection,
  tools: PostgresTools,
  database: string,
): Promise<Record<string, string>> {
  // Asked of the database compared: the connection's own may not exist yet (a restore verifies
  // its scratch database before giving it the target's name).
  const on = { ...connection, env: { ...connection.env, PGDATABASE: database }, database };
  const encoding = (await psql(on, tools.binDir, databaseEncoding(database))).trim();
  return { ...connection.env, PGDATABASE: database, PGTZ: 'UTC', PGCLIENTENCODING: encoding };
}

/**
 * Runs a COPY … TO STDOUT in a psql session set up as pg_dump's, after `opening` (such as the
 * import of a snapshot), and fingerprints the rows it prints. `what` names the rows in an error.
 */
export async function fingerprintCopy(
  env: Record<string, string>,
  tools: PostgresTools,
  copy: { opening?: readonly string[]; statement: string },
  what: string,
): Promise<TableFingerprint> {
  const args = ['-X', '-w', '-q', '-v', 'ON_ERROR_STOP=1'];
  for (const sql of [...(copy.opening ?? []), ...sessionLikePgDump(), copy.statement]) args.push('-c', sql);
  const command = withLargeStdioBuffers(path.join(tools.binDir, 'psql'), args);
  const child = spawn(command.command, command.args, {
    env: toolEnvironment(env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  stopOnInterrupt(child);
  let stderr = '';
  child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
  // COPY TO STDOUT through psql: rows, each ending with "\n", and no terminator line.
  const fingerprint = new TableFingerprint();
  let malformed: CopyTextProblem | undefined;
  for await (const piece of child.stdout as AsyncIterable<Buffer>) malformed ??= fingerprint.push(piece);
  const code = await new Promise<number | null>((resolve) =>
    child.exitCode !== null ? resolve(child.exitCode) : child.once('close', resolve),
  );
  if (code !== 0 || malformed || fingerprint.insideRow) {
    throw new SourceError(
      `cannot read back ${what}: ${firstError(stderr, 'psql') ?? (code !== 0 ? `psql exit ${code}` : 'its COPY output was cut short or held a NUL byte')}`,
    );
  }
  return fingerprint;
}
