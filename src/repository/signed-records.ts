import { createHash, randomBytes } from 'node:crypto';
import { z } from 'zod';
import type { SigningKey } from '../crypto/signing.ts';
import { MalformedRecordError, MissingDependencyError } from '../errors.ts';
import { ObjectNotFoundError, type StorageBackend } from '../storage/backend.ts';
import { hexId, list, parseRecord, text } from '../util/schema.ts';
import { folderOf, objectId, objectName, walFileKind } from './layout.ts';
import { openJson, sealJson, type SealedFileMagic } from './sealed-file.ts';
import { signObject, splitSigned, type SignedKind } from './signed-object.ts';
import type { WriterTrust } from './trust.ts';

/**
 * Records that take data away, signed by the full key that wrote them (docs/FORMAT.md, "Removal
 * records" and "Prune"): removal records (`removed/<sha256>`: snapshots a full key removed, so
 * that the local state of other clients does not report them as disappeared) and prune plans
 * (`prune/<random>`: what a prune will delete once every writer that began before it has ended).
 * Both are sealed with the metadata key, like index files, and believed only when a current full
 * key signed them: a write-only key (a database host) cannot make anyone forget or delete.
 */
type RecordKind = Extract<SignedKind, 'removal' | 'prune-plan'>;

const MAGIC: Record<RecordKind, SealedFileMagic> = { removal: 'SBRM', 'prune-plan': 'SBPP' };

const MAX_IDS = 10_000_000;
const isoTime = z.iso.datetime({ offset: true });

export type RemovalReason = 'forget' | 'tag' | 'compacted';

export interface RemovalRecord {
  version: 1;
  created: string;
  reason: RemovalReason;
  /** Ids of the snapshots removed. */
  snapshots: string[];
  /**
   * WAL files (their names, as `wal/<timeline>/<name>` stores them) expired with the snapshots.
   * Absent when none, so that records without WAL stay readable by versions that know none.
   */
  wal?: string[];
}

/** WAL names one removal record holds at most; a longer list is written as several records. */
export const MAX_WAL_PER_RECORD = 100_000;

const WAL_NAME = z.string().refine((name) => walFileKind(name) !== undefined, 'not a WAL file name');

const REMOVAL_SCHEMA = z.strictObject({
  version: z.literal(1),
  created: isoTime,
  reason: z.enum(['forget', 'tag', 'compacted']),
  snapshots: list(hexId, MAX_IDS),
  wal: list(WAL_NAME, MAX_WAL_PER_RECORD).optional(),
});

export interface PrunePlan {
  version: 1;
  created: string;
  host: string;
  /** The trusted snapshots when the plan was made: what it found referenced. */
  snapshots: string[];
  /** Packs holding no referenced blob. */
  delete: string[];
  /** Packs whose referenced blobs are copied into new packs before they go. */
  repack: string[];
  /** Packs in no index file when the plan was made, from writers that crashed. */
  orphans: string[];
  /**
   * The locks held when the plan was durable: every writer that may have begun before it. Absent
   * until written; a plan without it is abandoned (its maker crashed before knowing whom to wait
   * for) and deletes nothing.
   */
  waitFor?: string[];
}

const LOCK_NAME = z.string().regex(/^locks\/[0-9a-f]{32}$/);

const PRUNE_PLAN_SCHEMA = z.strictObject({
  version: z.literal(1),
  created: isoTime,
  host: text(1024),
  snapshots: list(hexId, MAX_IDS),
  delete: list(hexId, MAX_IDS),
  repack: list(hexId, MAX_IDS),
  orphans: list(hexId, MAX_IDS),
  waitFor: list(LOCK_NAME, 1_000_000).optional(),
});

export interface TrustedRecord<T> {
  name: string;
  value: T;
}

export interface RecordProblem {
  name: string;
  problem: string;
}

export class SignedRecords {
  constructor(
    private readonly backend: StorageBackend,
    private readonly repositoryId: string,
    private readonly metadataKey: Buffer,
    private readonly signingKey: () => SigningKey,
    private readonly trust: WriterTrust,
  ) {}

  /**
   * Writes a removal record, durable once this resolves; returns its names: a record naming more
   * than MAX_WAL_PER_RECORD WAL files is written as several, the snapshots in the first.
   */
  async writeRemoval(record: RemovalRecord): Promise<string[]> {
    const { wal = [], ...rest } = record;
    const chunks: RemovalRecord[] = [];
    for (let start = 0; start < wal.length; start += MAX_WAL_PER_RECORD)
      chunks.push({
        ...rest,
        snapshots: start === 0 ? rest.snapshots : [],
        wal: wal.slice(start, start + MAX_WAL_PER_RECORD),
      });
    if (chunks.length === 0) chunks.push(rest);
    const names: string[] = [];
    for (const chunk of chunks) {
      const bytes = this.encode('removal', chunk);
      const name = objectName('removal', createHash('sha256').update(bytes).digest('hex'));
      await this.backend.put(name, bytes);
      names.push(name);
    }
    return names;
  }

  /** Writes (or, given its name, rewrites) a prune plan; returns its name. */
  async writePrunePlan(plan: PrunePlan, name?: string): Promise<string> {
    const target = name ?? objectName('prune-plan', randomBytes(16).toString('hex'));
    await this.backend.put(target, this.encode('prune-plan', plan));
    return target;
  }

  removals(): Promise<{ trusted: TrustedRecord<RemovalRecord>[]; problems: RecordProblem[] }> {
    return this.readAll('removal', (value, name) =>
      parseRecord(REMOVAL_SCHEMA, value, { kind: 'removal record', id: objectId('removal', name) }),
    );
  }

  prunePlans(): Promise<{ trusted: TrustedRecord<PrunePlan>[]; problems: RecordProblem[] }> {
    return this.readAll('prune-plan', (value, name) =>
      parseRecord(PRUNE_PLAN_SCHEMA, value, { kind: 'prune plan', id: objectId('prune-plan', name) }),
    );
  }

  delete(name: string): Promise<void> {
    return this.backend.delete(name);
  }

  private encode(kind: RecordKind, value: unknown): Buffer {
    const sealed = sealJson(MAGIC[kind], this.metadataKey, value);
    return signObject(kind, this.repositoryId, sealed, this.signingKey());
  }

  /**
   * Every record of `kind`, those a current full key signed apart from the rest (unsigned,
   * forged, by a write-only key, damaged), which are reported and otherwise ignored.
   */
  private async readAll<T>(
    kind: RecordKind,
    parse: (value: unknown, name: string) => T,
  ): Promise<{ trusted: TrustedRecord<T>[]; problems: RecordProblem[] }> {
    const trusted: TrustedRecord<T>[] = [];
    const problems: RecordProblem[] = [];
    for await (const object of this.backend.list(folderOf(kind))) {
      const name = object.name;
      let bytes: Buffer;
      try {
        bytes = await this.backend.get(name);
      } catch (error) {
        // Removed by another process between the listing and the read.
        if (error instanceof ObjectNotFoundError) continue;
        throw error;
      }
      const signed = splitSigned(bytes);
      const verdict = this.trust.judgeFullWriter(kind, signed);
      if (!verdict.trusted) {
        problems.push({ name, problem: `not trusted: ${verdict.problem}` });
        continue;
      }
      try {
        trusted.push({ name, value: parse(openJson(MAGIC[kind], this.metadataKey, signed!.content), name) });
      } catch (error) {
        // Signed by a trusted key yet unreadable: damaged in storage, or not of this kind.
        if (error instanceof MissingDependencyError) throw error;
        problems.push({
          name,
          problem: error instanceof MalformedRecordError ? error.message : 'it is damaged',
        });
      }
    }
    return { trusted, problems };
  }
}
