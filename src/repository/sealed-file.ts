import { open, seal } from '../crypto/aead.ts';
import { zstdCompress, zstdDecompress } from '../compression/zstd.ts';

/**
 * Index files, locks and snapshot headers: magic || AES-256-GCM(zstd(JSON)). The magic is also
 * the associated data, so a file of one kind cannot be passed off as another.
 */
export type SealedFileMagic = 'SBIX' | 'SBI2' | 'SBLK' | 'SBSH' | 'SBSB';

export class MalformedFile extends Error {}

export function sealJson(magic: SealedFileMagic, key: Uint8Array, value: unknown): Buffer {
  const magicBytes = Buffer.from(magic, 'ascii');
  const plaintext = zstdCompress(Buffer.from(JSON.stringify(value)), 3);
  return Buffer.concat([magicBytes, seal(key, plaintext, magicBytes)]);
}

/** Throws AuthenticationFailure for a wrong key or altered bytes, MalformedFile for a wrong kind. */
export function openJson<T>(magic: SealedFileMagic, key: Uint8Array, bytes: Uint8Array): T {
  const magicBytes = Buffer.from(magic, 'ascii');
  if (bytes.length < 4 || !Buffer.from(bytes.subarray(0, 4)).equals(magicBytes)) {
    throw new MalformedFile(`not a ${magic} file`);
  }
  const plaintext = zstdDecompress(open(key, bytes.subarray(4), magicBytes));
  return JSON.parse(plaintext.toString('utf8')) as T;
}
