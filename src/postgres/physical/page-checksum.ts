import { PAGE_SIZE } from './page-chunks.ts';

/**
 * PostgreSQL's data page checksum (storage/checksum_impl.h), for reading a data directory
 * directly: what the server checks when pg_basebackup asks it for the files, strongbox checks
 * itself when it reads them.
 *
 * 32 FNV-1a-like lanes over the page as little-endian 32-bit words (pd_checksum counted as zero),
 * two mixing rounds of zeros, the lanes folded by XOR, the block number mixed in, and the result
 * taken to 1..65535 so that zero can mean "no checksum".
 */

const LANES = 32;
const FNV_PRIME = 16777619;
const BASE_OFFSETS = Uint32Array.of(
  0x5b1f36e9,
  0xb8525960,
  0x02ab50aa,
  0x1de66d2a,
  0x79ff467a,
  0x9bb9f8a3,
  0x217e7cd2,
  0x83e13d2c,
  0xf8d4474f,
  0xe39eb970,
  0x42c6ae16,
  0x993216fa,
  0x7b093b5d,
  0x98daff3c,
  0xf718902a,
  0x0b1c9cdb,
  0xe58f764b,
  0x187636bc,
  0x5d7b3bb1,
  0xe73de7de,
  0x92bec979,
  0xcca6c0b2,
  0x304a0979,
  0x85aa43d4,
  0x783125bb,
  0x6ca8eaa2,
  0xe407eac6,
  0x4b5cfc3e,
  0x9fbf8c76,
  0x15ca20be,
  0xf2ca9fd3,
  0x959bd756,
);
/** pd_checksum's offset in the page header, and the word that holds it. */
const CHECKSUM_OFFSET = 8;
const CHECKSUM_WORD = CHECKSUM_OFFSET / 4;
/** A relation's segment files hold this many pages (1 GiB of 8 KiB pages). */
export const PAGES_PER_SEGMENT = 131072;

const sums = new Uint32Array(LANES);

function mix(sum: number, value: number): number {
  const tmp = (sum ^ value) >>> 0;
  return (Math.imul(tmp, FNV_PRIME) ^ (tmp >>> 17)) >>> 0;
}

/** The checksum of the page at `offset` of `bytes` (PAGE_SIZE bytes), as block `block` of its relation. */
export function pageChecksum(bytes: Uint8Array, offset: number, block: number): number {
  // Aligned words when the page is; else one copy of it. (Native order: little-endian hosts.)
  let words: Uint32Array;
  if ((bytes.byteOffset + offset) % 4 === 0)
    words = new Uint32Array(bytes.buffer, bytes.byteOffset + offset, PAGE_SIZE / 4);
  else {
    const copy = new Uint8Array(PAGE_SIZE);
    copy.set(bytes.subarray(offset, offset + PAGE_SIZE));
    words = new Uint32Array(copy.buffer);
  }
  sums.set(BASE_OFFSETS);
  // pd_checksum counts as zero: cleared for the computation and put back, as the server does.
  const saved = words[CHECKSUM_WORD]!;
  words[CHECKSUM_WORD] = saved & 0xffff0000;
  for (let row = 0; row < PAGE_SIZE / 4; row += LANES) {
    for (let lane = 0; lane < LANES; lane++) sums[lane] = mix(sums[lane]!, words[row + lane]!);
  }
  words[CHECKSUM_WORD] = saved;
  let result = 0;
  for (let lane = 0; lane < LANES; lane++) {
    const sum = mix(mix(sums[lane]!, 0), 0);
    result = (result ^ sum) >>> 0;
  }
  result = (result ^ block) >>> 0;
  return (result % 65535) + 1;
}

/** What the page at `offset` says of itself: its LSN, its checksum, and whether it was never initialised. */
export function pageHeader(
  bytes: Uint8Array,
  offset: number,
): { lsn: bigint; checksum: number; isNew: boolean } {
  const view = new DataView(bytes.buffer, bytes.byteOffset + offset, 16);
  // pd_lsn is two 32-bit halves, high first; pd_upper 0 marks a page never initialised.
  const lsn = (BigInt(view.getUint32(0, true)) << 32n) | BigInt(view.getUint32(4, true));
  return { lsn, checksum: view.getUint16(CHECKSUM_OFFSET, true), isNew: view.getUint16(14, true) === 0 };
}

/**
 * Whether the page at `offset` is one the backup can take: never initialised (the server
 * verifies none), changed since the backup began (`startLsn`: WAL replay rewrites it whole), or
 * with a checksum that matches.
 */
export function pageVerifies(bytes: Uint8Array, offset: number, block: number, startLsn: bigint): boolean {
  const header = pageHeader(bytes, offset);
  if (header.isNew || header.lsn >= startLsn) return true;
  return pageChecksum(bytes, offset, block) === header.checksum;
}
