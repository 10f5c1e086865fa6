import { read } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { promisify } from 'node:util';

/** Large reads: fewer system calls and thread-pool round trips. */
export const READ_SIZE = 1 << 20;

const readFd = promisify(read);

function readInto(source: FileHandle | number, buffer: Buffer): Promise<number> {
  return typeof source === 'number'
    ? readFd(source, buffer, 0, buffer.length, null).then((result) => result.bytesRead)
    : source.read(buffer, 0, buffer.length, null).then((result) => result.bytesRead);
}

/**
 * Reads a file from its current position to the end, one read ahead: while the consumer works
 * on a piece, the next is read into the other of two buffers. Each piece is a view, valid until
 * the next piece is requested (content sinks consume a piece before asking for the next), so a
 * backup's reads produce no garbage and never leave the consumer waiting on the disk.
 */
export async function* readPieces(source: FileHandle | number): AsyncGenerator<Uint8Array> {
  const buffers = [Buffer.allocUnsafeSlow(READ_SIZE), Buffer.allocUnsafeSlow(READ_SIZE)] as const;
  let current = 0;
  let next = readInto(source, buffers[current]!);
  try {
    while (true) {
      const bytesRead = await next;
      if (bytesRead === 0) return;
      const piece = buffers[current]!.subarray(0, bytesRead);
      current = 1 - current;
      next = readInto(source, buffers[current]!);
      yield piece;
    }
  } finally {
    // A consumer that stops early closes the file next: let the read ahead finish first.
    await next.catch(() => undefined);
  }
}
