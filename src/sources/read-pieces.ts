import { read } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { promisify } from 'node:util';

/** Large reads: fewer system calls, and one buffer for the whole file. */
export const READ_SIZE = 1 << 20;

const readFd = promisify(read);

/**
 * Reads a file from its current position to the end into one reused buffer. Each piece is a
 * view of that buffer, valid until the next piece is requested: content sinks consume a piece
 * before asking for the next, so a backup's reads produce no garbage.
 */
export async function* readPieces(source: FileHandle | number): AsyncGenerator<Uint8Array> {
  const buffer = Buffer.allocUnsafeSlow(READ_SIZE);
  while (true) {
    const bytesRead =
      typeof source === 'number'
        ? (await readFd(source, buffer, 0, READ_SIZE, null)).bytesRead
        : (await source.read(buffer, 0, READ_SIZE, null)).bytesRead;
    if (bytesRead === 0) return;
    yield buffer.subarray(0, bytesRead);
  }
}
