import { StorageError } from '../errors.ts';

/**
 * What the repository needs from a place to keep objects. Names are slash-separated paths
 * (`data/3f/3fa2…`); backends know nothing of what the bytes mean.
 */
export interface ObjectInfo {
  name: string;
  size: number;
}

export interface PutOptions {
  /**
   * The object may become durable only at the next `syncDeferred()`. For objects nothing refers
   * to until then (packs, before the index file that lists them): a crash may leave them damaged,
   * but unreferenced, so nothing is lost.
   */
  deferSync?: boolean;
  /**
   * The object must stay immutable for the repository's retention: on storage configured for it
   * (S3 Object Lock, Azure immutability policies) it can be neither deleted nor overwritten until
   * then. For what holds backed-up data (packs, index files, snapshots, endorsements); never for
   * what must stay changeable (locks, the config, key slots).
   */
  retain?: boolean;
}

export interface StorageBackend {
  /** Where the repository is, for messages; never contains a secret. */
  readonly location: string;
  /** How many `put`s a writer may keep in flight at once (each holds one pack in memory). */
  readonly concurrency: number;
  /** Stores `data` under `name` atomically: readers see all of it or nothing. Durable once resolved, unless deferred. */
  put(name: string, data: Uint8Array, options?: PutOptions): Promise<void>;
  /** Makes every object put with `deferSync` durable. */
  syncDeferred(): Promise<void>;
  get(name: string): Promise<Buffer>;
  getRange(name: string, offset: number, length: number): Promise<Buffer>;
  /** Every object whose name starts with `prefix` (a folder such as `snapshots/`), in no set order. */
  list(prefix: string): AsyncIterable<ObjectInfo>;
  stat(name: string): Promise<ObjectInfo | undefined>;
  /**
   * Removes `name`; removing an object that is not there is not an error. Throws ObjectLockedError,
   * deleting nothing, while the storage keeps the object immutable.
   */
  delete(name: string): Promise<void>;
  /**
   * Removes what writers that crashed or lost their connection left half-done (temporary files,
   * incomplete multipart uploads) and that no reader can see, if begun before `startedBefore`;
   * returns how many were removed.
   */
  removeIncompleteUploads(startedBefore: Date): Promise<number>;
  close(): Promise<void>;
}

/**
 * The storage refused an operation for lack of permission: a read-only mount or file system,
 * credentials that may only read. Readers can go on without writing (Repository.readLock).
 */
export class AccessDeniedError extends StorageError {}

export class ObjectNotFoundError extends StorageError {
  constructor(
    readonly objectName: string,
    location: string,
  ) {
    super(`${objectName} is missing from the repository at ${location}`, {
      hint: 'Run `strongbox check` to see what else is missing.',
    });
  }
}

/**
 * The storage keeps `objectName` immutable (S3 Object Lock, an Azure immutability policy), so it
 * cannot be deleted yet: a later run may delete it once `retainUntil` has passed. `retainUntil` is
 * undefined when the storage refused without saying until when.
 */
export class ObjectLockedError extends StorageError {
  constructor(
    readonly objectName: string,
    location: string,
    readonly retainUntil?: Date,
    cause?: unknown,
  ) {
    super(
      `${objectName} in ${location} is locked against deletion` +
        (retainUntil ? ` until ${retainUntil.toISOString()}` : ''),
      {
        hint: 'It can be deleted once its retention has passed; a later run will remove it.',
        cause,
      },
    );
  }
}
