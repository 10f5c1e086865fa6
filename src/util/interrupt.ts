import type { ChildProcess } from 'node:child_process';

/**
 * Work to do before the process exits on SIGINT or SIGTERM: release a lock, stop a child, put a
 * database back in service. The library registers what it holds; the CLI, which owns the signal
 * handlers, runs these and then exits. A SIGKILL runs nothing, so what is registered here must
 * also be recoverable by a later run.
 */
type Cleanup = () => Promise<void> | void;

const cleanups = new Set<Cleanup>();
let begun = false;

/**
 * True once SIGINT or SIGTERM was received: what is written after that (a snapshot whose source
 * ended because the same Ctrl-C killed it) could be cut short without knowing it, so it is not.
 */
export function interruptBegun(): boolean {
  return begun;
}

/** Registers `cleanup` until the returned function is called. */
export function onInterrupt(cleanup: Cleanup): () => void {
  cleanups.add(cleanup);
  return () => {
    cleanups.delete(cleanup);
  };
}

/** Runs every registered cleanup, newest first; a failing one does not stop the others. */
export async function runInterruptCleanups(): Promise<void> {
  begun = true;
  for (const cleanup of [...cleanups].reverse()) {
    cleanups.delete(cleanup);
    try {
      await cleanup();
    } catch {
      // Exiting anyway: what a cleanup could not undo, the next run finds and reports.
    }
  }
}

/**
 * Stops `child` on SIGINT or SIGTERM, and waits for it to exit, for as long as it runs. A
 * terminal's Ctrl-C reaches the whole process group, but a SIGTERM sent to strongbox alone does
 * not reach its children, which would go on (a pg_dump holding a snapshot, a pg_restore writing).
 */
export function stopOnInterrupt(child: ChildProcess): void {
  const forget = onInterrupt(
    () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  );
  child.once('exit', forget);
  child.once('error', forget);
}
