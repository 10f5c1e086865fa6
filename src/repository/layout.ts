/**
 * Where each kind of object lives in a repository (docs/FORMAT.md): the one place that spells the
 * layout, so that no other module builds or takes apart an object name by hand.
 */
export type ObjectKind =
  'key' | 'pack' | 'index' | 'snapshot' | 'endorsement' | 'lock' | 'removal' | 'prune-plan';

export const CONFIG_NAME = 'config';

const FOLDERS: Record<ObjectKind, string> = {
  key: 'keys/',
  pack: 'data/',
  index: 'index/',
  snapshot: 'snapshots/',
  endorsement: 'endorsements/',
  lock: 'locks/',
  removal: 'removed/',
  'prune-plan': 'prune/',
};

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** The folder to list for every object of `kind` (packs lie one level further down). */
export function folderOf(kind: ObjectKind): string {
  return FOLDERS[kind];
}

export function objectName(kind: ObjectKind, id: string): string {
  return kind === 'pack' ? `data/${id.slice(0, 2)}/${id}` : FOLDERS[kind] + id;
}

/** The id part of a listed object's name: what follows its folder (and, for packs, the fan-out). */
export function objectId(kind: ObjectKind, name: string): string {
  const rest = name.slice(FOLDERS[kind].length);
  return kind === 'pack' ? rest.slice(rest.indexOf('/') + 1) : rest;
}

/** Whether `id` is what strongbox names a content-addressed object: 64 lowercase hex digits. */
export function isContentId(id: string): boolean {
  return SHA256_HEX.test(id);
}
