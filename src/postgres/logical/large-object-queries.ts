/**
 * The SQL that reads large objects, at backup in the dump's snapshot and after a restore in the
 * database verified: the same expression on both sides, so the same meaning. It takes no input.
 */

/** One large object's METADATA. */
export interface LargeObjectMetadata {
  /** Its owner's role name. */
  owner: string;
  /** aclitem text, such as "alice=rw/alice" or "=r/alice" (PUBLIC). */
  acl: string[];
  comment: string | null;
}

/**
 * One large object's owner, ACL (the default one when it has none: what the owner may do) and
 * comment, as JSON, of the pg_largeobject_metadata row `m`. ACL items are aclitem text, in no
 * particular order.
 */
const METADATA = `json_build_object(
  'owner', pg_get_userbyid(m.lomowner),
  'acl', coalesce((select json_agg(item::text) from unnest(coalesce(m.lomacl, acldefault('L', m.lomowner))) item), '[]'),
  'comment', obj_description(m.oid, 'pg_largeobject'))`;

/** Every large object's metadata (METADATA) as one JSON object by oid. */
export const LARGE_OBJECT_METADATA = `select coalesce(json_object_agg(m.oid, ${METADATA}), '{}') from pg_largeobject_metadata m`;

/** How much of a large object one row of the read-back carries: lo_get reads it whole into memory. */
export const READ_BACK_CHUNK_BYTES = 1 << 20;

/**
 * Every large object as binary COPY rows (oid, size, offset, bytes, metadata): each object's
 * chunks of READ_BACK_CHUNK_BYTES in order of offset, one row (offset 0, empty bytes) for an
 * empty object, the metadata on its first row only. The size comes from seeking to the object's
 * end (lo_open for reading, INV_READ = 0x40000), so no object is read whole. The sort holds only
 * oids and offsets: lo_get, being volatile, runs after it. Without contents, one row per object
 * with neither size nor bytes.
 */
export function readBackLargeObjects(contents: boolean): string {
  const rows = contents
    ? `select m.oid, m.size, c.off, lo_get(m.oid, c.off, ${READ_BACK_CHUNK_BYTES}),
        case when c.off = 0 then ${METADATA}::text end
      from (select oid, lomowner, lomacl, lo_lseek64(lo_open(oid, x'40000'::int), 0, 2) as size
        from pg_largeobject_metadata) m
      cross join lateral generate_series(0::bigint, greatest(m.size - 1, 0), ${READ_BACK_CHUNK_BYTES}) c(off)
      order by m.oid, c.off`
    : `select m.oid, null::bigint, 0::bigint, null::bytea, ${METADATA}::text
      from pg_largeobject_metadata m order by m.oid`;
  return `copy (${rows}) to stdout (format binary)`;
}
