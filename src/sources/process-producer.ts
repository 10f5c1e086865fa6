import { spawn } from 'node:child_process';
import { SourceError } from '../errors.ts';
import { awaitedLater } from '../util/awaited-later.ts';
import { stopOnInterrupt } from '../util/interrupt.ts';
import type { StreamProducer } from './stdin.ts';

/** Kept of a program's standard error, for the message when it fails. */
const STDERR_KEPT = 4096;

export interface ProcessProducerOptions {
  env?: NodeJS.ProcessEnv;
  /** Keep the tail of standard error for the failure message instead of passing it through. */
  captureStderr?: boolean;
  /**
   * The error for a run that failed: `reason` is "was killed by SIGKILL" or "exited with status
   * 3"; `stderr` is the captured tail ('' unless captureStderr).
   */
  failure: (reason: string, stderr: string) => SourceError;
}

/** A program's standard output as a stream producer: it succeeds only when the program exits 0. */
export function processProducer(
  command: string,
  args: string[],
  options: ProcessProducerOptions,
): StreamProducer & { content: AsyncIterable<Uint8Array> } {
  const child = spawn(command, args, {
    env: options.env ?? process.env,
    stdio: ['ignore', 'pipe', options.captureStderr ? 'pipe' : 'inherit'],
  });
  stopOnInterrupt(child);
  // Standard output is always a pipe here.
  const stdout = child.stdout!;
  // When a child exits, Node resumes its unread output, so that output nobody reads is thrown
  // away, unless a 'readable' listener holds it. A producer started before its reader is ready
  // (pg_dump while the repository opens) may have finished by then: its output must wait.
  stdout.on('readable', holdUntilRead);
  let stderr = '';
  child.stderr?.on('data', (data: Buffer) => (stderr = (stderr + data.toString()).slice(-STDERR_KEPT)));
  // The program may fail before anyone reads its output (pg_dump started while the repository opens).
  const finished = awaitedLater(
    new Promise<void>((resolve, reject) => {
      child.once('error', (cause: NodeJS.ErrnoException) =>
        reject(
          new SourceError(`cannot run ${command}: ${cause.code ?? cause.message}`, {
            cause,
            hint: 'Check the program name and PATH.',
          }),
        ),
      );
      child.once('close', (code, signal) => {
        if (code === 0) resolve();
        else
          reject(options.failure(signal ? `was killed by ${signal}` : `exited with status ${code}`, stderr));
      });
    }),
  );
  return {
    content: stdout,
    finished,
    stop: () => {
      stdout.destroy();
      child.kill('SIGTERM');
    },
  };
}

function holdUntilRead(): void {}
