import { z } from 'zod';
import { STANZA_LENGTH } from '../crypto/key-wrap.ts';
import {
  count,
  fastList,
  hexId,
  integer,
  isHexId,
  isInteger,
  list,
  parseRecord,
  recordOf,
  text,
} from '../util/schema.ts';
import type { LockInfo } from './locks.ts';
import type { IndexFileContent } from './master-index.ts';
import type { SnapshotBody, SnapshotHeader } from './snapshot.ts';
import type { Tree } from './tree.ts';
import { walFileKind } from './layout.ts';
import type { WalHeader } from './wal-file.ts';

/**
 * The schemas of the repository's JSON objects (docs/FORMAT.md): what strongbox writes, with
 * bounds on every size. Storage is not trusted, so every object read back is parsed against its
 * schema, and anything else is a MalformedRecordError naming it (exit 7).
 */

/** Limits (docs/FORMAT.md, "Limits"): generous beyond anything strongbox writes, but finite. */
export const LIMITS = {
  /** Packs listed by one index file (a writer lists 16). */
  packsPerIndexFile: 100_000,
  /** Blobs listed in one pack. */
  blobsPerPack: 1 << 24,
  /** Offsets and lengths within a pack are u32 in its table. */
  packOffset: 2 ** 32 - 1,
  /** Stanzas of a pack's or snapshot's wrapped key (a u8 count). */
  stanzas: 255,
  /** Values in a resemblance sketch. */
  sketchValues: 8,
  /** Entries of one directory. */
  treeNodes: 10_000_000,
  /** Content blobs of one file. */
  fileBlobs: 1 << 24,
  /** A file name, in UTF-16 code units: 255 bytes (NAME_MAX) read as UTF-8 never give more. */
  nodeName: 255,
  /** A path or symlink target (PATH_MAX bytes). */
  path: 4096,
  /** Host, user, kind, program and tag texts. */
  label: 4096,
  tags: 64,
  /** Paths recorded in a snapshot body: those given to the backup, or a cluster's files. */
  snapshotPaths: 1_000_000,
  /** Entries of a body's summary, and fields of its source record. */
  summaryEntries: 64,
  /** A WAL file's content: PostgreSQL's largest wal_segment_size is 1 GiB, its default 16 MiB. */
  walContent: 64 * 1024 * 1024,
  /** The plaintext of one frame of a WAL object. */
  walFrame: 1024 * 1024,
  /** A WAL object's sealed header, in bytes. */
  walHeader: 64 * 1024,
} as const;

/** The frames a WAL file of `size` bytes is stored in: one at least, an empty file's. */
export function walFrameCount(size: number): number {
  return Math.max(1, Math.ceil(size / LIMITS.walFrame));
}

const blobType = z.union([z.literal(0), z.literal(1)], { error: 'expected 0 (data) or 1 (tree)' });
const compression = z.union([z.literal(0), z.literal(1)], { error: 'expected 0 (none) or 1 (zstd)' });
const packOffset = integer(0, LIMITS.packOffset);

/** Standard base64 of at most `bytes` bytes. */
function base64(bytes: number) {
  return z
    .string()
    .max(4 * Math.ceil(bytes / 3), { error: `expected at most ${bytes} bytes of base64` })
    .regex(/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/, { error: 'expected base64' });
}

/** zstd's highest level. */
const MAX_LEVEL = 22;
const MAX_SKETCH_VALUE = 2 ** 32 - 1;

/** [id, type, offset, length, rawLength, compression, level, base | null, sketch | null] */
export const indexedBlob = z.tuple([
  hexId,
  blobType,
  packOffset,
  packOffset,
  packOffset,
  compression,
  integer(0, MAX_LEVEL),
  hexId.nullable(),
  list(integer(0, MAX_SKETCH_VALUE), LIMITS.sketchValues).nullable(),
]);

/** What indexedBlob takes, checked fast: an index lists millions of blobs. */
export function isIndexedBlob(value: unknown): boolean {
  if (!Array.isArray(value) || value.length !== 9) return false;
  const [id, type, offset, length, rawLength, compression, level, base, sketch] = value as unknown[];
  return (
    isHexId(id) &&
    (type === 0 || type === 1) &&
    isInteger(offset, LIMITS.packOffset) &&
    isInteger(length, LIMITS.packOffset) &&
    isInteger(rawLength, LIMITS.packOffset) &&
    (compression === 0 || compression === 1) &&
    isInteger(level, MAX_LEVEL) &&
    (base === null || isHexId(base)) &&
    (sketch === null ||
      (Array.isArray(sketch) &&
        sketch.length <= LIMITS.sketchValues &&
        sketch.every((part) => isInteger(part, MAX_SKETCH_VALUE))))
  );
}

const indexFile: z.ZodType<IndexFileContent> = z.strictObject({
  packs: list(
    z.strictObject({
      id: hexId,
      // A pack closes past packSize (at most 1 GiB), so its last blob may start near 2^32.
      size: integer(0, 2 ** 33),
      keys: base64(LIMITS.stanzas * STANZA_LENGTH),
      blobs: fastList(indexedBlob, isIndexedBlob, LIMITS.blobsPerPack),
    }),
    LIMITS.packsPerIndexFile,
  ),
});

export function parseIndexFile(value: unknown, id: string): IndexFileContent {
  return parseRecord(indexFile, value, { kind: 'index file', id });
}

/**
 * A single path component, as a directory listing gives it: a tree node named "..", "a/b" or
 * "" would make a restore write outside its target.
 */
export const nodeName = z
  .string()
  .min(1, { error: 'expected a file name, not an empty one' })
  .max(LIMITS.nodeName, { error: `expected a file name of at most ${LIMITS.nodeName} characters` })
  .refine((name) => name !== '.' && name !== '..' && !name.includes('/') && !name.includes('\0'), {
    error: 'expected a file name: one path component, without "/" or NUL, not "." or ".."',
  });

/** Whether a tree may name a node so (a stream's file, say). */
export function isFileName(name: string): boolean {
  return nodeName.safeParse(name).success;
}

/** Device and inode numbers are 64-bit: stored as JSON numbers, they may exceed 2^53. */
const deviceNumber = z
  .number()
  .min(0)
  .max(2 ** 64)
  .refine(Number.isInteger, { error: 'expected a non-negative integer' });

const MTIME_NS = /^-?\d{1,20}$/;

export const treeNode = z.strictObject({
  name: nodeName,
  type: z.enum(['file', 'dir', 'symlink', 'fifo', 'socket', 'chardev', 'blockdev']),
  mode: integer(0, 0o7777),
  mtimeNs: z.string().regex(MTIME_NS, { error: 'expected nanoseconds as a decimal string' }),
  uid: integer(0, 2 ** 32 - 1),
  gid: integer(0, 2 ** 32 - 1),
  size: count.optional(),
  device: deviceNumber.optional(),
  inode: deviceNumber.optional(),
  content: list(hexId, LIMITS.fileBlobs).optional(),
  subtree: hexId.optional(),
  linkTarget: text(LIMITS.path).optional(),
  rdev: deviceNumber.optional(),
});

const NODE_FIELDS = new Set(Object.keys(treeNode.shape));
const NODE_TYPES = new Set<unknown>(treeNode.shape.type.options);
const isDeviceNumber = (value: unknown) =>
  typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= 2 ** 64;

/** What treeNode takes, checked fast: a directory may hold millions of entries. */
export function isTreeNode(value: unknown): boolean {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return false;
  const node = value as Record<string, unknown>;
  for (const field of Object.keys(node)) if (!NODE_FIELDS.has(field)) return false;
  const { name, content } = node;
  return (
    typeof name === 'string' &&
    name.length >= 1 &&
    name.length <= LIMITS.nodeName &&
    name !== '.' &&
    name !== '..' &&
    !name.includes('/') &&
    !name.includes('\0') &&
    NODE_TYPES.has(node.type) &&
    isInteger(node.mode, 0o7777) &&
    typeof node.mtimeNs === 'string' &&
    MTIME_NS.test(node.mtimeNs) &&
    isInteger(node.uid, 2 ** 32 - 1) &&
    isInteger(node.gid, 2 ** 32 - 1) &&
    (node.size === undefined || isInteger(node.size, Number.MAX_SAFE_INTEGER)) &&
    (node.device === undefined || isDeviceNumber(node.device)) &&
    (node.inode === undefined || isDeviceNumber(node.inode)) &&
    (content === undefined ||
      (Array.isArray(content) && content.length <= LIMITS.fileBlobs && content.every(isHexId))) &&
    (node.subtree === undefined || isHexId(node.subtree)) &&
    (node.linkTarget === undefined ||
      (typeof node.linkTarget === 'string' && node.linkTarget.length <= LIMITS.path)) &&
    (node.rdev === undefined || isDeviceNumber(node.rdev))
  );
}

const tree: z.ZodType<Tree> = z.strictObject({
  nodes: fastList(treeNode, isTreeNode, LIMITS.treeNodes).superRefine((nodes, context) => {
    const seen = new Set<string>();
    for (const [i, { name }] of nodes.entries()) {
      if (seen.has(name))
        context.addIssue({
          code: 'custom',
          message: `duplicate name ${JSON.stringify(name)}`,
          path: [i, 'name'],
        });
      seen.add(name);
    }
  }),
});

export function parseTree(value: unknown, id: string): Tree {
  return parseRecord(tree, value, { kind: 'tree', id });
}

const isoTime = z.iso.datetime({ error: 'expected a time as an ISO 8601 string (UTC)' });

const lock: z.ZodType<LockInfo> = z.strictObject({
  host: text(LIMITS.label),
  pid: integer(0, 2 ** 32 - 1),
  username: text(LIMITS.label),
  exclusive: z.boolean(),
  operation: text(LIMITS.label),
  created: isoTime,
  refreshed: isoTime,
});

export function parseLock(value: unknown, name: string): LockInfo {
  return parseRecord(lock, value, { kind: 'lock', id: name });
}

const snapshotHeader: z.ZodType<SnapshotHeader> = z.strictObject({
  time: isoTime,
  host: text(LIMITS.label),
  username: text(LIMITS.label),
  kind: text(LIMITS.label),
  name: text(LIMITS.path),
  tags: list(text(LIMITS.label), LIMITS.tags),
  size: count,
  stored: count,
  parent: hexId.optional(),
  origin: hexId.optional(),
  program: text(LIMITS.label),
});

const snapshotBody: z.ZodType<SnapshotBody> = z.strictObject({
  tree: hexId,
  paths: list(text(LIMITS.path), LIMITS.snapshotPaths),
  summary: recordOf(text(LIMITS.label), count, LIMITS.summaryEntries),
  // Each source's engine parses its own record (src/postgres/record-schema.ts).
  source: recordOf(text(LIMITS.label), z.unknown(), LIMITS.summaryEntries).optional(),
});

/** A snapshot's header, read with the metadata key: what lists and filters see. */
export function parseSnapshotHeader(value: unknown, id: string): SnapshotHeader {
  return parseRecord(snapshotHeader, value, { kind: 'snapshot header', id });
}

/** A snapshot's body; its `source` is left to the engine that wrote it. */
export function parseSnapshotBody(value: unknown, id: string): SnapshotBody {
  return parseRecord(snapshotBody, value, { kind: 'snapshot body', id });
}

const walHeader: z.ZodType<WalHeader> = z
  .strictObject({
    version: z.literal(1),
    name: z.string().refine((name) => walFileKind(name) !== undefined, {
      error: 'expected the name of a WAL file, as PostgreSQL writes it',
    }),
    size: integer(0, LIMITS.walContent),
    mac: hexId,
    time: isoTime,
    host: text(LIMITS.label),
    program: text(LIMITS.label),
    frames: integer(1, walFrameCount(LIMITS.walContent)),
  })
  .refine((header) => header.frames === walFrameCount(header.size), {
    error: `expected as many frames as the size takes, ${LIMITS.walFrame} bytes each`,
    path: ['frames'],
  });

/** A WAL object's header, read with the metadata key; `id` is the object's file name. */
export function parseWalHeader(value: unknown, id: string): WalHeader {
  return parseRecord(walHeader, value, { kind: 'WAL header', id });
}
