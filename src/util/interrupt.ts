/**
 * Work to do before the process exits on SIGINT or SIGTERM: release a lock, stop a child, put a
 * database back in service. The library registers what it holds; the CLI, which owns the signal
 * handlers, runs these and then exits. A SIGKILL runs nothing, so what is registered here must
 * also be recoverable by a later run.
 */
type Cleanup = () => Promise<void> | void;

const cleanups = new Set<Cleanup>();

/** Registers `cleanup` until the returned function is called. */
export function onInterrupt(cleanup: Cleanup): () => void {
  cleanups.add(cleanup);
  return () => {
    cleanups.delete(cleanup);
  };
}

/** Runs every registered cleanup, newest first; a failing one does not stop the others. */
export async function runInterruptCleanups(): Promise<void> {
  for (const cleanup of [...cleanups].reverse()) {
    cleanups.delete(cleanup);
    try {
      await cleanup();
    } catch {
      // Exiting anyway: what a cleanup could not undo, the next run finds and reports.
    }
  }
}
