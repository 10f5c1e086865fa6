import { open, seal } from '../crypto/aead.ts';
import { zstdCompress, zstdDecompress } from '../compression/zstd.ts';

/**
 * Index files, locks, snapshot headers and the repository's records: magic || AES-256-GCM(zstd(JSON)). The magic is also
 * the associated data, so a file of one kind cannot be passed off as another.
 */
export type SealedFileMagic =
  'SBIX' | 'SBI2' | 'SBLK' | 'SBSH' | 'SBSB' | 'SBRM' | 'SBPP' | 'SBAU' | 'SBRS' | 'SBWH';

export class MalformedFile extends Error {}

/**
 * The most a file of each kind may decompress to (docs/FORMAT.md, "Limits"): far above what
 * strongbox writes, but finite, so a small file cannot make a reader allocate without end.
 */
export const MAX_SEALED_JSON: Record<SealedFileMagic, number> = {
  SBIX: 256 * 1024 * 1024,
  SBI2: 256 * 1024 * 1024,
  SBLK: 64 * 1024,
  SBSH: 1024 * 1024,
  SBSB: 256 * 1024 * 1024,
  SBRM: 256 * 1024 * 1024,
  SBPP: 256 * 1024 * 1024,
  SBAU: 1024 * 1024,
  SBRS: 4 * 1024 * 1024,
  SBWH: 64 * 1024,
};

export function sealJson(magic: SealedFileMagic, key: Uint8Array, value: unknown): Buffer {
  const magicBytes = Buffer.from(magic, 'ascii');
  const plaintext = zstdCompress(Buffer.from(JSON.stringify(value)), 3);
  return Buffer.concat([magicBytes, seal(key, plaintext, magicBytes)]);
}

/**
 * Throws AuthenticationFailure for a wrong key or altered bytes, MalformedFile for a wrong kind,
 * DecompressedTooLarge past the kind's limit. The value is as stored: callers parse it against
 * the kind's schema.
 */
export function openJson<T = unknown>(magic: SealedFileMagic, key: Uint8Array, bytes: Uint8Array): T {
  const magicBytes = Buffer.from(magic, 'ascii');
  if (bytes.length < 4 || !Buffer.from(bytes.subarray(0, 4)).equals(magicBytes)) {
    throw new MalformedFile(`not a ${magic} file`);
  }
  const plaintext = zstdDecompress(open(key, bytes.subarray(4), magicBytes), MAX_SEALED_JSON[magic]);
  return JSON.parse(plaintext.toString('utf8')) as T;
}
