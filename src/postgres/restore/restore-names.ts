/**
 * The names and marks of the databases a restore creates beside its target. PostgreSQL keeps at
 * most NAMEDATALEN - 1 bytes of a name and silently cuts the rest, which once turned a scratch
 * name back into its target's; so every name made here is measured in bytes and fits.
 */

/** NAMEDATALEN - 1: the bytes of a name PostgreSQL keeps. */
export const MAX_NAME_BYTES = 63;

/**
 * Every scratch database strongbox creates starts with this, and nothing else it creates does:
 * a database named so that no running restore holds is a leftover of a restore that died.
 */
export const SCRATCH_PREFIX = 'strongbox_restore_';

/**
 * The advisory lock class under which a running restore holds its scratch database's name
 * (pg_advisory_lock(RESTORE_LOCK_CLASS, hashtext(name))): 'SBOX'.
 */
export const RESTORE_LOCK_CLASS = 0x53424f58;

/** When a restore started, as it appears in the names: 20261204_160522 (UTC). */
export function restoreStamp(at: Date): string {
  return at.toISOString().replace(/[-:]/g, '').replace(/\..*$/, '').replace('T', '_');
}

/** `text` cut to at most `bytes` bytes of UTF-8, never inside a character. */
export function fitBytes(text: string, bytes: number): string {
  let fitted = '';
  let used = 0;
  for (const character of text) {
    used += Buffer.byteLength(character);
    if (used > bytes) break;
    fitted += character;
  }
  return fitted;
}

/**
 * `head`, cut so that `prefix` + head + `tail` fits, for the `attempt`th try (0 first); from the
 * second try on a number tells it from the names already taken.
 */
function fitted(prefix: string, head: string, tail: string, attempt: number): string {
  const suffix = `${tail}${attempt > 0 ? `_${attempt + 1}` : ''}`;
  return prefix + fitBytes(head, MAX_NAME_BYTES - Buffer.byteLength(prefix + suffix)) + suffix;
}

/** The scratch database a restore over `target` loads into: strongbox_restore_<target>_<stamp>. */
export function scratchName(target: string, stamp: string, attempt = 0): string {
  return fitted(SCRATCH_PREFIX, target, `_${stamp}`, attempt);
}

/** What the replaced database is called after the swap: <target>_before_<stamp>. */
export function keptName(target: string, stamp: string, attempt = 0): string {
  return fitted('', target, `_before_${stamp}`, attempt);
}

/** What a restore writes in the comment of a database it made or swapped out. */
export interface RestoreMark {
  /** scratch: loaded by a restore not yet swapped in; replaced: swapped out, to be dropped. */
  kind: 'scratch' | 'replaced';
  /** The database it was restored for, exactly. */
  target: string;
}

export function markText(mark: RestoreMark): string {
  return JSON.stringify({ strongbox: mark.kind, target: mark.target });
}

/** The mark in a database's comment, if strongbox wrote it. */
export function readMark(comment: string | null): RestoreMark | undefined {
  if (!comment?.startsWith('{"strongbox":')) return undefined;
  try {
    const parsed = JSON.parse(comment) as { strongbox?: unknown; target?: unknown };
    if (
      (parsed.strongbox === 'scratch' || parsed.strongbox === 'replaced') &&
      typeof parsed.target === 'string'
    )
      return { kind: parsed.strongbox, target: parsed.target };
  } catch {
    // A comment that only looks like a mark is someone else's.
  }
  return undefined;
}
