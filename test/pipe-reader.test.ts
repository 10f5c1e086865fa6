import { execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { PipeReadError, PipeReader } from '../src/postgres/physical/pipe-reader.ts';

const run = promisify(execFile);

describe('PipeReader', () => {
  let dir: string;
  let reader: PipeReader | undefined;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'strongbox-pipe-reader-'));
  });
  afterEach(async () => {
    await reader?.close();
    reader = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  async function pipes(...names: string[]): Promise<{ name: string; path: string }[]> {
    const list = names.map((name) => ({ name, path: path.join(dir, name) }));
    await run(
      'mkfifo',
      list.map((pipe) => pipe.path),
    );
    return list;
  }

  /** `cat` writing the file into the pipe, as another process would. */
  function writeInto(file: string, pipe: string) {
    const child = spawn('sh', ['-c', 'cat "$1" > "$2"', 'sh', file, pipe], { stdio: 'ignore' });
    return new Promise<number | null>((resolve) => child.once('close', resolve));
  }

  it('hands over every byte in order, far more than it holds at once, and the end', async () => {
    const [archive] = await pipes('base.tar');
    // 64 KiB buffers, 4 in flight: 256 KiB at most, for 24 MiB through the pipe.
    reader = await PipeReader.open([archive!], { bufferSize: 64 * 1024, maxInFlight: 4 });
    const source = randomBytes(24 * 1024 * 1024 + 12345);
    const file = path.join(dir, 'source');
    await writeFile(file, source);
    const written = writeInto(file, archive!.path);

    const stream = reader.streams[0]!;
    expect(await stream.opened).toBe(true);
    const hash = createHash('sha256');
    let length = 0;
    let pieces = 0;
    for await (const piece of stream) {
      expect(piece.length).toBeLessThanOrEqual(64 * 1024);
      hash.update(piece);
      length += piece.length;
      // A slow consumer, now and then: the reader must stop at its bound and go on after.
      if (++pieces % 50 === 0) await new Promise((resolve) => setTimeout(resolve, 5));
    }
    expect(await written).toBe(0);
    expect(length).toBe(source.length);
    expect(hash.digest('hex')).toBe(createHash('sha256').update(source).digest('hex'));
  });

  it('tells an archive that ended empty, and leaves a pipe nobody opened waiting', async () => {
    const [empty, unopened] = await pipes('1.tar', 'base.tar');
    reader = await PipeReader.open([empty!, unopened!]);
    // A writer that opens and closes without writing.
    const handle = await open(empty!.path, constants.O_WRONLY | constants.O_NONBLOCK);
    await handle.close();
    expect(await reader.streams[0]!.opened).toBe(false);
    const pieces: Uint8Array[] = [];
    for await (const piece of reader.streams[0]!) pieces.push(piece);
    expect(pieces).toEqual([]);
    const second = reader.streams[1]!;
    const state = await Promise.race([
      second.opened,
      new Promise((resolve) => setImmediate(resolve, 'waiting')),
    ]);
    expect(state).toBe('waiting');
  });

  it('rejects a stream whose reading thread dies before its end', async () => {
    const [archive] = await pipes('base.tar');
    reader = await PipeReader.open([archive!], { bufferSize: 64 * 1024, maxInFlight: 2 });
    const file = path.join(dir, 'source');
    await writeFile(file, randomBytes(4 * 1024 * 1024));
    const written = writeInto(file, archive!.path);
    let read = 0;
    const reading = (async () => {
      for await (const piece of reader!.streams[0]!) {
        read += piece.length;
        // The thread stops while the writer still has most of its bytes to write.
        if (read >= 64 * 1024) await reader!['worker'].terminate();
      }
    })();
    await expect(reading).rejects.toThrow(PipeReadError);
    expect(read).toBeLessThan(4 * 1024 * 1024);
    await reader.close();
    // The pipe's reading end is closed: its writer gets SIGPIPE instead of waiting forever.
    expect(await written).not.toBe(0);
  });

  it('rejects a pipe it cannot open', async () => {
    await expect(PipeReader.open([{ name: 'base.tar', path: path.join(dir, 'missing') }])).rejects.toThrow(
      /reading the named pipes failed: .*ENOENT/,
    );
  });
});
