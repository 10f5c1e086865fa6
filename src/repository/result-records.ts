import { z } from 'zod';
import { MalformedRecordError, StrongboxError } from '../errors.ts';
import { count, firstIssue, hexId, integer, list, parseRecord, recordOf, text } from '../util/schema.ts';
import { nameMismatch, type AppendedRecords, type Stored } from './appended-records.ts';
import { objectId } from './layout.ts';
import type { RecordProblem } from './signed-records.ts';
import type { WriterTrust } from './trust.ts';

/**
 * What drills and checks found (docs/FORMAT.md, "Results"), kept in the repository so that
 * `health`, metrics and dashboards know when each database was last proven restorable and when
 * `check` last passed. Written by full keys only, and believed only when a current full key signed
 * them, as removal records are: a database host (a write-only key) cannot vouch for its own backups.
 */

/** A restore drill: a snapshot restored into a scratch database, verified, timed. */
export interface DrillResult {
  started: Date;
  finished: Date;
  /** The machine the drill ran on. */
  host: string;
  /** The backup's group: kind, name (the database), host and environment, as snapshots list them. */
  subject: { kind: string; name: string; host: string; env?: string };
  snapshot: string;
  /** When the snapshot was taken (ISO time). */
  snapshotTime: string;
  /** Seconds by phase: fetch, restore, verify, checks… */
  phases: Record<string, number>;
  /** Recovery time: the phases a real restore goes through, in seconds; none when the restore failed. */
  rtoSeconds?: number;
  /** Recovery point: the age of the newest restorable state when the drill ran, in seconds. */
  rpoSeconds: number;
  /** The objectives the drill was held to, in seconds, where given. */
  objectives: { rtoSeconds?: number; rpoSeconds?: number };
  /** success: the drill exited 0; a drill over its objectives is a failure with exit code 8. */
  result: 'success' | 'failure';
  /** The drill's exit code: 0, 7 for a mismatch, 8 for an objective exceeded… */
  exitCode: number;
  message?: string;
  /** What did not match, one line each. */
  mismatches: string[];
}

/** A `check` with a full key, whatever it found. */
export interface CheckResultRecord {
  started: Date;
  finished: Date;
  host: string;
  result: 'success' | 'failure';
  exitCode: number;
  message?: string;
  /** The share of the packs read and authenticated: 0 without --read-data, 1 with it. */
  readData: number;
  problems: number;
  snapshots: number;
  packs: number;
  packsRead: number;
}

export interface ResultKinds {
  drill: DrillResult;
  check: CheckResultRecord;
}

export type ResultKind = keyof ResultKinds;

export interface TrustedResult<T> {
  name: string;
  /** The writer id of the full key that signed it. */
  writer: string;
  value: Stored<T>;
}

export interface ResultListing<T> {
  /** Oldest first. */
  trusted: TrustedResult<T>[];
  problems: RecordProblem[];
}

const OBJECT_KIND = { drill: 'drill-result', check: 'check-result' } as const;

const isoTime = z.iso.datetime({ offset: true });
const seconds = z.number().min(0).max(1e10);
const MESSAGE = 4096;
const APPENDED = {
  version: z.literal(1),
  nonce: z.string().regex(/^[0-9a-f]{32}$/, { error: 'expected 32 lowercase hex digits' }),
  started: isoTime,
  finished: isoTime,
  host: text(255),
};

const SCHEMAS = {
  drill: z.strictObject({
    ...APPENDED,
    subject: z.strictObject({
      kind: text(255),
      name: text(4096),
      host: text(4096),
      env: text(4096).optional(),
    }),
    snapshot: hexId,
    snapshotTime: isoTime,
    phases: recordOf(z.string().regex(/^[a-z][a-z0-9-]{0,63}$/), seconds, 64),
    rtoSeconds: seconds.optional(),
    rpoSeconds: seconds,
    objectives: z.strictObject({ rtoSeconds: seconds.optional(), rpoSeconds: seconds.optional() }),
    result: z.enum(['success', 'failure']),
    exitCode: integer(0, 255),
    message: text(MESSAGE).optional(),
    mismatches: list(text(MESSAGE), 1000),
  }),
  check: z.strictObject({
    ...APPENDED,
    result: z.enum(['success', 'failure']),
    exitCode: integer(0, 255),
    message: text(MESSAGE).optional(),
    readData: z.number().min(0).max(1),
    problems: count,
    snapshots: count,
    packs: count,
    packsRead: count,
  }),
} satisfies Record<ResultKind, z.ZodType>;

const RECORD_NAME = { drill: 'drill result', check: 'check result' } as const;

export class ResultRecords {
  constructor(
    private readonly records: AppendedRecords,
    private readonly trust: WriterTrust,
  ) {}

  /** Appends a result, signed by this (full) key; returns its name. */
  record<K extends ResultKind>(kind: K, result: ResultKinds[K]): Promise<string> {
    const { started, finished, ...rest } = result;
    const fields = { ...rest, finished: finished.toISOString() } as Record<string, unknown>;
    if (typeof fields.message === 'string' && fields.message.length > MESSAGE)
      fields.message = `${fields.message.slice(0, MESSAGE - 1)}…`;
    // What the schema would refuse on reading is refused now, so that no result is written unreadable.
    const checked = SCHEMAS[kind].safeParse(
      { version: 1, nonce: '0'.repeat(32), started: started.toISOString(), ...fields },
      { reportInput: false },
    );
    if (!checked.success)
      throw new StrongboxError(`cannot record the ${RECORD_NAME[kind]}: ${firstIssue(checked.error)}`);
    return this.records.append(OBJECT_KIND[kind], started, fields);
  }

  /** Every result of `kind` a current full key signed, oldest first, and what is wrong with the others. */
  async list<K extends ResultKind>(kind: K): Promise<ResultListing<ResultKinds[K]>> {
    const objectKind = OBJECT_KIND[kind];
    const trusted: TrustedResult<ResultKinds[K]>[] = [];
    const problems: RecordProblem[] = [];
    for (const object of await this.records.list(objectKind)) {
      const opened = await this.records.open(objectKind, object);
      if (!opened) continue;
      const { name } = opened;
      if ('problem' in opened) {
        problems.push({ name, problem: opened.problem });
        continue;
      }
      const verdict = this.trust.judgeFullWriter(objectKind, opened.signed, 'may not record results');
      if (!verdict.trusted) {
        problems.push({ name, problem: `not trusted: ${verdict.problem}` });
        continue;
      }
      let value: Stored<ResultKinds[K]>;
      try {
        value = parseRecord(SCHEMAS[kind], opened.content, {
          kind: RECORD_NAME[kind],
          id: objectId(objectKind, name),
        }) as unknown as Stored<ResultKinds[K]>;
      } catch (error) {
        if (!(error instanceof MalformedRecordError)) throw error;
        problems.push({ name, problem: error.message });
        continue;
      }
      const mismatch = nameMismatch(objectKind, name, value);
      if (mismatch) problems.push({ name, problem: mismatch });
      else trusted.push({ name, writer: verdict.writer.id!, value });
    }
    return { trusted, problems };
  }

  /**
   * After keys retire, results they signed are no longer believed: those trusted before are signed
   * again, under their own names and unchanged, by this key, so that no database loses its last
   * drill to a key rotation. Killed midway, the rest stay signed by the retired key and are no
   * longer believed: results lost, never results forged.
   */
  async carryOver(
    before: { [K in ResultKind]: TrustedResult<ResultKinds[K]>[] },
    stillWriter: (writer: string) => boolean,
  ): Promise<void> {
    for (const kind of Object.keys(before) as ResultKind[]) {
      for (const { name, writer, value } of before[kind]) {
        if (!stillWriter(writer)) await this.records.resign(OBJECT_KIND[kind], name, value);
      }
    }
  }
}
