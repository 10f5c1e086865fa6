import { constants } from 'node:buffer';
import { createRequire } from 'node:module';
import zlib from 'node:zlib';
import { errnoCode, MissingDependencyError } from '../errors.ts';

/**
 * zstd from node:zlib where Node has it (22.15 and later), otherwise from the zstd-napi addon.
 * Both read and write standard zstd frames, so a repository moves freely between Node versions.
 */
interface ZstdCodec {
  compress(data: Uint8Array, level: number): Buffer;
  /** Throws DecompressedTooLarge past `maxLength` bytes of output, having allocated no more. */
  decompress(data: Uint8Array, maxLength: number): Buffer;
}

/** Data that decompresses to more than the reader allows: a zstd bomb, or not what was written. */
export class DecompressedTooLarge extends Error {
  constructor(readonly maxLength: number) {
    super(`it decompresses to more than ${maxLength} bytes`);
    this.name = 'DecompressedTooLarge';
  }
}

interface ZlibWithZstd {
  zstdCompressSync(data: Uint8Array, options: { params: Record<number, number> }): Buffer;
  zstdDecompressSync(data: Uint8Array, options?: { maxOutputLength?: number }): Buffer;
  constants: { ZSTD_c_compressionLevel: number; ZSTD_c_hashLog?: number };
}

interface ZstdNapiBinding {
  CCtx: new () => {
    reset(directive: number): void;
    setParameter(parameter: number, value: number): void;
    /** Bytes written to `destination`. */
    compress2(destination: Uint8Array, source: Uint8Array): number;
  };
  DCtx: new () => {
    /** [bytes left to flush (0 at a frame's end), bytes written, bytes consumed] */
    decompressStream(destination: Uint8Array, source: Uint8Array): [number, number, number];
  };
  CParameter: { compressionLevel: number; hashLog: number };
  ResetDirective: { parameters: number };
  compressBound(size: number): number;
  /** The size a frame declares, null when it declares none. */
  getFrameContentSize(frame: Uint8Array): number | null;
}

/**
 * At level 1, a match-finding table of 2^12 entries instead of zstd's 2^14 for inputs of a chunk's
 * size: on pg_dump data 14% faster, and no bigger (91.7 MB against 91.8 MB for 400 MB of dump).
 * Any zstd decompresses the frames alike.
 */
const FAST_LEVEL_HASH_LOG = 12;
const hashLogFor = (level: number) => (level <= 1 ? FAST_LEVEL_HASH_LOG : undefined);

let codec: ZstdCodec | undefined;

function loadCodec(): ZstdCodec {
  const nodeZlib = zlib as unknown as Partial<ZlibWithZstd>;
  if (typeof nodeZlib.zstdCompressSync === 'function' && typeof nodeZlib.zstdDecompressSync === 'function') {
    const native = nodeZlib as ZlibWithZstd;
    const { ZSTD_c_compressionLevel: levelParam, ZSTD_c_hashLog: hashLogParam } = native.constants;
    return {
      compress: (data, level) => {
        const hashLog = hashLogFor(level);
        const params =
          hashLog && hashLogParam !== undefined
            ? { [levelParam]: level, [hashLogParam]: hashLog }
            : { [levelParam]: level };
        return native.zstdCompressSync(data, { params });
      },
      decompress: (data, maxLength) => {
        try {
          return native.zstdDecompressSync(data, { maxOutputLength: maxLength });
        } catch (error) {
          if (errnoCode(error) === 'ERR_BUFFER_TOO_LARGE') throw new DecompressedTooLarge(maxLength);
          throw error;
        }
      },
    };
  }
  let binding: ZstdNapiBinding;
  try {
    const load = createRequire(import.meta.url);
    binding = load('zstd-napi/binding') as ZstdNapiBinding;
  } catch (cause) {
    throw new MissingDependencyError(
      'zstd is not available: this Node.js has no built-in zstd and zstd-napi did not load',
      {
        hint: 'Use Node.js 22.15 or later, or reinstall strongbox so that the zstd-napi addon builds (it needs python3, make and g++).',
        cause,
      },
    );
  }
  return {
    compress: (data, level) => compressInto(binding, data, level),
    decompress: (data, maxLength) => boundedDecompress(binding, data, maxLength),
  };
}

/** Output room kept for compressing chunks (up to 1 MiB and a little): one per thread. */
const SCRATCH_LIMIT = 1024 * 1024 + 64 * 1024;
let compressContext: InstanceType<ZstdNapiBinding['CCtx']> | undefined;
let scratch: Buffer | undefined;

/**
 * zstd-napi's own compress() (the same parameters, the same frames) allocates its output room for
 * each call: for a backup, a chunk's size of garbage per chunk, which fragments the heap. Here the
 * room is kept, and only the compressed bytes are copied out.
 */
function compressInto(binding: ZstdNapiBinding, data: Uint8Array, level: number): Buffer {
  compressContext ??= new binding.CCtx();
  compressContext.reset(binding.ResetDirective.parameters);
  compressContext.setParameter(binding.CParameter.compressionLevel, level);
  const hashLog = hashLogFor(level);
  if (hashLog) compressContext.setParameter(binding.CParameter.hashLog, hashLog);
  const bound = binding.compressBound(data.length);
  if (bound > SCRATCH_LIMIT) {
    const output = Buffer.allocUnsafe(bound);
    return output.subarray(0, compressContext.compress2(output, data));
  }
  if (!scratch || scratch.length < bound) scratch = Buffer.allocUnsafeSlow(SCRATCH_LIMIT);
  return Buffer.from(scratch.subarray(0, compressContext.compress2(scratch, data)));
}

/**
 * The addon's own decompress trusts the frame's declared size and otherwise grows without end,
 * so output is taken in pieces and counted: past `maxLength`, it stops.
 */
function boundedDecompress(binding: ZstdNapiBinding, data: Uint8Array, maxLength: number): Buffer {
  const context = new binding.DCtx();
  const pieces: Buffer[] = [];
  let produced = 0;
  let input = data;
  // The size the frame declares, when it is small, is the first piece's: a chunk is then
  // decompressed into a buffer of its size, rather than into a larger one and copied out.
  let declared: number | null = null;
  try {
    declared = binding.getFrameContentSize(data);
  } catch {
    // Not a frame: decompressStream says so below.
  }
  let pieceSize =
    declared !== null && declared > 0 && declared < DECOMPRESS_PIECE ? declared : DECOMPRESS_PIECE;
  for (;;) {
    const piece = Buffer.allocUnsafe(Math.min(pieceSize, maxLength - produced + 1));
    pieceSize = DECOMPRESS_PIECE;
    const [left, written, consumed] = context.decompressStream(piece, input);
    produced += written;
    if (produced > maxLength) throw new DecompressedTooLarge(maxLength);
    pieces.push(piece.subarray(0, written));
    input = input.subarray(consumed);
    if (input.length === 0) {
      // 0: the last frame is decoded and flushed; otherwise, with room left over, input is missing.
      if (left === 0)
        return pieces.length === 1 && written === piece.length ? piece : Buffer.concat(pieces, produced);
      if (written < piece.length) throw new Error('zstd data is truncated');
    }
  }
}

const DECOMPRESS_PIECE = 1 << 20;

export function zstdCompress(data: Uint8Array, level: number): Buffer {
  codec ??= loadCodec();
  return codec.compress(data, level);
}

/** Decompresses, allowing at most `maxLength` bytes of output (DecompressedTooLarge past it). */
export function zstdDecompress(data: Uint8Array, maxLength: number = constants.MAX_LENGTH): Buffer {
  codec ??= loadCodec();
  return codec.decompress(data, maxLength);
}
