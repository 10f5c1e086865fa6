import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { Chunker, DEFAULT_CHUNKER_PARAMS, gearTable } from '../src/chunking/fastcdc.ts';

const PIECE = 1 << 20;
const PARAMS = DEFAULT_CHUNKER_PARAMS;
const SEED = new TextEncoder().encode('strongbox bench gear seed');
/** Enough input for the JIT to compile the hot loop before the timed pass. */
const WARM_UP_PIECES = 64;

export interface ChunkerFigures {
  bytes: number;
  chunks: number;
  chunkerSeconds: number;
  sha256Seconds: number;
}

/** The whole file in memory, in pieces of 1 MiB as a stream would deliver them. */
async function readPieces(file: string): Promise<Buffer[]> {
  const pieces: Buffer[] = [];
  for await (const piece of createReadStream(file, { highWaterMark: PIECE })) pieces.push(piece as Buffer);
  return pieces;
}

function chunkAll(pieces: Buffer[]): number {
  const chunker = new Chunker(PARAMS, gearTable(SEED));
  let chunks = 0;
  for (const piece of pieces) chunks += chunker.push(piece).length;
  return chunks + (chunker.cut() ? 1 : 0);
}

function hashAll(pieces: Buffer[]): void {
  const hash = createHash('sha256');
  for (const piece of pieces) hash.update(piece);
  hash.digest();
}

function timed<T>(action: () => T): { result: T; seconds: number } {
  const started = performance.now();
  const result = action();
  return { result, seconds: (performance.now() - started) / 1000 };
}

/**
 * FastCDC over a real dump, in process, from memory so that only the chunker is timed; SHA-256 of
 * the same pieces (node:crypto, native code) is the same run's measure of how fast this machine is.
 */
export async function measureChunker(file: string): Promise<ChunkerFigures> {
  const pieces = await readPieces(file);
  chunkAll(pieces.slice(0, WARM_UP_PIECES));
  const chunking = timed(() => chunkAll(pieces));
  const hashing = timed(() => hashAll(pieces));
  return {
    bytes: pieces.reduce((sum, piece) => sum + piece.length, 0),
    chunks: chunking.result,
    chunkerSeconds: chunking.seconds,
    sha256Seconds: hashing.seconds,
  };
}
