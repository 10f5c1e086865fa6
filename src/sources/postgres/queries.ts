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

export const SERVER_VERSION = 'show server_version_num';

export function databaseExists(database: string): string {
  return `select count(*) from pg_database where datname = ${quoteLiteral(database)}`;
}

export function createDatabase(database: string): string {
  return `create database ${quoteIdentifier(database)}`;
}

export function dropDatabase(database: string): string {
  return `drop database if exists ${quoteIdentifier(database)}`;
}

export function renameDatabase(from: string, to: string): string {
  return `alter database ${quoteIdentifier(from)} rename to ${quoteIdentifier(to)}`;
}

/** Keeps new sessions out of a database and ends the ones it has, so it can be renamed. */
export function closeDatabase(database: string): string[] {
  return [
    `alter database ${quoteIdentifier(database)} allow_connections false`,
    `select count(pg_terminate_backend(pid)) from pg_stat_activity where datname = ${quoteLiteral(database)} and pid <> pg_backend_pid()`,
  ];
}

export function openDatabase(database: string): string {
  return `alter database ${quoteIdentifier(database)} allow_connections true`;
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
  return ['set datestyle = iso', 'set intervalstyle = postgres', 'set extra_float_digits = 3'];
}

/** pg_dump's "COPY t (cols) FROM stdin;" for a table, turned into the matching COPY … TO STDOUT. */
export function copyOutStatement(copyFromStatement: string): string {
  const match = /^COPY (.+) FROM stdin;\s*$/s.exec(copyFromStatement.trim());
  if (!match) throw new Error(`not a COPY FROM stdin statement: ${copyFromStatement.slice(0, 80)}`);
  return `COPY ${match[1]} TO STDOUT`;
}

export function databaseEncoding(database: string): string {
  return `select pg_encoding_to_char(encoding) from pg_database where datname = ${quoteLiteral(database)}`;
}
