import { createHash } from 'node:crypto';
import { SourceError } from '../../errors.ts';
import { count } from '../../util/plural.ts';
import type { PostgresConnection } from '../connection.ts';
import { aclItemParts, comparableAclItem, splitAcl } from '../acl.ts';
import { displayTable, quoteIdentifier, quoteLiteral } from '../queries.ts';
import { POPULATED_MATERIALIZED_VIEWS, SCHEMA_FINGERPRINT, viewDefinition } from './schema-queries.ts';
import { psql, type PostgresTools } from '../tools.ts';
import {
  copySessionEnvironment,
  fingerprintCopy,
  type Checker,
  type VerificationCheck,
} from '../verify/verify.ts';

/**
 * What a backup records of a database's schema (FORMAT.md, "schema fingerprint"): every object's
 * definition as the catalog gives it, taken in pg_dump's own snapshot, so that a restore can be
 * compared object by object and a difference named ("column shop.orders.total: default added").
 */
export interface SchemaFingerprint {
  /** 1: the properties schema-queries.ts reads. */
  version: 1;
  /**
   * "<kind> <name>" ("table shop.orders", "function shop.f(integer)") → property → value. A
   * value longer than LONGEST_KEPT characters is kept as "sha256:" and its digest (hex).
   */
  objects: Record<string, Record<string, string>>;
  /**
   * Whether the dump held data: a schema-only one restores materialized views unpopulated, so
   * their state and rows are not compared.
   */
  data: boolean;
  /** Each materialized view populated at backup, by qualified name: its rows, fingerprinted as a table's. */
  materializedViews: Record<string, { rows: number; hash: string }>;
}

/** A materialized view by schema and name, as a query needs it. */
export interface ViewName {
  schema: string;
  name: string;
}

/** Values longer than this are recorded as their digest: a function body can be long. */
const LONGEST_KEPT = 64;

/** Runs one SQL text and returns its unaligned output: a psql session's or a one-off psql's. */
export type Query = (sql: string) => Promise<string>;

/** Reads the schema fingerprint's objects, and which materialized views are populated. */
export async function readSchema(
  query: Query,
): Promise<{ objects: SchemaFingerprint['objects']; populatedViews: ViewName[] }> {
  const rows = parseJson(await query(SCHEMA_FINGERPRINT), 'the schema query') as {
    kind: string;
    name: string;
    props: Record<string, string | null>;
  }[];
  const objects: SchemaFingerprint['objects'] = {};
  for (const { kind, name, props } of rows.sort((a, b) =>
    compareText(`${a.kind} ${a.name}`, `${b.kind} ${b.name}`),
  )) {
    const kept: Record<string, string> = {};
    for (const [property, value] of Object.entries(props)) {
      if (value !== null) kept[property] = value.length > LONGEST_KEPT ? digest(value) : value;
    }
    objects[`${kind} ${name}`] = kept;
  }
  const populatedViews = parseJson(
    await query(POPULATED_MATERIALIZED_VIEWS),
    'the query of materialized views',
  ) as ViewName[];
  return { objects, populatedViews };
}

function parseJson(text: string, what: string): unknown {
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new SourceError(`${what} gave no JSON: ${text.slice(0, 80)}`, { cause });
  }
}

function digest(value: string): string {
  return `sha256:${createHash('sha256').update(value).digest('hex')}`;
}

function compareText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** The qualified name a materialized view is recorded under. */
export function viewKey(view: ViewName): string {
  return displayTable(view);
}

/** The COPY that reads a materialized view's rows, for its fingerprint. */
export function copyViewRows(view: ViewName): string {
  return `copy (select * from ${quoteIdentifier(view.schema)}.${quoteIdentifier(view.name)}) to stdout`;
}

/**
 * Fingerprints the rows of materialized views as they are in an exported snapshot (pg_dump's),
 * one psql session each, in that snapshot.
 */
export async function fingerprintViews(
  connection: PostgresConnection,
  tools: PostgresTools,
  snapshot: string,
  views: readonly ViewName[],
): Promise<SchemaFingerprint['materializedViews']> {
  const fingerprints: SchemaFingerprint['materializedViews'] = {};
  if (views.length === 0) return fingerprints;
  const environment = await copySessionEnvironment(connection, tools, connection.database);
  const opening = [
    'begin isolation level repeatable read read only',
    `set transaction snapshot ${quoteLiteral(snapshot)}`,
  ];
  for (const view of views) {
    const key = viewKey(view);
    const rows = await fingerprintCopy(
      environment,
      tools,
      { opening, statement: copyViewRows(view) },
      `materialized view ${key}`,
    );
    fingerprints[key] = { rows: rows.rows, hash: rows.digest() };
  }
  return fingerprints;
}

export interface SchemaExpectations {
  /** Owners as backed up (not after --no-owner). */
  owners: boolean;
  /** Materialized views populated as backed up, with their rows (not after --schema-only). */
  viewRows: boolean;
}

export interface SchemaComparison {
  differences: string[];
  notes: string[];
}

/**
 * Compares a restored database's objects with the backup's, property by property. Without
 * `owners` (a restore with --no-owner), owners are not compared and ACLs are compared with the
 * owner's own entry and every grantor left out.
 */
export function compareSchemas(
  recorded: SchemaFingerprint['objects'],
  actual: SchemaFingerprint['objects'],
  options: SchemaExpectations,
): SchemaComparison {
  const differences: string[] = [];
  const notes: string[] = [];
  const keys = [...new Set([...Object.keys(recorded), ...Object.keys(actual)])].sort(compareText);
  for (const key of keys) {
    const before = recorded[key];
    const after = actual[key];
    if (!before) {
      differences.push(`${key}: not in the backup`);
      continue;
    }
    if (!after) {
      differences.push(`${key}: missing`);
      continue;
    }
    for (const property of [...new Set([...Object.keys(before), ...Object.keys(after)])].sort(compareText)) {
      if (property === 'owner' && !options.owners) continue;
      if (property === 'populated' && !options.viewRows) continue;
      let was = before[property];
      let now = after[property];
      if (property === 'acl' && !options.owners) {
        was = anonymousAcl(was, before.owner);
        now = anonymousAcl(now, after.owner);
      }
      if (was === now) continue;
      if (property === 'columns' && byDesign(before, after)) {
        notes.push(
          `${key}: columns in another order (${display(was)} backed up, ${display(now)} found): pg_dump creates an inheritance child or partition with its parent's columns first`,
        );
        continue;
      }
      differences.push(`${key}: ${describeDifference(property, was, now)}`);
    }
  }
  return { differences, notes };
}

/** A child table's columns in another order, the same columns: what pg_dump cannot keep. */
function byDesign(before: Record<string, string>, after: Record<string, string>): boolean {
  if (!(before.inherits || before.partitionBound)) return false;
  const names = (columns: string | undefined) =>
    splitNames(columns ?? '')
      .sort(compareText)
      .join('\n');
  return names(before.columns) === names(after.columns);
}

/** Splits "a, \"b, c\"" into its identifiers; a quoted one may hold commas. */
function splitNames(list: string): string[] {
  return list.match(/"(?:[^"]|"")*"|[^,\s][^,]*/g)?.map((name) => name.trim()) ?? [];
}

/** Properties whose values are one of a few letters or booleans, in words. */
const WORDS: Record<string, Record<string, string>> = {
  persistence: { p: 'logged', u: 'unlogged', t: 'temporary' },
  rowSecurity: { true: 'row-level security enabled', false: 'row-level security disabled' },
  forceRowSecurity: { true: 'row-level security forced', false: 'row-level security not forced' },
  enabled: { O: 'enabled', D: 'disabled', R: 'enabled on replicas only', A: 'enabled always' },
  populated: { true: 'populated', false: 'not populated' },
  validated: { true: 'validated', false: 'not validated' },
  notNull: { true: 'NOT NULL', false: 'nullable' },
  clustered: { true: 'clustered on', false: 'not clustered on' },
  permissive: { true: 'permissive', false: 'restrictive' },
  cycle: { true: 'cycling', false: 'not cycling' },
  replicaIdentity: {
    d: 'replica identity default',
    n: 'replica identity nothing',
    f: 'replica identity full',
    i: 'replica identity index',
    true: 'the replica identity',
    false: 'not the replica identity',
  },
};

/** Names for properties in messages, where the record's own name would not read well. */
const LABELS: Record<string, string> = {
  acl: 'privileges',
  ofType: 'type of table',
  partitionKey: 'partition key',
  partitionBound: 'partition bound',
  accessMethod: 'access method',
  ownedBy: 'owner column',
  serverOptions: 'server options',
};

function describeDifference(property: string, was: string | undefined, now: string | undefined): string {
  const words = WORDS[property];
  if (words && was !== undefined && now !== undefined)
    return `${words[was] ?? was} at backup, ${words[now] ?? now} now`;
  const label = LABELS[property] ?? property;
  if (property === 'acl') return describeAcl(was ?? '', now ?? '');
  if (was === undefined) return `${label} added${now!.startsWith('sha256:') ? '' : ` (${display(now)})`}`;
  if (now === undefined)
    return `${label} removed${was.startsWith('sha256:') ? '' : ` (was ${display(was)})`}`;
  if (was.startsWith('sha256:') || now.startsWith('sha256:')) return `${label} differs`;
  return `${label} ${display(was)} backed up, ${display(now)} found`;
}

/** A value on one line, for a message. */
function display(value: string | undefined): string {
  return (value ?? '').replace(/\s+/g, ' ').trim();
}

/** SQL privilege names of aclitem letters. */
const PRIVILEGES: Record<string, string> = {
  r: 'SELECT',
  w: 'UPDATE',
  a: 'INSERT',
  d: 'DELETE',
  D: 'TRUNCATE',
  x: 'REFERENCES',
  t: 'TRIGGER',
  X: 'EXECUTE',
  U: 'USAGE',
  C: 'CREATE',
  c: 'CONNECT',
  T: 'TEMPORARY',
  s: 'SET',
  A: 'ALTER SYSTEM',
  m: 'MAINTAIN',
};

/** An ACL with the owner's name as "(owner)" and grantors left out (acl.ts, comparableAclItem). */
function anonymousAcl(acl: string | undefined, owner: string | undefined): string | undefined {
  if (acl === undefined) return undefined;
  return splitAcl(acl)
    .map((item) => comparableAclItem(item, owner, false))
    .sort(compareText)
    .join(' ');
}

/** "GRANT SELECT TO reporting missing; GRANT INSERT TO PUBLIC added", or the two ACLs whole. */
function describeAcl(was: string, now: string): string {
  const grants = (acl: string) => {
    const found = new Map<string, Set<string>>();
    for (const item of splitAcl(acl).map(aclItemParts)) {
      const grantee = item.grantee === '' ? 'PUBLIC' : item.grantee;
      const privileges = found.get(grantee) ?? new Set<string>();
      for (const [, letter, option] of item.privileges.matchAll(/([A-Za-z])(\*?)/g))
        privileges.add(`${PRIVILEGES[letter!] ?? letter}${option ? ' WITH GRANT OPTION' : ''}`);
      found.set(grantee, privileges);
    }
    return found;
  };
  const before = grants(was);
  const after = grants(now);
  const parts: string[] = [];
  for (const grantee of [...new Set([...before.keys(), ...after.keys()])].sort(compareText)) {
    const lost = [...(before.get(grantee) ?? [])].filter((privilege) => !after.get(grantee)?.has(privilege));
    const gained = [...(after.get(grantee) ?? [])].filter(
      (privilege) => !before.get(grantee)?.has(privilege),
    );
    if (lost.length) parts.push(`GRANT ${lost.join(', ')} TO ${grantee} missing`);
    if (gained.length) parts.push(`GRANT ${gained.join(', ')} TO ${grantee} added`);
  }
  return parts.length ? parts.join(', ') : `privileges ${was} backed up, ${now} found`;
}

/**
 * The check of every schema object and every materialized view's rows against the backup's
 * schema fingerprint. A materialized view whose rows differ from the backup's but equal what its
 * query gives on the restored database was stale at backup (a restore refreshes it): a note.
 */
export function schemaCheck(recorded: SchemaFingerprint, options: SchemaExpectations): Checker {
  return async ({ connection, tools, database }): Promise<VerificationCheck> => {
    const query: Query = (sql) => psql(connection, tools.binDir, sql);
    const actual = await readSchema(query);
    const { differences, notes } = compareSchemas(recorded.objects, actual.objects, options);
    let environment: Record<string, string> | undefined;
    const rowsOf = async (statement: string, what: string) => {
      environment ??= await copySessionEnvironment(connection, tools, database);
      const rows = await fingerprintCopy(environment, tools, { statement }, what);
      return { rows: rows.rows, hash: rows.digest() };
    };
    let views = 0;
    for (const view of options.viewRows ? actual.populatedViews : []) {
      const key = viewKey(view);
      const expected = recorded.materializedViews[key];
      if (!expected) continue;
      views++;
      const found = await rowsOf(copyViewRows(view), `materialized view ${key}`);
      if (found.rows === expected.rows && found.hash === expected.hash) continue;
      const definition = (await query(viewDefinition(view))).trim().replace(/;$/, '');
      const fresh = await rowsOf(
        `copy (select * from (${definition}) as q) to stdout`,
        `the query of materialized view ${key}`,
      );
      if (fresh.rows === found.rows && fresh.hash === found.hash) {
        notes.push(
          `materialized view ${key}: ${count(expected.rows, 'row')} backed up, ${found.rows} found, which its query gives: it was not refreshed after its tables changed before the backup, and a restore refreshes it`,
        );
      } else {
        differences.push(
          `materialized view ${key}: ${count(expected.rows, 'row')} backed up, ${found.rows} found${expected.rows === found.rows ? ', contents differ' : ''}`,
        );
      }
    }
    return {
      name: 'schema',
      compared: `${count(Object.keys(recorded.objects).length, 'object')}${views ? `, ${count(views, 'materialized view')}` : ''}`,
      differences,
      notes,
    };
  };
}
