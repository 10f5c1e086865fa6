import { sketchFromCandidates } from '../../src/chunking/similarity.ts';
import type { ChunkerParams } from '../../src/chunking/fastcdc.ts';

/**
 * FastCDC as fastcdc.ts defines it, written plainly over a whole input: the reference the
 * WebAssembly scan is checked against. Returns each chunk's length and sketch.
 */
export function referenceChunks(
  data: Uint8Array,
  params: ChunkerParams,
  gear: Int32Array,
): { length: number; sketch: number[] }[] {
  const bits = Math.log2(params.avg);
  const topBits = (n: number) => (((1 << n) - 1) << (32 - n)) | 0;
  const maskStrict = topBits(bits + 2);
  const maskLoose = topBits(bits - 2);
  const everyCut = 2 ** (32 - (bits - 2));
  const limit = Math.min(
    2 ** 32 - 1,
    Math.max(everyCut, Math.floor((2 ** 32 * 32) / (params.avg - params.min))),
  );
  const capacity = 4096;
  const chunks: { length: number; sketch: number[] }[] = [];
  for (let start = 0; start < data.length;) {
    const end = Math.min(data.length, start + params.max);
    let cut = end;
    let hash = 0;
    const ranks: number[] = [];
    const ends: number[] = [];
    for (let at = start + params.min; at < end; at++) {
      hash = ((hash << 1) + gear[data[at]!]!) | 0;
      if (hash >>> 0 < limit) {
        const mask = at - start < params.avg ? maskStrict : maskLoose;
        if ((hash & mask) === 0) {
          cut = at + 1;
          break;
        }
        if (ranks.length < capacity) {
          ranks.push(hash);
          ends.push(at - start);
        }
      }
    }
    const chunk = data.subarray(start, cut);
    chunks.push({
      length: chunk.length,
      sketch: sketchFromCandidates(chunk, Int32Array.from(ranks), Int32Array.from(ends), ranks.length),
    });
    start = cut;
  }
  return chunks;
}
