import { execFile, type ExecFileException } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { z } from 'zod';
import { MissingDependencyError } from '../../errors.ts';
import { stopOnInterrupt } from '../../util/interrupt.ts';
import { count } from '../../util/plural.ts';
import { printable } from '../../util/printable.ts';
import { withDatabase, type PostgresConnection } from '../connection.ts';
import { CATALOG_FINGERPRINT, displayIdentifier, displayTable, quoteIdentifier } from '../queries.ts';
import { firstError, psql, toolEnvironment, type PostgresTools } from '../tools.ts';
import type { CatalogFingerprint } from './verify.ts';

/**
 * What a restore drill checks in the database it restored, beyond the verification against the
 * backup's fingerprints: foreign keys, object counts, and the SQL checks of the configuration
 * file. Every statement runs in a read-only session; the SQL strongbox builds here quotes every
 * identifier, and takes names only from the restored database's catalog, never from a snapshot.
 */

/** One check's outcome, as a drill reports it. */
export interface DrillCheckResult {
  name: string;
  /** warning: nothing failed, but something is worth a look (a NOT VALID foreign key). */
  status: 'passed' | 'failed' | 'warning';
  /** One line: "12 foreign keys, all valid", "1 (expected 1)". */
  summary: string;
  /** Each problem that fails the drill, one sentence naming the object (the check's name aside). */
  failures: string[];
  /** What is reported without failing it. */
  notes: string[];
}

/** How many objects of one kind the restored database holds, and the backup recorded. */
export interface ObjectCount {
  kind: string;
  /** null when the backup recorded no counts (a snapshot from before they were recorded). */
  backedUp: number | null;
  found: number;
}

/** An SQL check of the configuration file (config-file.ts, DrillSqlCheck). */
export interface SqlCheck {
  name: string;
  query: string;
  expected: string | null;
  timeoutSeconds: number;
}

export interface DrillCheckOptions {
  /** The catalog fingerprint the backup recorded (object counts per schema), if it did. */
  recorded: CatalogFingerprint | undefined;
  sqlChecks: readonly SqlCheck[];
  /** Count, for every foreign key, the rows that reference no row. */
  orphans: boolean;
}

export interface PostgresDrillChecks {
  checks: DrillCheckResult[];
  objects: ObjectCount[];
}

/** Runs every check in `database`, in order: foreign keys, object counts, then the SQL checks. */
export async function runDrillChecks(
  connection: PostgresConnection,
  tools: PostgresTools,
  database: string,
  options: DrillCheckOptions,
): Promise<PostgresDrillChecks> {
  const on = readOnly(withDatabase(connection, database));
  const checks = [await foreignKeyCheck(on, tools, options.orphans)];
  const objects = await objectCounts(on, tools, options.recorded);
  checks.push(objectCheck(objects));
  for (const check of options.sqlChecks) checks.push(await sqlCheck(on, tools, check));
  return { checks, objects };
}

/** The session settings every drill check runs under: nothing it runs can write. */
function readOnly(connection: PostgresConnection): PostgresConnection {
  const options = [connection.env.PGOPTIONS, '-c default_transaction_read_only=on'].filter(Boolean);
  return { ...connection, env: { ...connection.env, PGOPTIONS: options.join(' ') } };
}

const name = z.string().max(256);

/** A foreign key as FOREIGN_KEYS describes it. */
const foreignKeySchema = z.strictObject({
  name,
  schema: name,
  table: name,
  /** r: a table; p: a partitioned table, whose partitions the query reads too. */
  tableKind: z.enum(['r', 'p']),
  columns: z.array(name).min(1).max(32),
  refSchema: name,
  refTable: name,
  refKind: z.enum(['r', 'p']),
  refColumns: z.array(name).min(1).max(32),
  valid: z.boolean(),
  /** f: MATCH FULL; s: MATCH SIMPLE (p, MATCH PARTIAL, is not implemented by PostgreSQL). */
  match: z.enum(['f', 's', 'p']),
});

type ForeignKey = z.output<typeof foreignKeySchema>;

/**
 * Every foreign key, once: a key on a partitioned table is listed on it, not again on each
 * partition (conparentid). Columns in the key's order, with the referenced ones in theirs.
 */
const FOREIGN_KEYS = `select coalesce(json_agg(json_build_object(
    'name', k.conname, 'schema', n.nspname, 'table', c.relname, 'tableKind', c.relkind,
    'columns', (select json_agg(a.attname order by u.ord) from unnest(k.conkey) with ordinality u(attnum, ord)
      join pg_attribute a on a.attrelid = k.conrelid and a.attnum = u.attnum),
    'refSchema', rn.nspname, 'refTable', rc.relname, 'refKind', rc.relkind,
    'refColumns', (select json_agg(a.attname order by u.ord) from unnest(k.confkey) with ordinality u(attnum, ord)
      join pg_attribute a on a.attrelid = k.confrelid and a.attnum = u.attnum),
    'valid', k.convalidated, 'match', k.confmatchtype
  ) order by n.nspname, c.relname, k.conname), '[]')
  from pg_constraint k
  join pg_class c on c.oid = k.conrelid join pg_namespace n on n.oid = c.relnamespace
  join pg_class rc on rc.oid = k.confrelid join pg_namespace rn on rn.oid = rc.relnamespace
  where k.contype = 'f' and k.conparentid = 0`;

/**
 * The rows of a foreign key's table that reference no row of its referenced table, counted. A
 * row with a NULL in the key references nothing and needs nothing (MATCH SIMPLE), unless the key
 * is MATCH FULL, where only a key all NULL is exempt. A plain table is read without its
 * inheritance children (ONLY), which a foreign key does not cover either.
 */
function orphanCount(key: ForeignKey): string {
  const relation = (schema: string, table: string, kind: string) =>
    `${kind === 'r' ? 'only ' : ''}${quoteIdentifier(schema)}.${quoteIdentifier(table)}`;
  const column = (alias: string, name: string) => `${alias}.${quoteIdentifier(name)}`;
  const matches = key.columns
    .map((name, i) => `${column('p', key.refColumns[i]!)} = ${column('c', name)}`)
    .join(' and ');
  const referenced = `exists (select 1 from ${relation(key.refSchema, key.refTable, key.refKind)} p where ${matches})`;
  const isNull = key.columns.map((name) => `${column('c', name)} is null`);
  const orphan =
    key.match === 'f'
      ? `not (${isNull.join(' and ')}) and (${[...isNull, `not ${referenced}`].join(' or ')})`
      : `${key.columns.map((name) => `${column('c', name)} is not null`).join(' and ')} and not ${referenced}`;
  return `select count(*) from ${relation(key.schema, key.table, key.tableKind)} c where ${orphan}`;
}

/**
 * Foreign keys: each NOT VALID one (added without checking the rows there were, as the database
 * backed up had it: pg_dump keeps it so) is noted; with `orphans`, every key's rows that reference
 * nothing are counted, which fails the drill for a valid key and is noted for a NOT VALID one.
 */
async function foreignKeyCheck(
  on: PostgresConnection,
  tools: PostgresTools,
  orphans: boolean,
): Promise<DrillCheckResult> {
  const keys = z
    .array(foreignKeySchema)
    .max(1_000_000)
    .parse(JSON.parse(await psql(on, tools.binDir, FOREIGN_KEYS)));
  const failures: string[] = [];
  const notes: string[] = [];
  for (const key of keys) {
    const table = displayTable({ schema: key.schema, name: key.table });
    const named = `${table}.${displayIdentifier(key.name)}`;
    const orphaned = orphans ? Number((await psql(on, tools.binDir, orphanCount(key))).trim()) : 0;
    const rows = `${count(orphaned, 'row')} of ${table} ${orphaned === 1 ? 'references' : 'reference'} no row of ${displayTable({ schema: key.refSchema, name: key.refTable })}`;
    if (!key.valid) notes.push(`${named} is NOT VALID${orphaned > 0 ? `: ${rows}` : ''}`);
    else if (orphaned > 0) failures.push(`${named}: ${rows}, although the key is valid`);
  }
  const notValid = keys.filter((key) => !key.valid).length;
  return {
    name: 'foreign keys',
    status: failures.length > 0 ? 'failed' : notValid > 0 ? 'warning' : 'passed',
    summary:
      keys.length === 0
        ? 'none'
        : `${count(keys.length, 'foreign key')}, ${notValid === 0 ? 'all valid' : `${notValid} NOT VALID`}${orphans ? `, ${failures.length === 0 ? 'no' : 'some'} rows referencing nothing in valid ones` : ''}`,
    failures,
    notes,
  };
}

/** The kinds of objects the catalog fingerprint counts per schema, and how a report names them. */
const OBJECT_KINDS = [
  ['tables', 'table', 'tables'],
  ['indexes', 'index', 'indexes'],
  ['constraints', 'constraint', 'constraints'],
  ['triggers', 'trigger', 'triggers'],
  ['sequences', 'sequence', 'sequences'],
  ['views', 'view', 'views'],
  ['materializedViews', 'materialized view', 'materialized views'],
  ['functions', 'function', 'functions'],
] as const;

const catalogObjects = z.looseObject({
  objects: z.record(name, z.record(z.string().max(64), z.number().int().nonnegative())),
});

/**
 * The objects of each kind in the restored database, summed over its schemas, beside the
 * backup's: the catalog query is the one the backup ran (CATALOG_FINGERPRINT), so both mean the
 * same. The verification compared them schema by schema already; these are the totals.
 */
async function objectCounts(
  on: PostgresConnection,
  tools: PostgresTools,
  recorded: CatalogFingerprint | undefined,
): Promise<ObjectCount[]> {
  const found = catalogObjects.parse(JSON.parse(await psql(on, tools.binDir, CATALOG_FINGERPRINT)));
  const total = (objects: Record<string, Record<string, number>>, kind: string) =>
    Object.values(objects).reduce((sum, counts) => sum + (counts[kind] ?? 0), 0);
  return OBJECT_KINDS.map(([kind, , plural]) => ({
    kind: plural,
    backedUp: recorded ? total(recorded.objects, kind) : null,
    found: total(found.objects, kind),
  }));
}

function objectCheck(objects: readonly ObjectCount[]): DrillCheckResult {
  const recorded = objects.every((object) => object.backedUp !== null);
  const failures = objects
    .filter((object) => object.backedUp !== null && object.backedUp !== object.found)
    .map((object) => `${object.kind}: ${object.backedUp} backed up, ${object.found} found`);
  const shown = objects
    .filter((object) => object.found > 0 || (object.backedUp ?? 0) > 0)
    .map((object) => {
      const [, singular, plural] = OBJECT_KINDS.find(([, , kind]) => kind === object.kind)!;
      return count(object.found, singular, plural);
    });
  return {
    name: 'object counts',
    status: failures.length > 0 ? 'failed' : 'passed',
    summary: `${shown.join(', ') || 'no objects'}${recorded ? (failures.length === 0 ? ', as backed up' : '') : ''}`,
    failures,
    notes: recorded ? [] : ['the backup recorded no object counts to compare with'],
  };
}

/** Bytes of a check's output read: its answer is one row, and anything past this is not looked at. */
const SQL_CHECK_OUTPUT_LIMIT = 1024 * 1024;

/** How a value shows in a failure: quoted, made printable, cut short. */
const shown = (value: string | null) => (value === null ? 'NULL' : JSON.stringify(printable(value, 120)));

/**
 * An SQL check of the configuration file: its query run as it is written, in a read-only
 * transaction of a read-only session, under its statement_timeout, with psql printing CSV; the
 * text of the first column of the first row printed is compared with the expected text. The
 * query goes to psql with -c, so psql sends it to the server whole and runs no backslash command
 * in it (the configuration refuses one that starts with a backslash, which -c would run).
 */
async function sqlCheck(
  on: PostgresConnection,
  tools: PostgresTools,
  check: SqlCheck,
): Promise<DrillCheckResult> {
  // Printed for NULL, so that NULL and empty text (both an empty CSV field) differ.
  const nullMark = `strongbox-null-${randomBytes(12).toString('hex')}`;
  const timeoutMs = Math.max(1, Math.round(check.timeoutSeconds * 1000));
  const args = ['-X', '-w', '-q', '--csv', '-t', '-v', 'ON_ERROR_STOP=1', '-v', 'VERBOSITY=verbose'];
  for (const command of [
    'begin transaction read only',
    `set local statement_timeout = ${timeoutMs}`,
    `\\pset null ${nullMark}`,
    check.query,
    'rollback',
  ])
    args.push('-c', command);
  const result = await new Promise<{ stdout: string; stderr: string; error?: ExecFileException }>(
    (resolve) => {
      const child = execFile(
        path.join(tools.binDir, 'psql'),
        args,
        { env: toolEnvironment(on.env), maxBuffer: SQL_CHECK_OUTPUT_LIMIT },
        (error, stdout, stderr) => resolve({ stdout, stderr, ...(error ? { error } : {}) }),
      );
      stopOnInterrupt(child);
    },
  );
  const failed = (why: string): DrillCheckResult => ({
    name: check.name,
    status: 'failed',
    summary: why,
    failures: [why],
    notes: [],
  });
  if (result.error?.code === 'ENOENT')
    throw new MissingDependencyError(`psql is missing from ${tools.binDir}`, {
      hint: 'Install the PostgreSQL client programs.',
      cause: result.error,
    });
  if (result.error?.code === 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER')
    return failed(
      `the query printed more than ${SQL_CHECK_OUTPUT_LIMIT / 1024} KiB; a check is answered by one row`,
    );
  if (result.error) {
    const refused = /ERROR:\s+([0-9A-Z]{5}):\s*(.*)/.exec(result.stderr);
    if (refused?.[1] === QUERY_CANCELED)
      return failed(`the query ran past its timeout of ${check.timeoutSeconds} s`);
    return failed(
      `the query failed: ${printable(refused?.[2] ?? firstError(result.stderr, 'psql') ?? 'psql failed')}${refused ? ` (SQLSTATE ${refused[1]})` : ''}`,
    );
  }
  const first = firstCsvField(result.stdout);
  if (first === undefined) return failed(`expected ${shown(check.expected)}, the query returned no row`);
  const actual = first === nullMark ? null : first;
  if (actual !== check.expected) return failed(`expected ${shown(check.expected)}, found ${shown(actual)}`);
  return { name: check.name, status: 'passed', summary: shown(actual), failures: [], notes: [] };
}

/** SQLSTATE query_canceled: what statement_timeout ends a statement with. */
const QUERY_CANCELED = '57014';

/**
 * The first field of the first record of psql's CSV output (RFC 4180: a field in double quotes
 * may hold commas, quotes doubled and line breaks); undefined when there is no record.
 */
export function firstCsvField(text: string): string | undefined {
  if (text === '') return undefined;
  if (!text.startsWith('"')) return /^[^,\n]*/.exec(text)![0];
  let field = '';
  for (let at = 1; at < text.length;) {
    const quote = text.indexOf('"', at);
    if (quote < 0) return field + text.slice(at);
    field += text.slice(at, quote);
    if (text[quote + 1] !== '"') return field;
    field += '"';
    at = quote + 2;
  }
  return field;
}
