import { z } from 'zod';
import { SourceError, type MalformedRecordError } from '../errors.ts';
import { LIMITS, nodeName } from '../repository/schemas.ts';
import { count, hexId, integer, list, parseRecord, passOn, recordOf, text } from '../util/schema.ts';
import type { PostgresClusterDetails } from './logical/cluster.ts';
import type { DatabaseProperties } from './database-properties.ts';
import type { PostgresSnapshotDetails } from './logical/logical.ts';
import type { ClusterFacts, PhysicalSnapshotDetails } from './physical/physical.ts';

/**
 * The schemas of what a PostgreSQL backup records in its snapshot's `source` (docs/FORMAT.md,
 * "Snapshots"): exactly what logical.ts and cluster.ts write, every size bounded. A restore or
 * verify parses the record before using any of it; anything else is a MalformedRecordError
 * (exit 7). A backup parses what it is about to write too, so it never writes a record that
 * no reader would take.
 */

/** Limits (docs/FORMAT.md, "Limits"): generous beyond any real database, but finite. */
export const POSTGRES_LIMITS = {
  /** Names of databases, schemas, tables, roles (PostgreSQL's own are at most 63 bytes). */
  name: 4096,
  /** Qualified names and schema-fingerprint keys ("function shop.f(integer, text)"). */
  qualifiedName: 65_536,
  /** Free text: comments, ICU rules, settings, COPY statements. */
  text: 1 << 20,
  tables: 1_000_000,
  /** Data blocks of an archive, sequences, schemas, large objects, schema objects. */
  entries: 10_000_000,
  aclItems: 65_536,
  /** One aclitem: two quoted names and privilege letters. */
  aclItem: 1024,
  settings: 65_536,
  databases: 100_000,
} as const;

const name = text(POSTGRES_LIMITS.name);
const qualifiedName = text(POSTGRES_LIMITS.qualifiedName);
const freeText = text(POSTGRES_LIMITS.text);

/** A role name in an aclitem: double-quoted with "" for a quote, or plain (empty for PUBLIC). */
const ACL_ROLE = '(?:"(?:[^"]|"")*"|[^"=/\\s]*)';

/** aclitem text as PostgreSQL writes it, `grantee=privileges/grantor`, with these privilege letters. */
function aclItem(letters: string) {
  return text(POSTGRES_LIMITS.aclItem).regex(new RegExp(`^${ACL_ROLE}=(?:[${letters}]\\*?)*/${ACL_ROLE}$`), {
    error: `expected aclitem text: grantee=privileges/grantor, privileges among ${letters}`,
  });
}

/** A row-set fingerprint (fingerprint.ts): 32 lowercase hex digits. */
const rowHash = z.string().regex(/^[0-9a-f]{32}$/, { error: 'expected 32 lowercase hex digits' });
const serverVersion = integer(0, 99_999_999);

const recordedTable = z.strictObject({
  schema: name,
  name,
  // Parsed as pg_dump writes it, and checked against schema and name, where it is used (copyOutStatement).
  copyStatement: freeText,
  rows: count,
  hash: rowHash,
});

const catalog = z.strictObject({
  // A sequence's last value is a bigint, negative or beyond 2^53 (then rounded), or null before its first use.
  sequences: recordOf(qualifiedName, z.number().nullable(), POSTGRES_LIMITS.entries),
  objects: recordOf(
    name,
    z.strictObject({
      tables: count,
      views: count,
      materializedViews: count,
      sequences: count,
      indexes: count,
      constraints: count,
      triggers: count,
      functions: count,
    }),
    POSTGRES_LIMITS.entries,
  ),
  serverVersion,
  databaseSize: count,
});

const schemaFingerprint = z.strictObject({
  version: z.literal(1),
  objects: recordOf(
    qualifiedName,
    // A value longer than 64 characters is recorded as "sha256:" and its digest.
    recordOf(name, text(71), POSTGRES_LIMITS.settings),
    POSTGRES_LIMITS.entries,
  ),
  data: z.boolean(),
  materializedViews: recordOf(
    qualifiedName,
    z.strictObject({ rows: count, hash: rowHash }),
    POSTGRES_LIMITS.entries,
  ),
});

/**
 * Version 1, or a later version this code does not read: that one is left out (undefined), as
 * FORMAT.md says a reader compares only records of a version it knows.
 */
const laterVersion = z.looseObject({ version: integer(2, Number.MAX_SAFE_INTEGER) });

const knownSchemaFingerprint = z.unknown().transform((value, context) => {
  if (laterVersion.safeParse(value).success) return undefined;
  const parsed = schemaFingerprint.safeParse(value, { reportInput: false });
  return parsed.success ? parsed.data : passOn(context, parsed.error);
});

/** [dump id, offset, length] */
const archiveBlock = z.tuple([integer(0, 2 ** 31 - 1), count, count]);

const largeObjects = z.strictObject({
  contents: z.boolean(),
  objects: recordOf(
    z.string().regex(/^\d{1,10}$/, { error: 'expected an oid in decimal' }),
    z.strictObject({
      bytes: count.optional(),
      sha256: hexId.optional(),
      owner: name,
      acl: list(aclItem('rw'), POSTGRES_LIMITS.aclItems),
      comment: freeText.optional(),
    }),
    POSTGRES_LIMITS.entries,
  ),
});

const setting = freeText;

export const databaseProperties: z.ZodType<DatabaseProperties> = z.strictObject({
  name,
  owner: name,
  acl: list(aclItem('CTc'), POSTGRES_LIMITS.aclItems),
  comment: freeText.nullable(),
  encoding: name,
  collate: name,
  ctype: name,
  localeProvider: z.enum(['libc', 'icu', 'builtin']),
  providerLocale: name.nullable(),
  icuRules: freeText.nullable(),
  connectionLimit: integer(-1, 2 ** 31 - 1),
  tablespace: name,
  settings: list(setting, POSTGRES_LIMITS.settings),
  roleSettings: recordOf(name, list(setting, POSTGRES_LIMITS.settings), POSTGRES_LIMITS.settings),
});

const databaseDetailsFields = {
  database: name,
  connection: freeText,
  serverVersion,
  pgDumpMajor: integer(0, 9999),
  format: z.literal('custom'),
  archiveVersion: text(64),
  tables: list(recordedTable, POSTGRES_LIMITS.tables),
  catalog: catalog.optional(),
  schema: knownSchemaFingerprint.optional(),
  blocks: list(archiveBlock, POSTGRES_LIMITS.entries).optional(),
  largeObjects: largeObjects.optional(),
  databaseProperties: databaseProperties.optional(),
};

const databaseDetails: z.ZodType<PostgresSnapshotDetails> = z.strictObject(databaseDetailsFields);

const clusterDetails: z.ZodType<PostgresClusterDetails> = z.strictObject({
  cluster: freeText,
  serverVersion,
  pgDumpMajor: integer(0, 9999),
  globals: nodeName,
  databases: recordOf(
    name,
    z.strictObject({ file: nodeName, ...databaseDetailsFields }),
    POSTGRES_LIMITS.databases,
  ),
});

/** The `source` of a snapshot of one database (kind postgres); undefined when it has none. */
export function parsePostgresSource(value: unknown, snapshot: string): PostgresSnapshotDetails | undefined {
  if (value === undefined) return undefined;
  return parseRecord(databaseDetails, value, { kind: 'snapshot', id: snapshot, at: ['source'] });
}

/** The `source` of a cluster snapshot (kind postgres-cluster). */
export function parseClusterSource(value: unknown, snapshot: string): PostgresClusterDetails {
  return parseRecord(clusterDetails, value, { kind: 'snapshot', id: snapshot, at: ['source'] });
}

/**
 * What a backup is about to record, checked as a reader will check it: a database beyond the
 * limits (a comment of megabytes, say) fails the backup rather than writing a snapshot that no
 * restore would read.
 */
export function requireReadableDetails(details: PostgresSnapshotDetails, database: string): void {
  try {
    parseRecord(databaseDetails, details, { kind: 'record of database', id: database });
  } catch (error) {
    const { message } = error as MalformedRecordError;
    throw new SourceError(`${message}; no snapshot was written`, {
      hint: 'docs/FORMAT.md ("Limits") says what a snapshot can record.',
      cause: error,
    });
  }
}

/** The database properties a server answers with (DATABASE_PROPERTIES), as a record's are checked. */
export function parseServerProperties(answer: unknown, database: string): DatabaseProperties {
  try {
    return parseRecord(databaseProperties, answer, { kind: 'properties of database', id: database });
  } catch (cause) {
    throw new SourceError(`the server's answer is not understood: ${(cause as Error).message}`, { cause });
  }
}

/** An LSN as PostgreSQL prints it: two hex numbers of at most 8 digits. */
const lsn = z
  .string()
  .regex(/^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/, { error: 'expected an LSN such as 0/3000028' });
/** A 64-bit system identifier, in decimal. */
const systemIdentifier = z.string().regex(/^\d{1,20}$/, { error: 'expected a system identifier in decimal' });
const oid = z.string().regex(/^\d{1,10}$/, { error: 'expected an oid in decimal' });
const isoTime = z.iso.datetime();

const physicalDetails: z.ZodType<PhysicalSnapshotDetails> = z.strictObject({
  cluster: freeText,
  systemIdentifier,
  serverVersion,
  pgBasebackupMajor: integer(0, 9999),
  method: z.enum(['files', 'pg_basebackup']).optional(),
  timeline: integer(1, 2 ** 32 - 1),
  startLsn: lsn,
  stopLsn: lsn,
  checkpointLsn: lsn,
  // backup_label is a few hundred bytes; the backup refuses one over 64 KiB.
  backupLabel: text(65_536),
  tablespaces: recordOf(oid, z.strictObject({ name, location: text(LIMITS.path) }), POSTGRES_LIMITS.settings),
  dataChecksums: z.boolean(),
  walSegmentSize: integer(1024 * 1024, 1024 * 1024 * 1024),
  walIncluded: z.boolean(),
  startTime: isoTime,
  stopTime: isoTime,
});

/** The `source` of a physical snapshot (kind postgres-physical). */
export function parsePhysicalSource(value: unknown, snapshot: string): PhysicalSnapshotDetails {
  return parseRecord(physicalDetails, value, { kind: 'snapshot', id: snapshot, at: ['source'] });
}

/** What a physical backup is about to record, checked as a reader will (requireReadableDetails). */
export function requireReadablePhysicalDetails(details: PhysicalSnapshotDetails, cluster: string): void {
  try {
    parseRecord(physicalDetails, details, { kind: 'record of cluster', id: cluster });
  } catch (error) {
    const { message } = error as MalformedRecordError;
    throw new SourceError(`${message}; no snapshot was written`, {
      hint: 'docs/FORMAT.md ("Limits") says what a snapshot can record.',
      cause: error,
    });
  }
}

const clusterFacts: z.ZodType<ClusterFacts> = z.strictObject({
  systemIdentifier,
  serverVersion,
  dataChecksums: z.boolean(),
  walSegmentSize: integer(1024 * 1024, 1024 * 1024 * 1024),
  catalogVersion: integer(0, 2 ** 32 - 1),
  dataDirectory: text(LIMITS.path).nullable(),
  mayReadFiles: z.boolean(),
  archiveMode: name.nullable(),
  archiveCommand: freeText.nullable(),
  archiveLibrary: freeText.nullable(),
  tablespaces: list(z.strictObject({ oid, name, location: text(LIMITS.path) }), POSTGRES_LIMITS.settings),
});

/** What the server answered CLUSTER_FACTS with, checked before any of it is used. */
export function parseClusterFacts(answer: unknown, cluster: string): ClusterFacts {
  try {
    return parseRecord(clusterFacts, answer, { kind: 'facts of cluster', id: cluster });
  } catch (cause) {
    throw new SourceError(`the server's answer is not understood: ${(cause as Error).message}`, { cause });
  }
}
