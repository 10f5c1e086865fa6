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
  /** What the user should do about it, one short sentence. */
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
      { hint: 'Check STRONGBOX_PASSWORD, --password-file or --password-command.' },
    );
  }
}

export class StorageError extends StrongboxError {
  override readonly exitCode = ExitCode.storage;
}

export class VerificationError extends StrongboxError {
  override readonly exitCode = ExitCode.verification;
}

/** A blob cannot be read back: its pack is missing or truncated, or its bytes fail authentication. */
/**
 * A record read from the repository that is not what strongbox writes (a snapshot's PostgreSQL
 * details, say): refused rather than used, since storage may have been written by an attacker.
 */
export class UntrustedRecordError extends VerificationError {}

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

/** A Node.js system error code (ENOENT, EACCES…), or undefined for anything else. */
export function errnoCode(error: unknown): string | undefined {
  if (error instanceof Error && 'code' in error && typeof error.code === 'string') return error.code;
  return undefined;
}
