/**
 * Where each kind of object lives in a repository (docs/FORMAT.md): the one place that spells the
 * layout, so that no other module builds or takes apart an object name by hand.
 */
export type ObjectKind =
  | 'key'
  | 'pack'
  | 'index'
  | 'snapshot'
  | 'endorsement'
  | 'lock'
  | 'removal'
  | 'prune-plan'
  | 'audit'
  | 'drill-result'
  | 'check-result';

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
  audit: 'audit/',
  'drill-result': 'results/drill/',
  'check-result': 'results/check/',
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

/**
 * Appended records (audit records, drill and check results) are named `<time>-<nonce>`: the UTC
 * second they began (`20250131T235959Z`), so that names sort in time order and the newest can be
 * read without reading all, and the 32 hex digits of a random nonce their content repeats.
 */
const STAMPED_ID = /^(\d{8}T\d{6}Z)-([0-9a-f]{32})$/;

export function stampedId(time: Date, nonce: string): string {
  return `${timeStamp(time)}-${nonce}`;
}

/** The UTC second of `time` as an appended record's name gives it. */
export function timeStamp(time: Date): string {
  return time.toISOString().slice(0, 19).replaceAll('-', '').replaceAll(':', '') + 'Z';
}

/** The time a stamp (`20250131T235959Z`) names. */
export function stampTime(stamp: string): Date {
  const part = (from: number, to: number) => stamp.slice(from, to);
  return new Date(
    `${part(0, 4)}-${part(4, 6)}-${part(6, 8)}T${part(9, 11)}:${part(11, 13)}:${part(13, 15)}Z`,
  );
}

/** The parts of an appended record's id, or undefined for a name strongbox does not write. */
export function parseStampedId(id: string): { stamp: string; nonce: string } | undefined {
  const match = STAMPED_ID.exec(id);
  return match ? { stamp: match[1]!, nonce: match[2]! } : undefined;
}
