/**
 * MurmurHash3_x86_128 as SMHasher's MurmurHash3.cpp writes it, line by line, and the table
 * fingerprint of fingerprint.ts computed from it with BigInt: the reference the WebAssembly
 * kernel is checked against. Slow and plain on purpose.
 */
export function murmur3x86_128(bytes: Uint8Array, seed: number): [number, number, number, number] {
  const c1 = 0x239b961b;
  const c2 = 0xab0e9789;
  const c3 = 0x38b34ae5;
  const c4 = 0xa1e38b93;
  const rotl = (x: number, r: number) => ((x << r) | (x >>> (32 - r))) >>> 0;
  const mul = (a: number, b: number) => Math.imul(a, b) >>> 0;
  const word = (at: number) =>
    (bytes[at]! | (bytes[at + 1]! << 8) | (bytes[at + 2]! << 16) | (bytes[at + 3]! << 24)) >>> 0;
  const fmix = (h: number) => {
    h ^= h >>> 16;
    h = mul(h, 0x85ebca6b);
    h ^= h >>> 13;
    h = mul(h, 0xc2b2ae35);
    return (h ^ (h >>> 16)) >>> 0;
  };
  const length = bytes.length;
  const blocks = Math.floor(length / 16);
  let h1 = seed >>> 0;
  let h2 = h1;
  let h3 = h1;
  let h4 = h1;
  for (let i = 0; i < blocks; i++) {
    let k1 = word(i * 16);
    let k2 = word(i * 16 + 4);
    let k3 = word(i * 16 + 8);
    let k4 = word(i * 16 + 12);
    k1 = mul(rotl(mul(k1, c1), 15), c2);
    h1 = (h1 ^ k1) >>> 0;
    h1 = (mul(rotl(h1, 19) + h2, 5) + 0x561ccd1b) >>> 0;
    k2 = mul(rotl(mul(k2, c2), 16), c3);
    h2 = (h2 ^ k2) >>> 0;
    h2 = (mul(rotl(h2, 17) + h3, 5) + 0x0bcaa747) >>> 0;
    k3 = mul(rotl(mul(k3, c3), 17), c4);
    h3 = (h3 ^ k3) >>> 0;
    h3 = (mul(rotl(h3, 15) + h4, 5) + 0x96cd1c35) >>> 0;
    k4 = mul(rotl(mul(k4, c4), 18), c1);
    h4 = (h4 ^ k4) >>> 0;
    h4 = (mul(rotl(h4, 13) + h1, 5) + 0x32ac3b17) >>> 0;
  }
  const tail = blocks * 16;
  const rest = length & 15;
  let k1 = 0;
  let k2 = 0;
  let k3 = 0;
  let k4 = 0;
  // The reference's switch, falling through from the tail's length down to 1.
  for (let i = rest - 1; i >= 0; i--) {
    const byte = bytes[tail + i]!;
    if (i >= 12) k4 ^= byte << ((i - 12) * 8);
    else if (i >= 8) k3 ^= byte << ((i - 8) * 8);
    else if (i >= 4) k2 ^= byte << ((i - 4) * 8);
    else k1 ^= byte << (i * 8);
  }
  if (rest > 12) h4 = (h4 ^ mul(rotl(mul(k4 >>> 0, c4), 18), c1)) >>> 0;
  if (rest > 8) h3 = (h3 ^ mul(rotl(mul(k3 >>> 0, c3), 17), c4)) >>> 0;
  if (rest > 4) h2 = (h2 ^ mul(rotl(mul(k2 >>> 0, c2), 16), c3)) >>> 0;
  if (rest > 0) h1 = (h1 ^ mul(rotl(mul(k1 >>> 0, c1), 15), c2)) >>> 0;
  h1 = (h1 ^ length) >>> 0;
  h2 = (h2 ^ length) >>> 0;
  h3 = (h3 ^ length) >>> 0;
  h4 = (h4 ^ length) >>> 0;
  h1 = (h1 + h2 + h3 + h4) >>> 0;
  h2 = (h2 + h1) >>> 0;
  h3 = (h3 + h1) >>> 0;
  h4 = (h4 + h1) >>> 0;
  h1 = fmix(h1);
  h2 = fmix(h2);
  h3 = fmix(h3);
  h4 = fmix(h4);
  h1 = (h1 + h2 + h3 + h4) >>> 0;
  h2 = (h2 + h1) >>> 0;
  h3 = (h3 + h1) >>> 0;
  h4 = (h4 + h1) >>> 0;
  return [h1, h2, h3, h4];
}

/** The row's hash as fingerprint.ts reads it: h1 + h2·2^32 + h3·2^64 + h4·2^96. */
export function referenceRowHash(row: Uint8Array): bigint {
  const [h1, h2, h3, h4] = murmur3x86_128(row, 0x5eedb0c5);
  return BigInt(h1) + (BigInt(h2) << 32n) + (BigInt(h3) << 64n) + (BigInt(h4) << 96n);
}

/** The table fingerprint's digest of these rows, from the reference hash. */
export function referenceDigest(rows: Iterable<Uint8Array>): string {
  let sum = 0n;
  for (const row of rows) sum += referenceRowHash(row);
  return (sum % 2n ** 128n).toString(16).padStart(32, '0');
}
