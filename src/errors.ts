import type { SnapshotFilter } from './repository/snapshot-store.ts';

/**
 * Every failure strongbox reports is one of these. Only the CLI entry point turns them into
 * exit codes; library callers branch on the class or on `exitCode`.
 */
export const ExitCode = {
  ok: 0,
  general: 1,
  missingDependency: 2,
  usage: 3,
  sourceFailed: 4,
  key: 5,
  storage: 6,
  verification: 7,
  threshold: 8,
} as const;

export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode];

export interface ErrorDetails {
  /**
   * What the user should do about it, one short sentence, without command-line flags: an error
   * that a different call would resolve says so in fields of its own, which cli/hints.ts words.
   */
  hint?: string;
  cause?: unknown;
}

export class StrongboxError extends Error {
  readonly exitCode: ExitCodeValue = ExitCode.general;
  readonly hint: string | undefined;

  constructor(message: string, details: ErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = new.target.name;
    this.hint = details.hint;
  }
}

export class MissingDependencyError extends StrongboxError {
  override readonly exitCode = ExitCode.missingDependency;
}

export class ConfigError extends StrongboxError {
  override readonly exitCode = ExitCode.usage;
}

export class SourceError extends StrongboxError {
  override readonly exitCode = ExitCode.sourceFailed;
}

export class KeyError extends StrongboxError {
  override readonly exitCode = ExitCode.key;
}

/**
 * No key slot opens with the password given. Slots skipped as invalid (a stray or planted file, a
 * slot whose costs are refused) are counted: the password may be right and its slot among them.
 */
export class WrongPasswordError extends KeyError {
  constructor(
    readonly location: string,
    /** Names of the files under keys/ that were skipped as invalid, each already warned about. */
    readonly skippedSlots: readonly string[],
  ) {
    const skipped = skippedSlots.length;
    super(
      `wrong password: no key of the repository at ${location} opens with it` +
        (skipped === 0
          ? ''
          : ` (${skipped} key ${skipped === 1 ? 'slot was' : 'slots were'} skipped as invalid)`),
    );
  }
}

export class StorageError extends StrongboxError {
  override readonly exitCode = ExitCode.storage;
}

export class VerificationError extends StrongboxError {
  override readonly exitCode = ExitCode.verification;
}

/** A measured figure beyond the limit it was given: a drill's recovery time or point over its objective. */
export class ThresholdError extends StrongboxError {
  override readonly exitCode = ExitCode.threshold;
}

/**
 * A record read from the repository that is not what strongbox writes (a snapshot's PostgreSQL
 * details, say): refused rather than used, since storage may have been written by an attacker.
 */
export class UntrustedRecordError extends VerificationError {}

/** A stored object of the repository: its kind ("index file", "tree", "lock") and its id or name. */
export interface RecordName {
  kind: string;
  id: string;
}

/**
 * A record that does not match the schema of what strongbox writes: which object, where in it
 * (the path of the first problem, as `packs[0].blobs[3][2]`), and what is wrong there.
 */
export class MalformedRecordError extends UntrustedRecordError {
  constructor(
    readonly record: RecordName,
    readonly path: readonly PropertyKey[],
    readonly problem: string,
    cause?: unknown,
  ) {
    const where = path.length > 0 ? `${formatPath(path)}: ` : '';
    super(`${record.kind} ${shortId(record.id)}: ${where}${problem}`, {
      cause,
      hint: 'It is damaged or was not written by strongbox; run `strongbox check`.',
    });
  }
}

/** `packs[0].blobs[3]`, `databases["weird/name"].tables`: a path into a record as code would write it. */
export function formatPath(path: readonly PropertyKey[]): string {
  return path
    .map((key, i) => {
      if (typeof key === 'number') return `[${key}]`;
      const name = String(key);
      if (/^[A-Za-z_$][\w$]*$/.test(name)) return i === 0 ? name : `.${name}`;
      return `[${JSON.stringify(name)}]`;
    })
    .join('');
}

/** Long hex ids (64 digits) shortened as elsewhere in messages; other names kept whole. */
function shortId(id: string): string {
  return /^[0-9a-f]{64}$/.test(id) ? `${id.slice(0, 8)}…` : id;
}

/** A blob cannot be read back: its pack is missing or truncated, or its bytes fail authentication. */
export class DamagedBlobError extends VerificationError {
  constructor(
    readonly blob: string,
    readonly pack: string,
    /** What is wrong, e.g. "its pack is missing". */
    readonly reason: string,
    cause?: unknown,
  ) {
    super(`blob ${blob.slice(0, 16)} in pack ${pack.slice(0, 16)} is damaged: ${reason}`, {
      cause,
      hint: 'Run `strongbox check --read-data` to see which snapshots are affected.',
    });
  }
}

/** The repository is held by another process whose lock excludes ours. */
export class LockedError extends StrongboxError {}

/**
 * A writer's lock went unrefreshed long enough that others may have taken it for stale, so a
 * prune may have deleted what its work uses: it writes no snapshot.
 */
export class LockLostError extends LockedError {
  constructor(readonly lock: { operation: string; created: string; refreshed: string }) {
    super(
      `the ${lock.operation} lock was last refreshed at ${lock.refreshed}, too long ago to be sure no prune took it for stale: no snapshot was written`,
      { hint: 'Run it again; nothing it wrote is referenced yet.' },
    );
  }
}

/** The process is stopping on SIGINT or SIGTERM; the CLI has said so already. */
export class InterruptedError extends StrongboxError {}

/** A snapshot named by id is of another kind than the operation restores (a files snapshot given to a database restore). */
export class SnapshotKindError extends ConfigError {
  constructor(
    readonly snapshot: string,
    readonly kind: string,
    /** What the snapshot holds: the database, the stdin name, the first path. */
    readonly holds: string,
    readonly wanted: string,
  ) {
    super(`snapshot ${snapshot.slice(0, 8)} is a ${kind} snapshot (${holds}), not a ${wanted} one`);
  }
}

/**
 * The repository's config is older than one this client has already trusted: storage was rolled
 * back, perhaps to bring back a key or a recipient that a rotation retired.
 */
export class ConfigRollbackError extends VerificationError {
  constructor(
    readonly trustedEpoch: number,
    readonly foundEpoch: number,
    /** The local state file that remembers the trusted config. */
    readonly stateFile: string,
  ) {
    super(
      foundEpoch < trustedEpoch
        ? `the repository config (epoch ${foundEpoch}) is older than one this client has trusted (epoch ${trustedEpoch}): it was rolled back`
        : `the repository config (epoch ${foundEpoch}) differs from the one this client trusted at that epoch`,
      {
        hint: 'Someone with access to the storage replaced the config; do not write to this repository until you know why.',
      },
    );
  }
}

/** The repository is of an older format version that this strongbox reads only to migrate it. */
export class LegacyFormatError extends ConfigError {
  constructor(
    readonly location: string,
    readonly version: number,
  ) {
    super(`the repository at ${location} is of format version ${version}`, {
      hint: 'Upgrade it with `strongbox migrate` and a full key (it rewrites metadata only, never data).',
    });
  }
}

/** A key of format 1, left behind by `strongbox migrate`, which carries no key over. */
export class LegacyKeyError extends KeyError {
  constructor() {
    super('this key belongs to format version 1 of the repository, which has been migrated', {
      hint: 'Keys are not carried over by `strongbox migrate`: ask for a new key (`strongbox key add`).',
    });
  }
}

/**
 * The key opened is no longer one of the repository's writers: removed, or (a write-only key)
 * issued before a rotation replaced the administrator key it trusts.
 */
export class RetiredKeyError extends KeyError {
  constructor(
    readonly kind: 'full' | 'write-only',
    readonly byRotation: boolean,
  ) {
    super(
      byRotation
        ? `this ${kind} key was issued before the repository's keys were rotated, and no longer writes`
        : `this ${kind} key has been removed from the repository`,
      {
        hint:
          kind === 'write-only'
            ? 'Issue a new write-only key with a full key (`strongbox key add --write-only`) and replace this one.'
            : 'Ask for a new key (`strongbox key add`) from someone with a current full key.',
      },
    );
  }
}

/** Snapshots this client has seen in the repository are gone, and no full key removed them. */
export class SnapshotsDisappearedError extends VerificationError {
  constructor(readonly snapshots: readonly string[]) {
    super(
      `${snapshots.length} snapshot${snapshots.length === 1 ? '' : 's'} this client saw earlier ${snapshots.length === 1 ? 'has' : 'have'} disappeared: ${snapshots.map((id) => id.slice(0, 8)).join(', ')}`,
      { hint: 'Someone deleted them from the storage; restore by id, and find out who.' },
    );
  }
}

/**
 * Prune cannot know what a damaged or untrusted snapshot file references, so it deletes nothing
 * rather than what such a snapshot might need.
 */
export class PruneBlockedError extends VerificationError {
  constructor(readonly snapshots: readonly string[]) {
    super(
      `prune deletes nothing while ${snapshots.length === 1 ? 'a snapshot is' : `${snapshots.length} snapshots are`} damaged or not trusted: ${snapshots.map((id) => id.slice(0, 8)).join(', ')}`,
      {
        hint: 'Run `strongbox check` to see why; remove them with `strongbox forget <id>` if they are to go.',
      },
    );
  }
}

/**
 * A database URL that holds a password: refused, since URLs are given as command-line arguments,
 * which every user of the host can read (ps, /proc/<pid>/cmdline).
 */
export class PasswordInUrlError extends ConfigError {
  constructor(
    /** The URL without its password. */
    readonly location: string,
  ) {
    super(`the database URL ${location} holds a password, which would be visible in the process list`);
  }
}

/** Nothing at a location is a strongbox repository. */
export class NoRepositoryError extends ConfigError {
  constructor(readonly location: string) {
    super(`there is no strongbox repository at ${location}`, {
      hint: 'Check the location, or create a repository there with `strongbox init`.',
    });
  }
}

/** A snapshot named by id that filters given with it do not select. */
export class SnapshotFilterMismatchError extends ConfigError {
  constructor(
    message: string,
    readonly snapshot: string,
    /** The filters it fails. */
    readonly filters: readonly (keyof SnapshotFilter)[],
  ) {
    super(message);
  }
}

/**
 * Which database of a snapshot to use is not clear: the snapshot (or the snapshots that match)
 * hold several and none was named, or the one `named` is not among them.
 */
export class DatabaseChoiceError extends ConfigError {
  constructor(
    message: string,
    /** The databases to choose from. */
    readonly databases: readonly string[],
    readonly named?: string,
  ) {
    super(message);
  }
}

/**
 * A database a restore would create exists already. `resolution` is what restores it anyway:
 * `replace`, the same restore told to replace it; `replace-alone`, a restore of that database
 * alone told to replace it (a cluster restore replaces nothing); `another-name`, nothing but a
 * name that is free (a drill restores only into a database of its own).
 */
export class TargetExistsError extends ConfigError {
  constructor(
    readonly database: string,
    /** The server, as messages show it. */
    readonly server: string,
    readonly resolution: 'replace' | 'replace-alone' | 'another-name',
    /** It did not exist yet when the restore began. */
    { createdDuringRestore = false } = {},
  ) {
    super(
      createdDuringRestore
        ? `database ${database} was created on ${server} during the restore`
        : `database ${database} already exists on ${server}`,
    );
  }
}

/** Replacing a database was not confirmed (PostgresRestoreOptions.confirm). */
export class ReplaceNotConfirmedError extends ConfigError {
  constructor(readonly database: string) {
    super(`replacing database ${database} was not confirmed`);
  }
}

/** Options of one call that exclude each other, by their names in the library's options. */
export class ConflictingOptionsError extends ConfigError {
  constructor(
    message: string,
    readonly options: readonly string[],
  ) {
    super(message);
  }
}

/** A directory to restore into holds something already, and overwriting it was not asked for. */
export class TargetNotEmptyError extends ConfigError {
  constructor(readonly directory: string) {
    super(`${directory} is not empty`, { hint: 'Choose an empty directory.' });
  }
}

/**
 * A PostgreSQL client program (pg_dump, psql…) is missing, or older than `version`, the major
 * version the server needs.
 */
export class MissingToolError extends MissingDependencyError {
  constructor(
    message: string,
    readonly tool: string,
    readonly version?: number,
  ) {
    super(message, {
      hint:
        version === undefined
          ? 'Install the PostgreSQL client programs (Debian: postgresql-client).'
          : `Install the PostgreSQL ${version} client programs (Debian: postgresql-client-${version}).`,
    });
  }
}

/** A file or directory a backup was to read cannot be read; `code` is the system's (EACCES, EIO…). */
export class UnreadableFileError extends SourceError {
  constructor(
    readonly path: string,
    readonly code: string | undefined,
    cause: unknown,
  ) {
    super(`cannot read ${path}: ${code ?? (cause instanceof Error ? cause.message : String(cause))}`, {
      hint:
        code === 'EACCES' || code === 'EPERM'
          ? 'Run the backup as a user that can read it.'
          : 'Check the disk and filesystem.',
      cause,
    });
  }
}

/** `reference` (an id prefix, or latest) names no snapshot in the source repository of a copy. */
export class SourceSnapshotNotFoundError extends ConfigError {
  constructor(
    readonly reference: string,
    /** The source repository's location. */
    readonly location: string,
  ) {
    super(
      reference === 'latest'
        ? `the source repository at ${location} has no snapshot to copy`
        : `no snapshot ${reference} in the source repository at ${location}`,
      {
        hint:
          reference === 'latest'
            ? "Check the filters, or list the source repository's snapshots."
            : "List the source repository's snapshots (the filters given apply too).",
      },
    );
  }
}

/** A name that is not one of the WAL files PostgreSQL archives (docs/FORMAT.md, "WAL files"). */
export class InvalidWalNameError extends ConfigError {
  constructor(
    /** The name given, as given. */
    readonly fileName: string,
    readonly what: 'file' | 'timeline' = 'file',
  ) {
    super(
      `${JSON.stringify(fileName.slice(0, 100))} is not ${what === 'file' ? 'the name of a WAL file' : 'a WAL timeline'} as PostgreSQL writes it`,
      {
        hint:
          what === 'file'
            ? 'Give the file name PostgreSQL passes (%f): a segment, .partial, .backup or .history file, in uppercase hex.'
            : 'A timeline is 8 uppercase hex digits, as the first 8 of a segment name.',
      },
    );
  }
}

/** A WAL file larger than strongbox archives (a wal_segment_size above the limit). */
export class WalTooLargeError extends ConfigError {
  constructor(
    readonly fileName: string,
    readonly size: number,
    readonly limit: number,
  ) {
    super(`WAL file ${fileName} is ${size} bytes, more than the ${limit} strongbox archives`, {
      hint: 'strongbox archives WAL segments of up to 64 MiB (wal_segment_size): use a smaller segment size.',
    });
  }
}

/**
 * A stored WAL file that cannot be believed: damaged, moved or copied from another name, or not
 * signed by a writer of the repository (nor endorsed).
 */
export class DamagedWalError extends VerificationError {
  constructor(
    readonly fileName: string,
    /** What is wrong, e.g. "frame 3 fails authentication". */
    readonly problem: string,
    cause?: unknown,
  ) {
    super(`WAL file ${fileName} in the repository is damaged or not trusted: ${problem}`, {
      cause,
      hint: 'Do not recover with it: inspect the stored object, and find out who wrote it.',
    });
  }
}

/**
 * A WAL file is already stored under the name pushed, and it is not this content: `differs`,
 * trusted but with other content; `untrusted`, damaged or not trusted (`problem` says why), and so
 * not overwritten, since a planted object is evidence to inspect.
 */
export class WalConflictError extends VerificationError {
  constructor(
    readonly fileName: string,
    readonly reason: 'differs' | 'untrusted',
    readonly problem?: string,
  ) {
    super(
      reason === 'differs'
        ? `WAL file ${fileName} is already archived with different content`
        : `WAL file ${fileName} is already in the repository, damaged or not trusted (${problem ?? 'unknown problem'}): it was not overwritten`,
      {
        hint:
          reason === 'differs'
            ? 'Two clusters may be archiving into one repository, or the stored file is from an earlier cluster: inspect both before going on.'
            : 'Inspect the stored object (planted, or damaged?) and remove it only once you know why it is there.',
      },
    );
  }
}

/** A Node.js system error code (ENOENT, EACCES…), or undefined for anything else. */
export function errnoCode(error: unknown): string | undefined {
  if (error instanceof Error && 'code' in error && typeof error.code === 'string') return error.code;
  return undefined;
}

/**
 * `wal fetch` of a file the archive does not hold: exit 1, which PostgreSQL takes for the end of
 * the archive (every other failure of `wal fetch` exits above 125, which stops recovery).
 */
export class WalFileMissingError extends StrongboxError {
  constructor(readonly file: string) {
    super(`${file} is not in the archive`);
  }
}
