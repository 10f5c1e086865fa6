import type { Chunk } from './fastcdc.ts';

/**
 * Cuts a stream every `size` bytes, for content whose layout is fixed: a relation file's pages
 * stay where they are when rows change, so a changed chunk is found at its own offset in the
 * file's previous version, which is its delta base. Content-defined cuts would find the same
 * places at the cost of hashing every byte, and their sketches would only find that base again.
 *
 * The same contract as the Chunker: chunks are views, valid until the next `push()` or `cut()`,
 * of the input when a chunk lies inside it (no copy), else of one of two buffers that alternate.
 * Chunks carry no sketch.
 */
export class FixedCutter {
  private readonly carry: [Uint8Array, Uint8Array];
  private carryIndex: 0 | 1 = 0;
  private pendingLength = 0;

  constructor(readonly size: number) {
    if (!Number.isSafeInteger(size) || size <= 0) throw new RangeError(`a chunk size of ${size} bytes`);
    this.carry = [new Uint8Array(size), new Uint8Array(size)];
  }

  /** Feeds `data` and returns the chunks it completed, in order. */
  push(data: Uint8Array): Chunk[] {
    const chunks: Chunk[] = [];
    let at = 0;
    if (this.pendingLength > 0) {
      at = Math.min(this.size - this.pendingLength, data.length);
      this.carry[this.carryIndex].set(data.subarray(0, at), this.pendingLength);
      this.pendingLength += at;
      if (this.pendingLength === this.size) chunks.push(this.takeCarried());
    }
    for (; data.length - at >= this.size; at += this.size) {
      chunks.push({ data: data.subarray(at, at + this.size), sketch: [] });
    }
    if (at < data.length) {
      this.carry[this.carryIndex].set(data.subarray(at), 0);
      this.pendingLength = data.length - at;
    }
    return chunks;
  }

  /** Ends the current chunk here, if it has any bytes. */
  cut(): Chunk | undefined {
    return this.pendingLength > 0 ? this.takeCarried() : undefined;
  }

  /** Forgets any partial chunk, ready for a new stream. */
  reset(): void {
    this.pendingLength = 0;
  }

  private takeCarried(): Chunk {
    const data = this.carry[this.carryIndex].subarray(0, this.pendingLength);
    this.carryIndex = this.carryIndex === 0 ? 1 : 0;
    this.pendingLength = 0;
    return { data, sketch: [] };
  }
}
