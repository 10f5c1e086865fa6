import { createHmac } from 'node:crypto';
import { deriveSubkey } from '../crypto/kdf.ts';
import { gearTable } from '../chunking/fastcdc.ts';

/**
 * The two repository secrets and what each unlocks (docs/FORMAT.md, "Keys"):
 * - the writer secret derives the blob-id key, the metadata key (index, locks, snapshot headers)
 *   and the chunker's gear table: everything a backup needs, nothing that decrypts data;
 * - the reader secret opens the sealed identities in the config, whose X25519 private keys
 *   unwrap pack and snapshot data keys.
 */
export interface WriterKeys {
  blobIdKey: Buffer;
  metadataKey: Buffer;
  gear: Int32Array;
}

export function deriveWriterKeys(writerSecret: Uint8Array): WriterKeys {
  return {
    blobIdKey: deriveSubkey(writerSecret, 'blob-id'),
    metadataKey: deriveSubkey(writerSecret, 'metadata'),
    gear: gearTable(deriveSubkey(writerSecret, 'chunker-gear')),
  };
}

export function identitiesKey(readerSecret: Uint8Array): Buffer {
  return deriveSubkey(readerSecret, 'identities');
}

export function blobId(blobIdKey: Uint8Array, data: Uint8Array): Buffer {
  return createHmac('sha256', blobIdKey).update(data).digest();
}
