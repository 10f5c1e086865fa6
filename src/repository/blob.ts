import { objectName } from './layout.ts';

/** What a blob holds: file content, or a tree (one directory's listing). */
export const BlobType = { data: 0, tree: 1 } as const;
export type BlobTypeValue = (typeof BlobType)[keyof typeof BlobType];

export const Compression = { none: 0, zstd: 1 } as const;
export type CompressionValue = (typeof Compression)[keyof typeof Compression];

/** Where one blob is stored. Blob and pack ids are lowercase hex. */
export interface BlobLocation {
  pack: string;
  type: BlobTypeValue;
  offset: number;
  length: number;
  rawLength: number;
  compression: CompressionValue;
  level: number;
}

export interface PackBlobEntry extends Omit<BlobLocation, 'pack'> {
  id: string;
  /** Set when the stored bytes are a delta against this other blob (docs/FORMAT.md, "Deltas"). */
  base?: string;
}

/** A finished pack: its bytes, its id (SHA-256 of the bytes) and what is in it. */
export interface PackRecord {
  id: string;
  size: number;
  /** The pack's data key wrapped to each recipient (opaque to writers). */
  keys: Buffer;
  blobs: PackBlobEntry[];
}

export function packName(id: string): string {
  return objectName('pack', id);
}
