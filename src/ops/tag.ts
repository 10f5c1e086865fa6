import type { Repository } from '../repository/repository.ts';
import { LIMITS } from '../repository/schemas.ts';
import { ConfigError } from '../errors.ts';

export interface TagChange {
  add?: readonly string[];
  remove?: readonly string[];
}

export interface TagResult {
  /** The snapshot named. */
  previous: string;
  /** The snapshot that now holds its contents: a new one when the tags changed, else the same. */
  snapshot: string;
  tags: string[];
  changed: boolean;
}

/**
 * Adds and removes tags on a snapshot (full keys only). Snapshots are immutable and named by
 * their hash, so this writes a copy with the new tags (signed by this key; the same tree, time,
 * host and contents) and then removes the original with a removal record, as `forget` does. A
 * process killed in between leaves both, the new one complete.
 */
export async function tagSnapshot(
  repository: Repository,
  reference: string,
  change: TagChange,
): Promise<TagResult> {
  repository.requireReader('change tags');
  return repository.withLock('tag', { exclusive: false }, async () => {
    const found = await repository.findSnapshot(reference);
    const { header, body } = await repository.loadSnapshot(found.id);
    const removing = new Set(change.remove ?? []);
    const tags = [...new Set([...header.tags.filter((tag) => !removing.has(tag)), ...(change.add ?? [])])];
    if (tags.length > LIMITS.tags) throw new ConfigError(`a snapshot holds at most ${LIMITS.tags} tags`);
    const long = tags.find((tag) => tag.length > LIMITS.label);
    if (long !== undefined) throw new ConfigError(`a tag is at most ${LIMITS.label} characters`);
    if (tags.length === header.tags.length && tags.every((tag, i) => tag === header.tags[i]))
      return { previous: found.id, snapshot: found.id, tags, changed: false };
    const saved = await repository.saveSnapshot({ ...header, tags }, body);
    await repository.removeSnapshots([found.id], 'tag');
    return { previous: found.id, snapshot: saved.id, tags, changed: true };
  });
}
