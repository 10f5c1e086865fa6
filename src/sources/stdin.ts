import { fstatSync } from 'node:fs';
import { ConfigError, SourceError } from '../errors.ts';
import { isFileName, LIMITS } from '../repository/schemas.ts';
import type { TreeNode } from '../repository/tree.ts';
import { awaitedLater } from '../util/awaited-later.ts';
import { processProducer } from './process-producer.ts';
import { readPieces } from './read-pieces.ts';
import {
  previousContent,
  type BackupSource,
  type ContentPiece,
  type ContentSink,
  type PreviousContent,
  type SourceResult,
} from './source.ts';

/** Where a stream comes from: its bytes, the producer's verdict, and how to stop it early. */
export interface StreamProducer {
  content: AsyncIterable<ContentPiece>;
  /**
   * Resolves when the producer succeeded; rejects with a SourceError when it failed. It may fail
   * before the stream is read, so it is made awaitedLater: never an unhandled rejection.
   */
  finished: Promise<void>;
  stop(): void;
}

/**
 * One stream stored as one file node: standard input, or the output of a command whose exit
 * status decides whether the snapshot may be written.
 */
export interface StreamDescription {
  /** The snapshot's name. */
  name: string;
  /** The file's name in the snapshot (default: the snapshot's name). */
  fileName?: string;
  kind?: string;
  /** Facts about the stream for the snapshot, asked for once the stream is complete. */
  details?: () => Record<string, unknown>;
}

export function streamSource(
  description: StreamDescription,
  open: () => StreamProducer | Promise<StreamProducer>,
): BackupSource {
  const { name, fileName = name, kind = 'stdin', details } = description;
  if (!isFileName(fileName))
    throw new ConfigError(
      `${JSON.stringify(fileName)} cannot be a file's name in a snapshot: it must be one path component (no "/"), not "." or "..", of at most ${LIMITS.nodeName} characters`,
      { hint: 'Choose another name.' },
    );
  return {
    kind,
    name,
    async run(sink, parent): Promise<SourceResult> {
      const previous = await previousContent(parent, fileName);
      const node = await storeProduced(sink, await open(), fileName, previous);
      const tree = await sink.storeTree({ nodes: [node] });
      return {
        tree,
        size: node.size ?? 0,
        paths: [fileName],
        summary: { files: 1, bytes: node.size ?? 0 },
        ...(details ? { details: details() } : {}),
      };
    },
  };
}

/**
 * Stores what a producer streams as one file node named `fileName`. Only a producer that
 * finishes cleanly makes a node: its failure fails the backup, and so does a stream that breaks
 * off, reported as the producer's own failure when it has one.
 */
export async function storeProduced(
  sink: ContentSink,
  producer: StreamProducer,
  fileName: string,
  previous?: PreviousContent,
): Promise<TreeNode> {
  awaitedLater(producer.finished);
  const mtimeNs = (BigInt(Date.now()) * 1_000_000n).toString();
  let contentFailed = false;
  const content = (async function* () {
    try {
      yield* producer.content;
    } catch (error) {
      contentFailed = true;
      throw error;
    }
  })();
  let stored;
  try {
    stored = await sink.storeContent(content, previous);
  } catch (error) {
    // A stream that broke off usually means the producer died: its own failure is the cause to
    // report. Anything else failed on our side: stop the producer and say so.
    if (contentFailed) {
      const producerFailure = await settledWithin(producer.finished, PRODUCER_GRACE_MS);
      producer.stop();
      throw producerFailure ?? error;
    }
    producer.stop();
    await producer.finished.catch(() => undefined);
    throw error;
  }
  // The stream ended; only a clean exit of the producer makes it a complete backup.
  await producer.finished;
  return {
    name: fileName,
    type: 'file',
    mode: 0o600,
    mtimeNs,
    uid: process.getuid?.() ?? 0,
    gid: process.getgid?.() ?? 0,
    size: stored.size,
    content: stored.blobs,
  };
}

/**
 * Standard input, or `input` when given. A regular file redirected to standard input is read in
 * 1 MiB reads into one buffer rather than through a stream's 64 KiB ones.
 */
export function stdinSource(name: string, input?: AsyncIterable<Uint8Array>): BackupSource {
  return streamSource({ name }, () => ({
    content: input ?? (fstatSync(0).isFile() ? readPieces(0) : process.stdin),
    finished: Promise.resolve(),
    stop: () => undefined,
  }));
}

/** Runs `command` and stores its standard output; a non-zero exit or a signal fails the backup. */
export function commandSource(name: string, command: string, args: string[]): BackupSource {
  return streamSource({ name }, () =>
    processProducer(command, args, {
      failure: (reason) =>
        new SourceError(`${command} ${reason}; no snapshot was written`, {
          hint: 'Fix the command so that it succeeds, then run the backup again.',
        }),
    }),
  );
}

/** How long a producer whose stream broke off may take to exit and say why. */
const PRODUCER_GRACE_MS = 2000;

/** The rejection of `finished` if it fails within `ms`, else undefined. */
async function settledWithin(finished: Promise<void>, ms: number): Promise<unknown> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), ms)));
  try {
    const outcome = await Promise.race([
      finished.then(
        () => 'ok' as const,
        (error: unknown) => ({ error }),
      ),
      timeout,
    ]);
    return typeof outcome === 'object' ? outcome.error : undefined;
  } finally {
    clearTimeout(timer);
  }
}
