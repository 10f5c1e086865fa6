import { SourceError } from '../../errors.ts';
import { comparableAclItem } from '../acl.ts';
import { count } from '../../util/plural.ts';
import { LARGE_OBJECT_METADATA, type LargeObjectMetadata } from './large-object-queries.ts';
import { readLargeObjects, type FoundLargeObject } from './large-object-stream.ts';
import { displayIdentifier, type Checker } from '../verify/verify.ts';

/**
 * What a backup records of the large objects its archive carries, which a restore of it brings
 * back: each one's bytes, hashed as the archive streamed, and its owner, ACL and comment, read
 * in the dump's own snapshot.
 */
export interface RecordedLargeObjects {
  /** Whether the archive carried every object's bytes, each then recorded with bytes and sha256. */
  contents: boolean;
  /** By oid, in decimal. */
  objects: Record<string, RecordedLargeObject>;
}

export interface RecordedLargeObject {
  /** Its size, and the SHA-256 of its bytes as 64 lowercase hex digits. */
  bytes?: number;
  sha256?: string;
  /** Its owner's role name. */
  owner: string;
  /** Its ACL (the default one when it has none) as aclitem text, sorted. */
  acl: string[];
  /** Absent when it has none. */
  comment?: string;
}

/** What the dump follower saw of large objects in the archive. */
export interface ArchivedLargeObjects {
  /** The oids of its BLOB entries: the objects a restore creates. */
  declared: string[];
  /** Each object's bytes, from the BLOBS data block, by oid. */
  contents: Map<string, { bytes: number; sha256: string }>;
}

/** Every large object's owner, ACL and comment in the catalog, by oid. */
export type CatalogLargeObjects = Record<string, LargeObjectMetadata>;

/** The catalog's large objects, read in the session's snapshot. */
export async function readLargeObjectMetadata(session: {
  query(sql: string): Promise<string>;
}): Promise<CatalogLargeObjects> {
  return JSON.parse(await session.query(LARGE_OBJECT_METADATA)) as CatalogLargeObjects;
}

/**
 * The record of the large objects an archive carries, from the catalog read in its snapshot and
 * what the archive held. pg_dump (12 to 16) dumps them whole, or with --schema-only or --table
 * not at all: then a restore brings none back, and undefined says there is nothing to compare.
 */
export function recordLargeObjects(
  metadata: CatalogLargeObjects,
  archived: ArchivedLargeObjects,
): RecordedLargeObjects | undefined {
  if (archived.declared.length === 0 && Object.keys(metadata).length > 0) return undefined;
  const objects: Record<string, RecordedLargeObject> = {};
  for (const oid of archived.declared) {
    const { owner, acl, comment } = inSnapshot(metadata, oid);
    objects[oid] = {
      ...archived.contents.get(oid),
      owner,
      acl: [...acl].sort(),
      ...(comment === null ? {} : { comment }),
    };
  }
  for (const oid of archived.contents.keys()) inSnapshot(objects, oid);
  return { contents: archived.declared.every((oid) => archived.contents.has(oid)), objects };
}

/** pg_dump dumps in the snapshot the catalog was read in: an object not in both is a broken promise. */
function inSnapshot<T>(objects: Record<string, T>, oid: string): T {
  const found = objects[oid];
  if (found === undefined)
    throw new SourceError(
      `the archive's large object ${oid} is not among those the catalog listed in the same snapshot; no snapshot was written`,
    );
  return found;
}

/** Compares a database's large objects with those a backup recorded, reading them back. */
export function largeObjectsCheck(recorded: RecordedLargeObjects, expect: { owners: boolean }): Checker {
  return async (target) => {
    const objects = Object.values(recorded.objects);
    const bytes = objects.reduce((sum, object) => sum + (object.bytes ?? 0), 0);
    const found = await readLargeObjects(target, recorded.contents);
    return {
      name: 'large objects',
      compared: recorded.contents ? `${objects.length} (${count(bytes, 'byte')})` : String(objects.length),
      differences: largeObjectDifferences(recorded, found, expect.owners),
      notes: recorded.contents ? [] : ['bytes not compared: the archive did not carry them'],
    };
  };
}

/**
 * One sentence per difference, in order of oid: an object missing or not in the backup, its
 * bytes, owner (when `owners`), ACL (comparableAcl) and comment.
 */
export function largeObjectDifferences(
  recorded: RecordedLargeObjects,
  found: ReadonlyMap<string, FoundLargeObject>,
  owners: boolean,
): string[] {
  const differences: string[] = [];
  const oids = new Set([...Object.keys(recorded.objects), ...found.keys()]);
  for (const oid of [...oids].sort((a, b) => Number(a) - Number(b))) {
    const backedUp = Object.hasOwn(recorded.objects, oid) ? recorded.objects[oid] : undefined;
    const now = found.get(oid);
    const differs = (what: string) => differences.push(`large object ${oid}: ${what}`);
    if (!now) differs('missing');
    else if (!backedUp) differs('not in the backup');
    else {
      if (backedUp.sha256 !== undefined && (backedUp.sha256 !== now.sha256 || backedUp.bytes !== now.bytes))
        differs(`bytes differ (${count(backedUp.bytes ?? 0, 'byte')} backed up, ${now.bytes ?? 0} found)`);
      if (owners && backedUp.owner !== now.owner)
        differs(
          `owner ${displayIdentifier(backedUp.owner)} backed up, ${displayIdentifier(now.owner)} found`,
        );
      const [before, after] = [backedUp, now].map((object) => comparableAcl(object, owners));
      if (before!.join('\n') !== after!.join('\n'))
        differs(
          `ACL {${[...backedUp.acl].sort().join(',')}} backed up, {${[...now.acl].sort().join(',')}} found`,
        );
      if ((backedUp.comment ?? null) !== now.comment)
        differs(`comment ${shown(backedUp.comment ?? null)} backed up, ${shown(now.comment)} found`);
    }
  }
  return differences;
}

/**
 * An ACL's items sorted, the owner's name in them as "(owner)" (an owner changed is one
 * difference, not two: an object without an ACL of its own has its owner's default one); without
 * owners, the grantors left out too.
 */
function comparableAcl(object: { owner: string; acl: readonly string[] }, owners: boolean): string[] {
  return object.acl.map((item) => comparableAclItem(item, object.owner, owners)).sort();
}

function shown(comment: string | null): string {
  return comment === null ? 'none' : JSON.stringify(comment);
}
