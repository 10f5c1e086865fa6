import os from 'node:os';
import type { Identity } from '../crypto/key-wrap.ts';
import type { SigningKey } from '../crypto/signing.ts';
import { DamagedWalError, InvalidWalNameError, WalConflictError, WalTooLargeError } from '../errors.ts';
import {
  ObjectLockedError,
  ObjectNotFoundError,
  type ObjectInfo,
  type StorageBackend,
} from '../storage/backend.ts';
import { forEachLimited } from '../util/each-limited.ts';
import { PROGRAM } from '../version.ts';
import { isWalTimeline, objectName, walFileKind, walFileOf, walFolder } from './layout.ts';
import { LIMITS } from './schemas.ts';
import { SIGNATURE_TRAILER_LENGTH, trailerDigest } from './signed-object.ts';
import type { WriterTrust } from './trust.ts';
import type { WalEncoder } from './wal-encoder.ts';
import {
  decodeWalContent,
  decodeWalHeader,
  encodeWal,
  MalformedWal,
  MAX_WAL_OBJECT,
  splitWal,
  type WalHeader,
  type WalParts,
  walSealedFrames,
} from './wal-file.ts';

export type { WalHeader } from './wal-file.ts';

/** Trailer reads in flight at once during key retirement: small requests, mostly waiting on latency. */
const TRAILER_READS = 16;

/** What the store needs from the session that opened the repository. */
export interface WalKeys {
  repositoryId(): string;
  readonly metadataKey: Buffer;
  /** The key blob ids are made with, for an encoder working on another thread. */
  readonly blobIdKey: Buffer;
  blobId(data: Uint8Array): string;
  recipients(): readonly Buffer[];
  signingKey(): SigningKey;
  /** The identities that unwrap WAL data keys; throws a KeyError for a write-only key. */
  identities(action: string): readonly Identity[];
}

/** What `verify` found of a WAL object that passed. */
export interface VerifiedWal<Content> {
  header: WalHeader;
  /** Bytes stored. */
  storedSize: number;
  content: Content;
}

export interface WalListing {
  name: string;
  /** Bytes stored, as the storage lists them (not the file's own size, which is in its header). */
  size: number;
}

/** A WAL object's signer and the digest an endorsement names it by, for key retirement. */
export interface WalSignature {
  /** The signer's Ed25519 public key, base64, as the config lists writers. */
  signer: string;
  digest: string;
}

/**
 * WAL files PostgreSQL archives (`archive_command`), each one object of its own (wal-file.ts).
 * A push is idempotent and never overwrites: PostgreSQL runs archive_command again for a file it
 * is not sure was archived, and a different file under the same name is a conflict to look into.
 * Every read is judged as snapshots are (trust.ts): a current writer's signature, write-only keys
 * included, or an endorsement. The store holds no state of its own, so pushes may run at once.
 */
export class WalStore {
  constructor(
    private readonly backend: StorageBackend,
    private readonly keys: WalKeys,
    private readonly trust: WriterTrust,
    private readonly onWarning: (message: string) => void,
  ) {}

  /**
   * Archives `content` as WAL file `name`, durable once this resolves. When a trusted object of
   * that name holds the same content, nothing is written (`stored: false`); any other object of
   * that name is a WalConflictError. The name is looked up before anything is encoded, so a file
   * pushed again costs one read. With `encoder`, the object is made on its threads and
   * `content`'s memory moves there: the caller must not read it once this is called. `pushed`
   * keeps when and from where the file was first archived, for a copy from another repository.
   */
  async push(
    name: string,
    content: Uint8Array,
    { pushed, encoder }: { pushed?: { time: string; host: string }; encoder?: WalEncoder } = {},
  ): Promise<{ stored: boolean; storedSize: number }> {
    requireWalName(name);
    const size = content.length;
    if (size > LIMITS.walContent) throw new WalTooLargeError(name, size, LIMITS.walContent);
    const existing = await this.getOrUndefined(name);
    if (existing) {
      let header: WalHeader;
      try {
        header = (await this.readHeader(name, existing)).header;
      } catch (error) {
        if (!(error instanceof DamagedWalError)) throw error;
        throw new WalConflictError(name, 'untrusted', error.problem);
      }
      if (header.size !== size || header.mac !== this.keys.blobId(content))
        throw new WalConflictError(name, 'differs');
      return { stored: false, storedSize: existing.length };
    }
    const header = {
      version: 1 as const,
      name,
      size,
      time: pushed?.time ?? new Date().toISOString(),
      host: pushed?.host ?? os.hostname(),
      program: PROGRAM,
    };
    const signingKey = this.keys.signingKey();
    const bytes = encoder
      ? (
          await encoder.encode({
            header,
            content,
            blobIdKey: this.keys.blobIdKey,
            metadataKey: this.keys.metadataKey,
            recipients: this.keys.recipients(),
            repositoryId: this.keys.repositoryId(),
            signingKey: signingKey.privateRaw,
          })
        ).bytes
      : encodeWal(
          { ...header, mac: this.keys.blobId(content) },
          content,
          this.keys.metadataKey,
          this.keys.recipients(),
          { repositoryId: this.keys.repositoryId(), key: signingKey },
        );
    // Not deferred: PostgreSQL may recycle the segment as soon as archive_command succeeds.
    await this.backend.put(objectName('wal', name), bytes, { retain: true });
    return { stored: true, storedSize: bytes.length };
  }

  /** The content of WAL file `name`, verified; undefined when the repository holds no such file. */
  async fetch(name: string): Promise<Buffer | undefined> {
    requireWalName(name);
    const identities = this.keys.identities('fetch WAL files');
    const bytes = await this.getOrUndefined(name);
    if (!bytes) return undefined;
    const { parts, header } = await this.readHeader(name, bytes);
    try {
      return decodeWalContent(parts, header, identities, (content) => this.keys.blobId(content));
    } catch (error) {
      if (error instanceof MalformedWal) throw new DamagedWalError(name, error.message, error);
      throw error;
    }
  }

  /**
   * Reads WAL object `name` whole and judges it as `fetch` does, for `check` and `copy`: a trusted
   * writer, a header that opens and names this file, frames as many and as large as the header
   * says, the object within the size any WAL file takes; with `content`, its content decrypted and
   * checked against the header's mac too (a full key's work), and returned. Undefined when the
   * object is gone; DamagedWalError for what is wrong.
   */
  async verify(name: string, options: { content: true }): Promise<VerifiedWal<Buffer> | undefined>;
  async verify(name: string, options: { content: false }): Promise<VerifiedWal<undefined> | undefined>;
  async verify(
    name: string,
    options: { content: boolean },
  ): Promise<VerifiedWal<Buffer | undefined> | undefined> {
    requireWalName(name);
    const identities = options.content ? this.keys.identities('read WAL files') : undefined;
    const bytes = await this.getOrUndefined(name);
    if (!bytes) return undefined;
    if (bytes.length > MAX_WAL_OBJECT)
      throw new DamagedWalError(name, `it is ${bytes.length} bytes, more than any WAL file takes`);
    const { parts, header } = await this.readHeader(name, bytes);
    try {
      walSealedFrames(parts, header);
      const content = identities
        ? decodeWalContent(parts, header, identities, (plain) => this.keys.blobId(plain))
        : undefined;
      return { header, storedSize: bytes.length, content };
    } catch (error) {
      if (error instanceof MalformedWal) throw new DamagedWalError(name, error.message, error);
      throw error;
    }
  }

  /** The header of WAL file `name`, from a trusted object (its content is not read); undefined when absent. */
  async header(name: string): Promise<WalHeader | undefined> {
    requireWalName(name);
    const bytes = await this.getOrUndefined(name);
    return bytes ? (await this.readHeader(name, bytes)).header : undefined;
  }

  /**
   * The WAL files stored, of one timeline or of all, sorted by name, as the storage lists them:
   * nothing is read. Objects under wal/ that strongbox would not have named so are skipped, with
   * a warning.
   */
  async list(timeline?: string): Promise<WalListing[]> {
    if (timeline !== undefined && !isWalTimeline(timeline))
      throw new InvalidWalNameError(timeline, 'timeline');
    const files: WalListing[] = [];
    for await (const object of this.backend.list(walFolder(timeline))) {
      const name = walFileOf(object.name);
      if (name === undefined)
        this.onWarning(`skipped ${object.name}: not a WAL file strongbox would store there`);
      else files.push({ name, size: object.size });
    }
    return files.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  /**
   * Deletes WAL files a removal record already names (full keys decide that: the caller wrote the
   * record first). Returns those the storage keeps locked for now; files already gone are skipped.
   */
  async remove(names: readonly string[]): Promise<ObjectLockedError[]> {
    const locked: ObjectLockedError[] = [];
    for (const name of names) {
      requireWalName(name);
      try {
        await this.backend.delete(objectName('wal', name));
      } catch (error) {
        if (error instanceof ObjectLockedError) locked.push(error);
        else if (!(error instanceof ObjectNotFoundError)) throw error;
      }
    }
    return locked;
  }

  /**
   * Who signed each WAL object, read from its trailer alone (one small range read each): key
   * retirement endorses those of the retiring keys. A signature is not checked here; a reader
   * checks it before the endorsement counts.
   */
  async signatures(): Promise<WalSignature[]> {
    const objects: ObjectInfo[] = [];
    for await (const object of this.backend.list(walFolder()))
      if (walFileOf(object.name) !== undefined && object.size >= SIGNATURE_TRAILER_LENGTH)
        objects.push(object);
    const found: WalSignature[] = [];
    await forEachLimited(objects, TRAILER_READS, async ({ name, size }) => {
      let trailer: Buffer;
      try {
        trailer = await this.backend.getRange(
          name,
          size - SIGNATURE_TRAILER_LENGTH,
          SIGNATURE_TRAILER_LENGTH,
        );
      } catch (error) {
        if (error instanceof ObjectNotFoundError) return;
        throw error;
      }
      found.push({ signer: trailer.subarray(0, 32).toString('base64'), digest: trailerDigest(trailer) });
    });
    return found;
  }

  /** The object's parts and header, once its writer is trusted and its header names it. */
  private async readHeader(name: string, bytes: Buffer): Promise<{ parts: WalParts; header: WalHeader }> {
    let parts: WalParts;
    let header: WalHeader;
    try {
      parts = splitWal(bytes);
      const verdict = await this.trust.judgeWal(bytes, parts.signed);
      if (!verdict.trusted) throw new MalformedWal(`it is not trusted: ${verdict.problem}`);
      header = decodeWalHeader(parts, this.keys.metadataKey, name);
    } catch (error) {
      if (error instanceof MalformedWal) throw new DamagedWalError(name, error.message, error);
      throw error;
    }
    if (header.name !== name)
      throw new DamagedWalError(name, `its header names ${header.name}: it was moved or copied from there`);
    return { parts, header };
  }

  private async getOrUndefined(name: string): Promise<Buffer | undefined> {
    try {
      return await this.backend.get(objectName('wal', name));
    } catch (error) {
      if (error instanceof ObjectNotFoundError) return undefined;
      throw error;
    }
  }
}

function requireWalName(name: string): void {
  if (walFileKind(name) === undefined) throw new InvalidWalNameError(name);
}
