import { z } from 'zod';
import { MalformedRecordError } from '../errors.ts';
import type { ObjectInfo } from '../storage/backend.ts';
import { hexId, integer, list, parseRecord, text } from '../util/schema.ts';
import { nameMismatch, type AppendedRecords, type Stored } from './appended-records.ts';
import type { KeyKind } from './keys.ts';
import { objectId, parseStampedId, stampTime } from './layout.ts';
import type { WriterTrust } from './trust.ts';

/**
 * The audit log (docs/FORMAT.md, "Audit records"): one record for each operation that read or
 * changed the repository, appended by the key that ran it and signed by it. Any writer may append,
 * write-only keys included; a record shows the key that signed it, so a key can speak only for
 * itself.
 */
export type AuditResult = 'success' | 'failure' | 'interrupted';

/** What a caller records of one operation. */
export interface AuditEntry {
  started: Date;
  finished: Date;
  /** The machine and the operating-system user that ran it. */
  host: string;
  user: string;
  /** The command path: 'backup postgres', 'key add', 'forget'. */
  operation: string;
  /** The command line without its secrets (cli/public-arguments.ts). */
  arguments: string[];
  result: AuditResult;
  /** The process's exit code; absent when interrupted (the signal decides it). */
  exitCode?: number;
  /** Of a failure: its message. */
  message?: string;
  /** The snapshot it wrote or read. */
  snapshot?: string;
  /** The strongbox that wrote the record: `strongbox 1.2.3`. */
  program: string;
}

/** An audit record as stored. */
export type AuditRecord = Stored<AuditEntry>;

export const MAX_ARGUMENTS = 256;
export const MAX_ARGUMENT = 1024;
export const MAX_MESSAGE = 4096;
const isoTime = z.iso.datetime({ offset: true });

const AUDIT_SCHEMA = z.strictObject({
  version: z.literal(1),
  nonce: z.string().regex(/^[0-9a-f]{32}$/, { error: 'expected 32 lowercase hex digits' }),
  started: isoTime,
  finished: isoTime,
  host: text(255),
  user: text(255),
  operation: text(255),
  arguments: list(text(MAX_ARGUMENT), MAX_ARGUMENTS),
  result: z.enum(['success', 'failure', 'interrupted']),
  exitCode: integer(0, 255).optional(),
  message: text(MAX_MESSAGE).optional(),
  snapshot: hexId.optional(),
  program: text(255),
});

/** One record of the log as read: what it says and who signed it, or why it cannot be believed. */
export type AuditLogEntry =
  | {
      name: string;
      /** `verified`: a current writer signed it; `retired`: a writer since retired (an endorsement names it). */
      status: 'verified' | 'retired';
      key: { id: string; kind: KeyKind };
      record: AuditRecord;
    }
  | {
      name: string;
      /** `damaged`: it cannot be read; `untrusted`: it reads, but no writer of this repository signed it. */
      status: 'damaged' | 'untrusted';
      problem: string;
    };

export interface AuditLogQuery {
  /** Only the newest `last` records (of the operation, with `operation`). */
  last?: number;
  /** Only records of this operation, or of the commands below it (`key` for `key add`…). */
  operation?: string;
}

/** Records read at once. */
const READ_AHEAD = 16;

export class AuditLog {
  constructor(
    private readonly records: AppendedRecords,
    private readonly trust: WriterTrust,
  ) {}

  /** Appends the record of one operation, signed by this key; returns its name. */
  append(entry: AuditEntry): Promise<string> {
    const { started, finished, ...rest } = entry;
    return this.records.append('audit', started, {
      finished: finished.toISOString(),
      ...bounded(rest),
    });
  }

  /**
   * The records the query selects, oldest first. Damaged and untrusted records are listed too,
   * where they lie in time (by their names), whatever the query's operation: nothing of what they
   * claim can be believed, so a filter cannot tell them apart.
   */
  async read(query: AuditLogQuery = {}): Promise<AuditLogEntry[]> {
    const objects = (await this.records.list('audit')).reverse();
    const wanted = query.last ?? Infinity;
    const read: { entry: AuditLogEntry; time: number }[] = [];
    let matched = 0;
    // Names give the second only: the records of the second where the count is reached are all
    // read, so that their order within it comes from the times they hold.
    for (let at = 0; at < objects.length; at += READ_AHEAD) {
      if (at > 0 && matched >= wanted && secondOf(objects[at]!.name) !== secondOf(objects[at - 1]!.name))
        break;
      const batch = objects.slice(at, at + READ_AHEAD);
      const entries = await Promise.all(batch.map((object) => this.entry(object)));
      for (const entry of entries) {
        if (!entry) continue;
        if ('record' in entry && !ofOperation(entry.record.operation, query.operation)) continue;
        if ('record' in entry) matched++;
        read.push({ entry, time: timeOf(entry) });
      }
    }
    read.sort((a, b) =>
      a.time === b.time ? (a.entry.name < b.entry.name ? 1 : -1) : b.time > a.time ? 1 : -1,
    );
    const selected: AuditLogEntry[] = [];
    let kept = 0;
    for (const { entry } of read) {
      if (kept === wanted) break;
      if ('record' in entry) kept++;
      selected.push(entry);
    }
    return selected.reverse();
  }

  private async entry(object: ObjectInfo): Promise<AuditLogEntry | undefined> {
    const opened = await this.records.open('audit', object);
    if (!opened) return undefined;
    const { name } = opened;
    if ('problem' in opened) return { name, status: 'damaged', problem: opened.problem };
    const verdict = await this.trust.judgeWriter('audit', opened.signed);
    if (!verdict.trusted) return { name, status: 'untrusted', problem: verdict.problem };
    let record: AuditRecord;
    try {
      record = parseRecord(AUDIT_SCHEMA, opened.content, {
        kind: 'audit record',
        id: objectId('audit', name),
      });
    } catch (error) {
      if (!(error instanceof MalformedRecordError)) throw error;
      return { name, status: 'damaged', problem: error.message };
    }
    const mismatch = nameMismatch('audit', name, record);
    if (mismatch) return { name, status: 'damaged', problem: mismatch };
    return {
      name,
      status: verdict.writer.current ? 'verified' : 'retired',
      key: { id: verdict.writer.id!, kind: verdict.writer.kind ?? 'full' },
      record,
    };
  }
}

/** The second a record's name gives, or its whole name when it gives none. */
function secondOf(name: string): string {
  return parseStampedId(objectId('audit', name))?.stamp ?? name;
}

/**
 * When a record began: as it says, or, for one that cannot be believed, as its name says; an
 * object whose name gives no time counts as the newest, so that no query leaves it out.
 */
function timeOf(entry: AuditLogEntry): number {
  if ('record' in entry) return Date.parse(entry.record.started);
  const stamp = parseStampedId(objectId('audit', entry.name))?.stamp;
  return stamp ? stampTime(stamp).getTime() : Infinity;
}

function ofOperation(operation: string, wanted: string | undefined): boolean {
  return wanted === undefined || operation === wanted || operation.startsWith(`${wanted} `);
}

/** The entry within the schema's limits, so that what is written can always be read back. */
function bounded(entry: Omit<AuditEntry, 'started' | 'finished'>): Record<string, unknown> {
  const cut = (value: string, max: number) => (value.length > max ? `${value.slice(0, max - 1)}…` : value);
  const args = entry.arguments.slice(0, MAX_ARGUMENTS).map((argument) => cut(argument, MAX_ARGUMENT));
  if (entry.arguments.length > MAX_ARGUMENTS) args[MAX_ARGUMENTS - 1] = '…';
  return {
    ...entry,
    host: cut(entry.host, 255),
    user: cut(entry.user, 255),
    operation: cut(entry.operation, 255),
    arguments: args,
    ...(entry.message !== undefined ? { message: cut(entry.message, MAX_MESSAGE) } : {}),
    program: cut(entry.program, 255),
  };
}
