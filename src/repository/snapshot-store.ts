import { createHash } from 'node:crypto';
import type { Identity } from '../crypto/key-wrap.ts';
import type { SigningKey } from '../crypto/signing.ts';
import {
  ConfigError,
  InterruptedError,
  KeyError,
  MalformedRecordError,
  SnapshotFilterMismatchError,
  SnapshotKindError,
  SnapshotsDisappearedError,
  VerificationError,
} from '../errors.ts';
import { ObjectLockedError, ObjectNotFoundError, type StorageBackend } from '../storage/backend.ts';
import { interruptBegun } from '../util/interrupt.ts';
import { folderOf, isContentId, objectId, objectName } from './layout.ts';
import type { LocalState, SeenSnapshot } from './local-state.ts';
import {
  decodeSnapshotBody,
  decodeSnapshotHeader,
  encodeSnapshot,
  MalformedSnapshot,
  splitSnapshot,
  type SnapshotBody,
  type SnapshotHeader,
  type SnapshotInfo,
  type SnapshotParts,
} from './snapshot.ts';
import type { WriterTrust } from './trust.ts';

export interface SnapshotFilter {
  kind?: string;
  name?: string;
  host?: string;
  /** Every one of these tags must be present. */
  tags?: string[];
  /** Only snapshots taken at or before this time. */
  before?: Date;
}

/** A file under snapshots/ that is not an intact, trusted snapshot. */
export interface DamagedSnapshot {
  /** Its name under snapshots/: a snapshot id, or whatever a stray file is called. */
  id: string;
  problem: string;
  /** The header, when it is intact and only the rest of the file is not (or its writer is not trusted). */
  header?: SnapshotHeader;
}

/** A snapshot this client saw earlier that is no longer in the repository. */
export interface DisappearedSnapshot {
  id: string;
  header: SeenSnapshot;
}

export interface SnapshotListing {
  snapshots: SnapshotInfo[];
  damaged: DamagedSnapshot[];
  /** Snapshots this client listed before and that have since been deleted (local state). */
  disappeared: DisappearedSnapshot[];
}

export const NOT_A_SNAPSHOT = 'not a snapshot: a stray file, whose name is not a snapshot id';

/** How far ahead of this clock a snapshot's time may be before it is flagged. */
export const FUTURE_TOLERANCE_MS = 5 * 60 * 1000;

/** What the store needs from the session that opened the repository. */
export interface SnapshotKeys {
  readonly repositoryId: string;
  readonly metadataKey: Buffer;
  recipients(): readonly Buffer[];
  signingKey(): SigningKey;
  /** The identities that unwrap snapshot bodies; undefined for a write-only key. */
  identities(): readonly Identity[] | undefined;
}

/**
 * Snapshot files (`snapshots/<sha256>`): writing them signed, and listing, finding and reading
 * only those whose writer the signed config trusts (trust.ts). Listings feed the local state,
 * which then tells when a snapshot seen before has disappeared.
 */
export class SnapshotStore {
  constructor(
    private readonly backend: StorageBackend,
    private readonly keys: SnapshotKeys,
    private readonly trust: WriterTrust,
    private readonly state: LocalState | undefined,
    private readonly onWarning: (message: string) => void,
    /** Snapshots a full key removed (removal records): not listed, and not missed when gone. */
    private readonly removed: (fresh?: boolean) => Promise<ReadonlySet<string>>,
  ) {}

  async save(header: SnapshotHeader, body: SnapshotBody): Promise<{ id: string; size: number }> {
    // `pg_dump | strongbox backup stdin` and Ctrl-C: the stream ends because pg_dump died.
    if (interruptBegun()) throw new InterruptedError('interrupted: the snapshot was not written');
    const { id, bytes } = encodeSnapshot(header, body, this.keys.metadataKey, this.keys.recipients(), {
      repositoryId: this.keys.repositoryId,
      key: this.keys.signingKey(),
    });
    await this.backend.put(objectName('snapshot', id), bytes, { retain: true });
    if (this.state) {
      this.state.see([{ id, header }]);
      await this.state.save();
    }
    return { id, size: bytes.length };
  }

  /**
   * Deletes snapshot files whose removal a removal record already made durable; returns the
   * files the storage refused to delete because they are locked (S3 Object Lock). Removed from
   * the local state either way: they are gone for every client that trusts the record.
   */
  async deleteRemoved(ids: readonly string[]): Promise<ObjectLockedError[]> {
    const locked: ObjectLockedError[] = [];
    for (const id of ids) {
      try {
        await this.backend.delete(objectName('snapshot', id));
      } catch (error) {
        if (!(error instanceof ObjectLockedError)) throw error;
        locked.push(error);
      }
    }
    if (this.state) {
      this.state.forgetSnapshots(ids);
      await this.state.save();
    }
    return locked;
  }

  /** Every trusted snapshot's header, oldest first. */
  async list(filter: SnapshotFilter = {}): Promise<SnapshotInfo[]> {
    return (await this.scan(filter)).snapshots;
  }

  /**
   * Every snapshot file: the intact, trusted ones, oldest first, and apart from them the damaged
   * or untrusted ones and stray files, so that one bad file does not hide the others. A damaged
   * snapshot whose header cannot be read might match any filter, so it is always among `damaged`.
   */
  async scan(filter: SnapshotFilter = {}): Promise<SnapshotListing> {
    const snapshots: SnapshotInfo[] = [];
    const damaged: DamagedSnapshot[] = [];
    const present = new Set<string>();
    const removed = await this.removed();
    for await (const object of this.backend.list(folderOf('snapshot'))) {
      const id = objectId('snapshot', object.name);
      if (!isContentId(id)) {
        damaged.push({ id, problem: NOT_A_SNAPSHOT });
        continue;
      }
      // Removed, its file not deleted yet (a crash, or a storage lock): the next prune deletes it.
      if (removed.has(id)) {
        present.add(id);
        continue;
      }
      let bytes: Buffer;
      try {
        bytes = await this.backend.get(object.name);
      } catch (error) {
        // Removed by a forget between the listing and the read: gone, as its removal record says.
        if (error instanceof ObjectNotFoundError) continue;
        throw error;
      }
      present.add(id);
      const read = await this.read(id, bytes);
      if ('problem' in read) {
        if (!read.header || matches(read.header, filter)) damaged.push(read);
      } else if (matches(read.info.header, filter)) snapshots.push(read.info);
    }
    snapshots.sort((a, b) => a.header.time.localeCompare(b.header.time) || a.id.localeCompare(b.id));
    damaged.sort((a, b) => a.id.localeCompare(b.id));
    let disappeared: DisappearedSnapshot[] = [];
    if (this.state) {
      this.state.forgetSnapshots(removed);
      disappeared = this.state.disappeared(present);
      if (disappeared.length > 0) {
        // Removed since the records were read (a forget running meanwhile): read them again.
        this.state.forgetSnapshots(await this.removed(true));
        disappeared = this.state.disappeared(present);
      }
      disappeared = disappeared.filter((gone) => matches(gone.header, filter));
      this.state.see(snapshots);
      await this.state.save();
    }
    return { snapshots, damaged, disappeared };
  }

  /** One snapshot file, judged: its header and writer, or what is wrong with it. */
  private async read(
    id: string,
    bytes: Buffer,
  ): Promise<{ info: SnapshotInfo; parts: SnapshotParts } | DamagedSnapshot> {
    let parts: SnapshotParts;
    try {
      parts = splitSnapshot(bytes);
    } catch (error) {
      return { id, problem: error instanceof MalformedSnapshot ? error.message : String(error) };
    }
    if (createHash('sha256').update(bytes).digest('hex') !== id)
      return { id, problem: 'its content does not match its name', ...this.headerOrNothing(id, parts) };
    let header: SnapshotHeader;
    try {
      header = decodeSnapshotHeader(parts, this.keys.metadataKey, id);
    } catch (error) {
      if (error instanceof MalformedRecordError) return { id, problem: error.message };
      return { id, problem: 'its header fails authentication' };
    }
    const verdict = await this.trust.judge('snapshot', id, bytes, parts.signed);
    if (!verdict.trusted) return { id, problem: `not trusted: ${verdict.problem}`, header };
    const future = Date.parse(header.time) > Date.now() + FUTURE_TOLERANCE_MS;
    return { info: { id, header, writer: verdict.writer, ...(future ? { future } : {}) }, parts };
  }

  private headerOrNothing(id: string, parts: SnapshotParts): { header?: SnapshotHeader } {
    try {
      return { header: decodeSnapshotHeader(parts, this.keys.metadataKey, id) };
    } catch {
      return {};
    }
  }

  async load(id: string): Promise<SnapshotInfo & { body: SnapshotBody }> {
    const identities = this.keys.identities();
    if (!identities)
      throw new KeyError('a write-only key cannot read snapshot contents', {
        hint: 'Use a full key (its password or identity file) for this.',
      });
    const read = await this.read(id, await this.backend.get(objectName('snapshot', id)));
    if ('problem' in read)
      throw new VerificationError(`snapshot ${shortName(id)} is damaged: ${read.problem}`, {
        hint: 'Run `strongbox check`.',
      });
    try {
      return { ...read.info, body: decodeSnapshotBody(read.parts, identities, id) };
    } catch (cause) {
      if (cause instanceof MalformedRecordError) throw cause;
      throw new VerificationError(`snapshot ${shortName(id)} is damaged`, {
        cause,
        hint: 'Run `strongbox check`.',
      });
    }
  }

  /**
   * Resolves `latest` (the newest trusted snapshot `filter` selects, with a warning for each
   * damaged one that might have been newer), a full id or a unique id prefix to a snapshot. An id
   * names one snapshot whatever the filters: one they would not select is refused, saying why,
   * rather than reported missing, and an id of a damaged snapshot is a VerificationError.
   * `latest` never picks a snapshot dated in the future, and is refused when a newer snapshot
   * this client saw has disappeared: it would quietly be older data.
   */
  async find(reference: string, filter: SnapshotFilter = {}): Promise<SnapshotInfo> {
    if (reference === 'latest') {
      const { snapshots, damaged, disappeared } = await this.scan(filter);
      const candidates = snapshots.filter((snapshot) => {
        if (!snapshot.future) return true;
        this.onWarning(
          `snapshot ${shortName(snapshot.id)} is dated ${snapshot.header.time}, in the future: not taken as latest (name it to use it)`,
        );
        return false;
      });
      const latest = candidates.at(-1);
      for (const skipped of damaged) {
        if (!skipped.header || !latest || skipped.header.time > latest.header.time)
          this.onWarning(`skipped damaged snapshot ${shortName(skipped.id)}: ${skipped.problem}`);
      }
      const newerGone = disappeared.filter((gone) => !latest || gone.header.time > latest.header.time);
      if (newerGone.length > 0) throw new SnapshotsDisappearedError(newerGone.map((gone) => gone.id));
      if (!latest)
        throw new ConfigError('there is no snapshot to use', {
          hint: 'Check the filters, or run `strongbox snapshots`.',
        });
      return latest;
    }
    const { snapshots, damaged } = await this.scan();
    const prefix = reference.toLowerCase();
    const found = snapshots.filter((snapshot) => snapshot.id.startsWith(prefix));
    const foundDamaged = damaged.filter((snapshot) => snapshot.id.startsWith(prefix));
    if (found.length + foundDamaged.length > 1)
      throw new ConfigError(`snapshot id ${reference} is ambiguous`, {
        hint: 'Give more characters of the id.',
      });
    if (foundDamaged.length === 1) {
      const { id, problem } = foundDamaged[0]!;
      throw new VerificationError(`snapshot ${shortName(id)} is damaged: ${problem}`, {
        hint: 'Restore another snapshot; `strongbox check` lists what is damaged.',
      });
    }
    if (found.length === 0)
      throw new ConfigError(`no snapshot ${reference}`, { hint: 'Run `strongbox snapshots` to list them.' });
    const snapshot = found[0]!;
    const { header } = snapshot;
    if (filter.kind && header.kind !== filter.kind)
      throw new SnapshotKindError(snapshot.id, header.kind, header.name, filter.kind);
    const failed = failedFilters(header, filter);
    if (failed.length > 0)
      throw new SnapshotFilterMismatchError(
        `snapshot ${snapshot.id.slice(0, 8)} is not one the filters select`,
        snapshot.id,
        failed,
      );
    return snapshot;
  }
}

function matches(header: SeenSnapshot, filter: SnapshotFilter): boolean {
  return failedFilters(header, filter).length === 0;
}

function failedFilters(header: SeenSnapshot, filter: SnapshotFilter): (keyof SnapshotFilter)[] {
  const failed: (keyof SnapshotFilter)[] = [];
  if (filter.kind && header.kind !== filter.kind) failed.push('kind');
  if (filter.name && header.name !== filter.name) failed.push('name');
  if (filter.host && header.host !== filter.host) failed.push('host');
  if (filter.tags && !filter.tags.every((tag) => header.tags.includes(tag))) failed.push('tags');
  if (filter.before && Date.parse(header.time) > filter.before.getTime()) failed.push('before');
  return failed;
}

export function isSnapshotId(name: string): boolean {
  return isContentId(name);
}

/** A snapshot id as shown to people: its first 8 characters; a stray file's name in full. */
export function shortName(id: string): string {
  return isSnapshotId(id) ? id.slice(0, 8) : id;
}
