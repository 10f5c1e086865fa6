import { UntrustedRecordError } from '../errors.ts';

/**
 * The SQL strongbox runs on PostgreSQL servers, in one place. Identifiers are quoted with
 * quoteIdentifier; values go through quoteLiteral: never by string interpolation of raw input.
 */
export function quoteIdentifier(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

export function quoteLiteral(value: string): string {
  return `'${value.replaceAll("'", "''")}'`;
}

/**
 * A name as an identifier, quoted as PostgreSQL would need it: `public.items`, but
 * `"Sch ema"."we""ird"`, so that a message names exactly one object.
 */
export function displayIdentifier(name: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replaceAll('"', '""')}"`;
}

/** A table's qualified name, each part quoted as it needs (displayIdentifier). */
export function displayTable(table: { schema: string; name: string }): string {
  return `${displayIdentifier(table.schema)}.${displayIdentifier(table.name)}`;
}

export const SERVER_VERSION = 'show server_version_num';

export function databaseExists(database: string): string {
  return `select count(*) from pg_database where datname = ${quoteLiteral(database)}`;
}

export function createDatabase(database: string): string {
  return `create database ${quoteIdentifier(database)}`;
}

/** WITH (FORCE), from PostgreSQL 13, first ends the sessions connected to it. */
export function dropDatabase(database: string, force = false): string {
  return `drop database if exists ${quoteIdentifier(database)}${force ? ' with (force)' : ''}`;
}

export function commentOnDatabase(database: string, comment: string | null): string {
  return `comment on database ${quoteIdentifier(database)} is ${comment === null ? 'null' : quoteLiteral(comment)}`;
}

/**
 * Takes, for this session, strongbox's advisory lock on a database name (restore-names.ts); prints
 * t when it was free. Running restores hold their scratch database's name so.
 */
export function claimName(lockClass: number, database: string): string {
  return `select pg_try_advisory_lock(${lockClass}, hashtext(${quoteLiteral(database)}))`;
}

/**
 * Puts `scratch` in the place of `target` in one transaction: the server either renames both or
 * neither, so the target's name always leads to a whole database. Renaming a database needs it
 * without sessions, so those are ended first; the rename then holds the database's lock, which
 * keeps new sessions out until the commit (they are then let into the new database), and waits a
 * few seconds for the ended ones to go. No database is ever left closed to connections.
 * `keptMark` goes on the old database (a restore that drops it leaves a mark for a cleanup to
 * finish the job); the scratch's own mark gives way to `comment` (the one backed up) as it
 * becomes the target.
 */
export function swapDatabases(swap: {
  target: string;
  scratch: string;
  keptAs: string;
  keptMark?: string;
  comment?: string | null;
}): string {
  const { target, scratch, keptAs } = swap;
  return [
    'begin',
    "set local lock_timeout = '60s'",
    `select count(pg_terminate_backend(pid)) from pg_stat_activity where datname in (${quoteLiteral(target)}, ${quoteLiteral(scratch)}) and pid <> pg_backend_pid()`,
    `alter database ${quoteIdentifier(target)} rename to ${quoteIdentifier(keptAs)}`,
    `alter database ${quoteIdentifier(scratch)} rename to ${quoteIdentifier(target)}`,
    commentOnDatabase(target, swap.comment ?? null),
    ...(swap.keptMark === undefined ? [] : [commentOnDatabase(keptAs, swap.keptMark)]),
    'commit',
  ].join(';\n');
}

/**
 * Gives a restored, verified scratch database the name it was restored for, in one transaction
 * that also puts `comment` (the one backed up) in place of its scratch mark: until then the
 * target name does not exist, so a restore killed at any moment never leaves a half-loaded
 * database under it.
 */
export function moveIntoPlace(move: { scratch: string; target: string; comment?: string | null }): string {
  const { scratch, target } = move;
  return [
    'begin',
    "set local lock_timeout = '60s'",
    `select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = ${quoteLiteral(scratch)} and pid <> pg_backend_pid()`,
    `alter database ${quoteIdentifier(scratch)} rename to ${quoteIdentifier(target)}`,
    commentOnDatabase(target, move.comment ?? null),
    'commit',
  ].join(';\n');
}

/**
 * As one JSON array, the databases a restore may have left: those named like its scratch
 * databases, those with a comment it writes, and any that accepts no connections (an older
 * strongbox closed databases while it swapped them); each with its comment, its size when
 * readable, whether a running restore holds its name, and how many sessions it has.
 */
export function restoreLeftovers(scratchPrefix: string, lockClass: number): string {
  const prefixPattern = quoteLiteral(`${scratchPrefix.replace(/[\\%_]/g, (character) => `\\${character}`)}%`);
  return `select coalesce(json_agg(json_build_object(
    'database', d.datname,
    'comment', shobj_description(d.oid, 'pg_database'),
    'allowsConnections', d.datallowconn,
    'bytes', case when has_database_privilege(d.oid, 'connect') then pg_database_size(d.oid) end,
    'held', exists (select 1 from pg_locks l where l.locktype = 'advisory' and l.granted and l.objsubid = 2
      and l.classid = ${lockClass}::oid and l.objid = hashtext(d.datname::text)::oid),
    'sessions', (select count(*) from pg_stat_activity a where a.datid = d.oid)
  ) order by d.datname), '[]')
  from pg_database d
  where not d.datistemplate and (d.datname like ${prefixPattern}
    or shobj_description(d.oid, 'pg_database') like '{"strongbox":%' or not d.datallowconn)`;
}

export function databaseSize(database: string): string {
  return `select pg_database_size(${quoteLiteral(database)})`;
}

/**
 * Session settings under which COPY text reads as pg_dump wrote it: pg_dump sets the same ones.
 * They print nothing under psql -q, so the session's output is the COPY text alone. The client
 * encoding (the database's, as pg_dump uses) and the time zone (UTC, in which strongbox also runs
 * pg_dump) go in through the environment: PGCLIENTENCODING and PGTZ.
 */
export function sessionLikePgDump(): string[] {
  // The timeouts too, as pg_dump does: a restored database has its statement_timeout setting
  // (database-properties.ts) before it is verified.
  return [
    'set datestyle = iso',
    'set intervalstyle = postgres',
    'set extra_float_digits = 3',
    'set statement_timeout = 0',
    'set lock_timeout = 0',
  ];
}

/**
 * The COPY … TO STDOUT that reads a table's rows as pg_dump's COPY … FROM stdin statement wrote
 * them: the same table, the same columns in the same order. The statement comes from a
 * snapshot, that is from storage, so it is never run: it is parsed as pg_dump writes it (fmtId:
 * a name unquoted only when it is [a-z_][a-z0-9_]*, else double-quoted with "" for "), checked
 * against the table's recorded schema and name, and rebuilt from those identifiers, quoted.
 * Anything else is an UntrustedRecordError.
 */
export function copyOutStatement(table: { schema: string; name: string; copyStatement: string }): string {
  const parsed = parseCopyFrom(table.copyStatement);
  if (!parsed || parsed.schema !== table.schema || parsed.table !== table.name) {
    throw new UntrustedRecordError(
      `the snapshot's COPY statement for ${displayTable(table)} is not one pg_dump writes for it: ${JSON.stringify(table.copyStatement.slice(0, 120))}`,
    );
  }
  const columns = parsed.columns.length ? ` (${parsed.columns.map(quoteIdentifier).join(', ')})` : '';
  return `COPY ${quoteIdentifier(parsed.schema)}.${quoteIdentifier(parsed.table)}${columns} TO STDOUT`;
}

/** A name as pg_dump's fmtId writes it, at the start of the text. */
const PG_DUMP_IDENTIFIER = /^(?:"((?:[^"]|"")+)"|([a-z_][a-z0-9_]*))/;

/** "COPY schema.table (a, b) FROM stdin;" read into its parts; undefined for anything else. */
export function parseCopyFrom(
  statement: string,
): { schema: string; table: string; columns: string[] } | undefined {
  let rest = statement;
  const take = (text: string) => {
    if (!rest.startsWith(text)) return false;
    rest = rest.slice(text.length);
    return true;
  };
  const name = () => {
    const match = PG_DUMP_IDENTIFIER.exec(rest);
    if (!match) return undefined;
    rest = rest.slice(match[0].length);
    return match[1] !== undefined ? match[1].replaceAll('""', '"') : match[2]!;
  };
  if (!take('COPY ')) return undefined;
  const schema = name();
  if (schema === undefined || !take('.')) return undefined;
  const table = name();
  if (table === undefined || !take(' ')) return undefined;
  const columns: string[] = [];
  if (take('(')) {
    for (;;) {
      const column = name();
      if (column === undefined) return undefined;
      columns.push(column);
      if (take(')')) break;
      if (!take(', ')) return undefined;
    }
  }
  // pg_dump writes one space before FROM after a column list, two without one (the first taken above).
  if (!take(' FROM stdin;')) return undefined;
  return /^\n?$/.test(rest) ? { schema, table, columns } : undefined;
}

export function databaseEncoding(database: string): string {
  return `select pg_encoding_to_char(encoding) from pg_database where datname = ${quoteLiteral(database)}`;
}

export const EXPORT_SNAPSHOT = [
  'begin isolation level repeatable read read only',
  'select pg_export_snapshot()',
];

/**
 * What a database holds beyond its table rows, as one JSON object: every sequence's last value,
 * and per schema the number of tables, views, materialized views, sequences, indexes,
 * constraints, triggers and functions; the server version and database size for the record.
 * Run in the dump's snapshot at backup and on the restored database after: the same query, so
 * the same meaning on both sides.
 */
export const CATALOG_FINGERPRINT = `
with schemas as (
  select oid, nspname from pg_namespace
  where nspname not in ('pg_catalog', 'information_schema', 'pg_toast') and nspname not like 'pg_temp_%' and nspname not like 'pg_toast_temp_%'
),
relations as (
  select s.nspname,
    count(*) filter (where c.relkind in ('r', 'p')) as tables,
    count(*) filter (where c.relkind = 'v') as views,
    count(*) filter (where c.relkind = 'm') as materialized_views,
    count(*) filter (where c.relkind = 'S') as sequences,
    count(*) filter (where c.relkind in ('i', 'I')) as indexes
  from schemas s join pg_class c on c.relnamespace = s.oid group by s.nspname
),
constraints as (
  select s.nspname, count(*) as constraints from schemas s join pg_constraint k on k.connamespace = s.oid group by s.nspname
),
triggers as (
  select s.nspname, count(*) as triggers from schemas s join pg_class c on c.relnamespace = s.oid
  join pg_trigger t on t.tgrelid = c.oid and not t.tgisinternal group by s.nspname
),
functions as (
  select s.nspname, count(*) as functions from schemas s join pg_proc p on p.pronamespace = s.oid group by s.nspname
),
counts as (
  select s.nspname, json_build_object(
    'tables', coalesce(r.tables, 0), 'views', coalesce(r.views, 0), 'materializedViews', coalesce(r.materialized_views, 0),
    'sequences', coalesce(r.sequences, 0), 'indexes', coalesce(r.indexes, 0), 'constraints', coalesce(k.constraints, 0),
    'triggers', coalesce(t.triggers, 0), 'functions', coalesce(f.functions, 0)) as objects
  from schemas s left join relations r using (nspname) left join constraints k using (nspname)
  left join triggers t using (nspname) left join functions f using (nspname)
)
select json_build_object(
  'sequences', (select coalesce(json_object_agg(format('%I.%I', schemaname, sequencename), last_value order by schemaname, sequencename), '{}') from pg_sequences),
  'objects', (select coalesce(json_object_agg(nspname, objects order by nspname), '{}') from counts),
  'serverVersion', current_setting('server_version_num')::int,
  'databaseSize', pg_database_size(current_database())
)`;

/** The databases a cluster backup dumps: every one that accepts connections, templates aside. */
export const LIST_DATABASES =
  'select datname from pg_database where datallowconn and not datistemplate order by datname';

/** How many tables of its own a database holds: a fresh `postgres` database holds none. */
export const USER_TABLE_COUNT = `select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace
  where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')`;
