import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { StrongboxError } from '../errors.ts';

/** A local file (not the repository's) could not be written: `file`, and the errno code if any. */
export class FileWriteError extends StrongboxError {
  /** Why, in words: "no such directory", "permission denied"… */
  readonly reason: string;

  constructor(
    readonly file: string,
    readonly code: string | undefined,
    options?: { cause?: unknown },
  ) {
    const reason = fileProblem(code, options?.cause);
    super(`could not write ${file}: ${reason}`, options);
    this.reason = reason;
  }
}

/** Why a file operation failed, in words, from its errno code. */
export function fileProblem(code: string | undefined, cause: unknown): string {
  if (code === 'ENOENT') return 'no such directory';
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') return 'permission denied';
  if (code === 'ENOTDIR') return 'not a directory';
  if (code === 'ENOSPC') return 'no space left on the device';
  return cause instanceof Error ? cause.message : String(cause);
}

/**
 * `text` as the file `file`, or the old file untouched: written to a temporary name in the same
 * directory (hidden, ending in .tmp, so that a reader globbing *.prom skips it), flushed, then
 * renamed over `file`. Readers see the old content or the new one, never half of it.
 */
export async function writeFileAtomically(file: string, text: string, mode = 0o644): Promise<void> {
  const temporary = path.join(
    path.dirname(file),
    `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`,
  );
  try {
    const handle = await open(temporary, 'wx', mode);
    try {
      await handle.writeFile(text, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temporary, file);
  } catch (error) {
    await rm(temporary, { force: true });
    throw new FileWriteError(file, (error as NodeJS.ErrnoException).code, { cause: error });
  }
}
