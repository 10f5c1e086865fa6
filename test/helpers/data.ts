import { createHash } from 'node:crypto';

/** Deterministic pseudo-random bytes: SHA-256 of `seed` and a counter, concatenated. */
export function seededBytes(seed: string, length: number): Buffer {
  const out = Buffer.alloc(length);
  for (let counter = 0, at = 0; at < length; counter++, at += 32) {
    const block = createHash('sha256').update(seed).update(String(counter)).digest();
    block.copy(out, at, 0, Math.min(32, length - at));
  }
  return out;
}
