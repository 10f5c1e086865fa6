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
  | 'check-result'
  | 'wal';

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
  wal: 'wal/',
};

const SHA256_HEX = /^[0-9a-f]{64}$/;

/** The folder to list for every object of `kind` (packs lie one level further down). */
export function folderOf(kind: ObjectKind): string {
  return FOLDERS[kind];
}

/** A WAL file's id is its file name, which `walFileKind` must accept first. */
export function objectName(kind: ObjectKind, id: string): string {
  if (kind === 'pack') return `data/${id.slice(0, 2)}/${id}`;
  if (kind === 'wal') return `wal/${walTimeline(id)}/${id}`;
  return FOLDERS[kind] + id;
}

/** The id part of a listed object's name: what follows its folder (and, for packs and WAL, the fan-out). */
export function objectId(kind: ObjectKind, name: string): string {
  const rest = name.slice(FOLDERS[kind].length);
  return kind === 'pack' || kind === 'wal' ? rest.slice(rest.indexOf('/') + 1) : rest;
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

/**
 * The files PostgreSQL archives, named as it names them (uppercase hex): WAL segments, the
 * `.partial` segment a promoted standby leaves, backup history files and timeline history files.
 */
export type WalFileKind = 'segment' | 'partial' | 'backup-history' | 'timeline-history';

const WAL_FILES: [RegExp, WalFileKind][] = [
  [/^[0-9A-F]{24}$/, 'segment'],
  [/^[0-9A-F]{24}\.partial$/, 'partial'],
  [/^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$/, 'backup-history'],
  [/^[0-9A-F]{8}\.history$/, 'timeline-history'],
];

const WAL_TIMELINE = /^[0-9A-F]{8}$/;

/** What kind of WAL file `name` is, or undefined for a name PostgreSQL does not archive. */
export function walFileKind(name: string): WalFileKind | undefined {
  return WAL_FILES.find(([pattern]) => pattern.test(name))?.[1];
}

/** Whether `timeline` is one as WAL file names spell it: 8 uppercase hex digits. */
export function isWalTimeline(timeline: string): boolean {
  return WAL_TIMELINE.test(timeline);
}

/** The timeline a WAL file belongs to: its first 8 hex digits, the folder it is stored in. */
export function walTimeline(name: string): string {
  return name.slice(0, 8);
}

/** The folder to list for the WAL files of one timeline (`isWalTimeline`), or of every one. */
export function walFolder(timeline?: string): string {
  return timeline === undefined ? FOLDERS.wal : `${FOLDERS.wal}${timeline}/`;
}

/** The WAL file a listed object holds, or undefined when its name is not one strongbox writes. */
export function walFileOf(name: string): string | undefined {
  if (!name.startsWith(FOLDERS.wal)) return undefined;
  const file = objectId('wal', name);
  return walFileKind(file) && name === objectName('wal', file) ? file : undefined;
}
