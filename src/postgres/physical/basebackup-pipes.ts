import { execFile, spawn } from 'node:child_process';
import { constants, linkSync, openSync, promises as fs, watch, type FSWatcher } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { errnoCode, MissingDependencyError, SourceError } from '../../errors.ts';
import { awaitedLater } from '../../util/awaited-later.ts';
import { stopOnInterrupt } from '../../util/interrupt.ts';
import { PipeReader, type PipeStream } from './pipe-reader.ts';

const run = promisify(execFile);

/** Kept of pg_basebackup's standard error, for the message when it fails. */
const STDERR_KEPT = 8192;

/** One archive pg_basebackup writes, as it writes it. */
export interface Archive {
  /** base.tar, <tablespace oid>.tar or backup_manifest. */
  name: string;
  /** Each piece valid until the next is asked for: its buffer is then filled again. */
  content: AsyncIterable<Uint8Array>;
}

export interface RunningBasebackup {
  /**
   * The tar archives in the order pg_basebackup opens them, each to be read to its end before the
   * next is asked for, then the manifest (read meanwhile).
   */
  archives: AsyncGenerator<Archive>;
  /** Resolves when pg_basebackup exited 0 having written only the expected archives. */
  finished: Promise<void>;
  /** Stops pg_basebackup (when the backup fails on our side) and removes the pipes. */
  stop(): Promise<void>;
}

/** pg_basebackup made its archive before the pipe was in place: the run is void, nothing was read. */
export class PipeRaceLostError extends SourceError {
  constructor(readonly archive: string) {
    super(`pg_basebackup opened ${archive} before its pipe was in place; no snapshot was written`, {
      hint: 'Run the backup again.',
    });
  }
}

export interface BasebackupCommand {
  program: string;
  /** Every argument but --pgdata, which is added here. */
  args: string[];
  env: NodeJS.ProcessEnv;
  /** Names of the archives expected: base.tar, one <oid>.tar per tablespace. */
  tars: string[];
  /** Whether a backup_manifest comes after the archives. */
  manifest: boolean;
  /** The error for a run that failed: `reason` as "exited with status 1", `stderr` its tail. */
  failure: (reason: string, stderr: string) => SourceError;
}

/**
 * Runs pg_basebackup in tar format with every archive it writes a named pipe that strongbox
 * reads as it is written: nothing of the cluster lands on local disk.
 *
 * pg_basebackup refuses a --pgdata directory that is not empty, so the pipes cannot be made in
 * it beforehand: pg_basebackup creates the directory itself (after its check), a watch on the
 * parent sees it appear, and the pipes, made beforehand in another directory, are hard-linked in
 * at once, long before pg_basebackup opens the first archive (it first asks the server for the
 * WAL segment size and the system's identity, and waits for the backup's checkpoint). Should it
 * ever open one first, the link fails and the run is void (PipeRaceLostError): pg_basebackup is
 * stopped at once, before it wrote more than a few blocks to that file.
 *
 * pg_basebackup writes the tablespaces' archives first, then base.tar, then the manifest (as
 * backup_manifest.tmp, renamed at the end); each is read as pg_basebackup opens it, so no order
 * is assumed. --no-sync is required: its final fsync would open the pipes again and wait forever.
 *
 * The archives' pipes are read on a thread of their own (pipe-reader.ts) that keeps them drained
 * up to 16 MiB ahead of the main thread: a pipe holds 64 KiB, and pg_basebackup would otherwise
 * wait whenever the main thread is busy with what it read before.
 */
export async function startBasebackup(command: BasebackupCommand): Promise<RunningBasebackup> {
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'strongbox-basebackup-'));
  const staging = path.join(work, 'pipes');
  const target = path.join(work, 'archives');
  const names = [...command.tars, ...(command.manifest ? [MANIFEST_PIPE] : [])];
  /** The manifest's pipe, read on this thread: a few MiB at most, drained as it comes. */
  let manifestSocket: net.Socket | undefined;
  /** The archives' pipes, read on a thread of their own (pipe-reader.ts). */
  let reader: PipeReader | undefined;
  const removePipes = async () => {
    manifestSocket?.destroy();
    await reader?.close();
    await fs.rm(work, { recursive: true, force: true });
  };
  try {
    await fs.mkdir(staging, { mode: 0o700 });
    await makePipes(names.map((name) => path.join(staging, name)));
    if (command.manifest) {
      // Non-blocking: opened now, before any writer, and read through the event loop.
      // A raw descriptor, which the socket owns and closes (a FileHandle would close it when collected).
      const fd = openSync(path.join(staging, MANIFEST_PIPE), constants.O_RDONLY | constants.O_NONBLOCK);
      manifestSocket = new net.Socket({ fd, readable: true, writable: false });
      manifestSocket.pause();
    }
    reader = await PipeReader.open(command.tars.map((name) => ({ name, path: path.join(staging, name) })));
  } catch (error) {
    await removePipes();
    throw error;
  }

  /** Why the pipes could not be put in place, which voids the run. */
  let linkFailure: SourceError | undefined;
  let linked = false;
  const linkPipes = () => {
    if (linked || linkFailure) return;
    for (const name of names) {
      try {
        linkSync(path.join(staging, name), path.join(target, name));
      } catch (error) {
        // The directory is not there yet (another event), or pg_basebackup already removed it after failing.
        if (errnoCode(error) === 'ENOENT') return;
        linkFailure =
          errnoCode(error) === 'EEXIST'
            ? new PipeRaceLostError(name)
            : new SourceError(`cannot put the pipe for ${name} in place: ${(error as Error).message}`, {
                cause: error,
              });
        child.kill('SIGKILL');
        return;
      }
    }
    linked = true;
  };
  const watcher: FSWatcher = watch(work, linkPipes);

  const child = spawn(command.program, [...command.args, `--pgdata=${target}`], {
    env: command.env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  stopOnInterrupt(child);
  let stderr = '';
  child.stderr.on('data', (data: Buffer) => (stderr = (stderr + data.toString()).slice(-STDERR_KEPT)));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', (cause: NodeJS.ErrnoException) =>
      reject(
        new MissingDependencyError(`cannot run ${command.program}: ${cause.code ?? cause.message}`, {
          cause,
          hint: 'Install the PostgreSQL client programs.',
        }),
      ),
    );
    child.once('close', (code, signal) => resolve({ code, signal }));
  });
  awaitedLater(exited);

  const finished = awaitedLater(
    (async () => {
      try {
        const { code, signal } = await exited;
        if (linkFailure) throw linkFailure;
        if (code !== 0)
          throw command.failure(signal ? `was killed by ${signal}` : `exited with status ${code}`, stderr);
        await requireOnlyPipes(target, new Set([...names, MANIFEST_NAME]));
      } finally {
        watcher.close();
      }
    })(),
  );

  const streams = reader.streams;
  // pg_basebackup writes the manifest while base.tar is still open (its end comes last): read as
  // soon as it is opened, or both would wait for each other.
  const manifest = manifestSocket ? awaitedLater(drain(manifestSocket)) : undefined;

  async function* archives(): AsyncGenerator<Archive> {
    const waiting = new Set(streams);
    const ended = exited.then(
      () => undefined,
      () => undefined,
    );
    while (waiting.size > 0) {
      const opened = await Promise.race([...[...waiting].map((stream) => stream.opened), ended]);
      if (opened === undefined) {
        // pg_basebackup exited (`finished` says whether that was a success), perhaps with a last
        // archive still whole in its pipe. Opening and closing each waiting pipe's writing end
        // ends it for certain: one pg_basebackup opened holds data, one it did not is empty.
        for (const stream of waiting) await endPipe(path.join(staging, stream.name));
        for (const stream of inOpeningOrder(waiting)) {
          if (await stream.opened) yield { name: stream.name, content: stream };
        }
        break;
      }
      // The pipes are drained ahead of the main thread: more than one may have opened meanwhile.
      // pg_basebackup writes one archive after the other, so the first it opened comes first.
      const next = inOpeningOrder(waiting)[0]!;
      waiting.delete(next);
      yield { name: next.name, content: next };
    }
    if (!manifest) return;
    await ended;
    await endPipe(path.join(staging, MANIFEST_PIPE));
    const bytes = await manifest;
    if (bytes.length > 0)
      yield {
        name: MANIFEST_NAME,
        content: (async function* () {
          yield bytes;
        })(),
      };
  }

  return {
    archives: archives(),
    finished,
    async stop() {
      child.kill('SIGTERM');
      await exited.catch(() => undefined);
      watcher.close();
      await removePipes();
    },
  };
}

/** pg_basebackup writes the manifest under this name, and renames it when the backup is complete. */
const MANIFEST_PIPE = 'backup_manifest.tmp';
const MANIFEST_NAME = 'backup_manifest';

async function makePipes(paths: string[]): Promise<void> {
  try {
    await run('mkfifo', ['-m', '600', '--', ...paths]);
  } catch (cause) {
    throw new MissingDependencyError(
      `cannot make the named pipes pg_basebackup writes into: ${(cause as Error).message}`,
      {
        cause,
        hint: 'Install mkfifo (GNU coreutils).',
      },
    );
  }
}

/** Opens a pipe's writing end and closes it: its reader sees the end, as it would after a writer. */
async function endPipe(pipe: string): Promise<void> {
  let handle;
  try {
    handle = await fs.open(pipe, constants.O_WRONLY | constants.O_NONBLOCK);
  } catch (error) {
    // ENXIO: no reader any more; the pipe's reading already ended.
    if (errnoCode(error) === 'ENXIO') return;
    throw error;
  }
  await handle.close();
}

/** The manifest lists every file of the cluster, ~150 bytes each: beyond this it is refused. */
export const MAX_MANIFEST = 512 * 1024 * 1024;

/** Everything a pipe holds, read from when it is opened to its end. */
async function drain(socket: net.Socket): Promise<Buffer> {
  const pieces: Buffer[] = [];
  let length = 0;
  for await (const piece of socket as AsyncIterable<Buffer>) {
    length += piece.length;
    if (length > MAX_MANIFEST) {
      socket.destroy();
      throw new SourceError(`the backup manifest is over ${MAX_MANIFEST} bytes; no snapshot was written`);
    }
    pieces.push(piece);
  }
  return Buffer.concat(pieces);
}

/** The pipes in the order pg_basebackup opened them; those it did not open last. */
function inOpeningOrder(streams: Set<PipeStream>): PipeStream[] {
  return [...streams].sort((a, b) => a.order - b.order);
}

/**
 * A tablespace created during the backup gets an archive strongbox has no pipe for: it was
 * written to disk, and the snapshot would miss it.
 */
async function requireOnlyPipes(directory: string, expected: Set<string>): Promise<void> {
  const found = await fs.readdir(directory).catch(() => [] as string[]);
  const unexpected = found.filter((name) => !expected.has(name));
  if (unexpected.length > 0)
    throw new SourceError(
      `pg_basebackup wrote ${unexpected.join(', ')}, which strongbox did not expect (a tablespace created during the backup?); no snapshot was written`,
      { hint: 'Run the backup again.' },
    );
}
