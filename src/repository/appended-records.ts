import { randomBytes } from 'node:crypto';
import type { SigningKey } from '../crypto/signing.ts';
import { MissingDependencyError } from '../errors.ts';
import { ObjectNotFoundError, type ObjectInfo, type StorageBackend } from '../storage/backend.ts';
import { folderOf, objectId, objectName, parseStampedId, stampedId, timeStamp } from './layout.ts';
import { openJson, sealJson, type SealedFileMagic } from './sealed-file.ts';
import { signObject, splitSigned, type SignedParts } from './signed-object.ts';

/**
 * Records the repository only ever gains (docs/FORMAT.md, "Audit records" and "Results"): one
 * small object each, `<folder><time>-<nonce>`, sealed with the metadata key and signed by the key
 * that wrote it. Who may be believed is the caller's to judge (trust.ts); this layer only writes,
 * lists in time order, and opens what is there, saying what is wrong with what cannot be opened.
 */
export type AppendedKind = 'audit' | 'drill-result' | 'check-result';

const MAGIC: Record<AppendedKind, SealedFileMagic> = {
  audit: 'SBAU',
  'drill-result': 'SBRS',
  'check-result': 'SBRS',
};

/** The most a record may take in storage; a larger object is reported, not read. */
const MAX_STORED: Record<AppendedKind, number> = {
  audit: 256 * 1024,
  'drill-result': 1024 * 1024,
  'check-result': 1024 * 1024,
};

/** What every appended record holds besides its own fields: the name repeats both. */
export interface AppendedFields {
  version: 1;
  /** 32 hex digits, the random part of the record's name. */
  nonce: string;
  /** When what it records began (ISO time); the name holds its second. */
  started: string;
}

/** A record as stored and read back from what its writer gave: times as ISO text. */
export type Stored<T> = Omit<T, 'started' | 'finished'> & AppendedFields & { finished: string };

export type OpenedRecord =
  { name: string; signed: SignedParts | undefined; content: unknown } | { name: string; problem: string };

export class AppendedRecords {
  constructor(
    private readonly backend: StorageBackend,
    private readonly repositoryId: string,
    private readonly metadataKey: Buffer,
    private readonly signingKey: () => SigningKey,
  ) {}

  /**
   * Writes a new record of `kind`, durable once this resolves, and returns its name. `fields` are
   * the record's own; `version` and `nonce` are added. Audit records are written to be retained
   * (S3 Object Lock, Azure immutability), so that where the storage enforces it, they cannot be
   * deleted before their retention passes.
   */
  async append(kind: AppendedKind, started: Date, fields: Record<string, unknown>): Promise<string> {
    const nonce = randomBytes(16).toString('hex');
    const name = objectName(kind, stampedId(started, nonce));
    const value = { version: 1, nonce, started: started.toISOString(), ...fields };
    await this.backend.put(name, this.encode(kind, value), { retain: kind === 'audit' });
    return name;
  }

  /** Writes `value` (a whole record, as read) again under its own name, signed by this key. */
  async resign(kind: AppendedKind, name: string, value: AppendedFields): Promise<void> {
    await this.backend.put(name, this.encode(kind, value));
  }

  /** Every object in the kind's folder, oldest first (names begin with their time). */
  async list(kind: AppendedKind): Promise<ObjectInfo[]> {
    const objects: ObjectInfo[] = [];
    for await (const object of this.backend.list(folderOf(kind))) objects.push(object);
    return objects.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * One listed record, decrypted but not yet judged or parsed; undefined when it was deleted
   * since it was listed. Whatever storage holds, this never throws for what is in the object.
   */
  async open(kind: AppendedKind, object: ObjectInfo): Promise<OpenedRecord | undefined> {
    const { name } = object;
    if (!parseStampedId(objectId(kind, name)))
      return { name, problem: 'its name is not one strongbox gives a record' };
    if (object.size > MAX_STORED[kind])
      return { name, problem: `it is ${object.size} bytes, more than strongbox writes` };
    let bytes: Buffer;
    try {
      bytes = await this.backend.get(name);
    } catch (error) {
      if (error instanceof ObjectNotFoundError) return undefined;
      throw error;
    }
    if (bytes.length > MAX_STORED[kind])
      return { name, problem: `it is ${bytes.length} bytes, more than strongbox writes` };
    const signed = splitSigned(bytes);
    try {
      return { name, signed, content: openJson(MAGIC[kind], this.metadataKey, signed?.content ?? bytes) };
    } catch (error) {
      // Not sealed with this repository's metadata key, altered, or not zstd and JSON inside.
      if (error instanceof MissingDependencyError) throw error;
      return { name, problem: 'it does not decrypt (damaged, or not written for this repository)' };
    }
  }

  private encode(kind: AppendedKind, value: unknown): Buffer {
    return signObject(
      kind,
      this.repositoryId,
      sealJson(MAGIC[kind], this.metadataKey, value),
      this.signingKey(),
    );
  }
}

/**
 * Why a parsed record does not belong under its name, if it does not: each record can be stored
 * under one name only, so one copied or renamed (to show it twice, or at another time) is caught.
 */
export function nameMismatch(kind: AppendedKind, name: string, record: AppendedFields): string | undefined {
  const parts = parseStampedId(objectId(kind, name));
  if (!parts || parts.nonce !== record.nonce) return 'its name is not its own (copied or renamed)';
  if (parts.stamp !== timeStamp(new Date(record.started)))
    return `its name gives another time than its content (${record.started})`;
  return undefined;
}
