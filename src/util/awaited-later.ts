/**
 * Marks `promise` as one that is awaited later, and returns it unchanged. A promise that rejects
 * before anything awaits it is an unhandled rejection, which ends the process with a stack trace
 * and exit 1; a child process started early (pg_dump while the repository opens) can fail at
 * any moment before its reader gets to it. Whoever awaits the promise later still sees the
 * rejection: this only tells Node that someone will.
 */
export function awaitedLater<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined);
  return promise;
}
