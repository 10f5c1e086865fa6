/** PostgreSQL's page size (BLCKSZ), as every packaged build has it. */
export const PAGE_SIZE = 8192;

/**
 * Pages per chunk of a relation file. A checkpoint rewrites pages where they are, so fixed cuts
 * keep every unchanged stretch a chunk of its own, whatever changed beside it, and a changed
 * chunk is a small delta against its predecessor. Measured on the benchmark's day of writes
 * (scale 1), the second backup stored 1.12 % of the first with 16 pages (128 KiB), 1.37 % with 8:
 * fewer, larger chunks cost less per chunk, and deltas keep what changed in them small.
 */
export const PAGES_PER_CHUNK = 16;

/** A relation file's chunk: it is cut every this many bytes, and nowhere else (chunking/fixed.ts). */
export const CHUNK_PAGES_BYTES = PAGES_PER_CHUNK * PAGE_SIZE;

/**
 * A relation's fork or segment: <relfilenode>[_fsm|_vm|_init][.<segment>]. Under base/<database oid>/,
 * global/, or a tablespace's <version directory>/<database oid>/.
 */
const RELATION_FILE = /^\d+(?:_(?:fsm|vm|init))?(?:\.\d+)?$/;

/** Whether `path`, relative to the data directory, is a relation file, made of pages. */
export function isDataDirectoryRelation(path: string): boolean {
  const parts = path.split('/');
  if (parts.length === 2 && parts[0] === 'global') return RELATION_FILE.test(parts[1]!);
  return (
    parts.length === 3 && parts[0] === 'base' && /^\d+$/.test(parts[1]!) && RELATION_FILE.test(parts[2]!)
  );
}

/** Whether `path`, relative to a tablespace's directory, is a relation file. */
export function isTablespaceRelation(path: string): boolean {
  const parts = path.split('/');
  return (
    parts.length === 3 &&
    parts[0]!.startsWith('PG_') &&
    /^\d+$/.test(parts[1]!) &&
    RELATION_FILE.test(parts[2]!)
  );
}
