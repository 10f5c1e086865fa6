import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { currentUsername } from '../util/host.ts';
import { onInterrupt } from '../util/interrupt.ts';
import { LockedError, LockLostError, MissingDependencyError } from '../errors.ts';
import type { StorageBackend } from '../storage/backend.ts';
import { parseLock } from './schemas.ts';
import { openJson, sealJson } from './sealed-file.ts';
import { folderOf, objectName } from './layout.ts';

/**
 * Locks (`locks/<random>`): backups and checks share the repository, maintenance excludes
 * everyone. A lock is refreshed while its holder runs; one not refreshed for STALE_AFTER_MS, or
 * held by a process of this host that no longer exists, is stale and ignored.
 */
export interface LockInfo {
  host: string;
  pid: number;
  username: string;
  exclusive: boolean;
  operation: string;
  created: string;
  refreshed: string;
}

export const REFRESH_EVERY_MS = 5 * 60 * 1000;
export const STALE_AFTER_MS = 30 * 60 * 1000;

export interface ListedLock {
  name: string;
  info?: LockInfo;
  stale: boolean;
}

export class Lock {
  private timer: NodeJS.Timeout | undefined;
  private released = false;
  /** When the lock was last written: others take it for stale STALE_AFTER_MS later. */
  private writtenAt = Date.now();

  constructor(
    private readonly backend: StorageBackend,
    private readonly metadataKey: Buffer,
    readonly name: string,
    private info: LockInfo,
    /** Unregisters the removal of this lock on SIGINT/SIGTERM. */
    private readonly forgetInterrupt: () => void,
  ) {
    this.timer = setInterval(() => void this.refresh().catch(() => undefined), REFRESH_EVERY_MS);
    this.timer.unref();
  }

  async refresh(): Promise<void> {
    if (this.released) return;
    const now = Date.now();
    this.info = { ...this.info, refreshed: new Date(now).toISOString() };
    await this.backend.put(this.name, sealJson('SBLK', this.metadataKey, this.info));
    this.writtenAt = now;
  }

  get isReleased(): boolean {
    return this.released;
  }

  /**
   * Before a writer makes its work visible (a snapshot): throws when the lock may have looked
   * stale to others meanwhile (the process was suspended, or the storage refused its refreshes),
   * since a prune may then have deleted what the work depends on; otherwise refreshes it.
   */
  async confirm(): Promise<void> {
    if (this.released) return;
    // A refresh is due every REFRESH_EVERY_MS: past the next one, the margin is gone.
    if (Date.now() - this.writtenAt > STALE_AFTER_MS - REFRESH_EVERY_MS) throw new LockLostError(this.info);
    await this.refresh();
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    clearInterval(this.timer);
    await this.backend.delete(this.name);
    this.forgetInterrupt();
  }
}

export async function acquireLock(
  backend: StorageBackend,
  metadataKey: Buffer,
  options: { exclusive: boolean; operation: string },
): Promise<Lock> {
  const now = new Date().toISOString();
  const info: LockInfo = {
    host: os.hostname(),
    pid: process.pid,
    username: currentUsername(),
    exclusive: options.exclusive,
    operation: options.operation,
    created: now,
    refreshed: now,
  };
  const name = objectName('lock', randomBytes(16).toString('hex'));
  // Registered before the write: an interrupt while it is under way must not leave it behind.
  const forgetInterrupt = onInterrupt(() => backend.delete(name));
  let conflicts: ListedLock[];
  try {
    await backend.put(name, sealJson('SBLK', metadataKey, info));
    // Written first, checked second: two processes racing each see the other's lock.
    conflicts = (await listLocks(backend, metadataKey)).filter(
      (lock) => lock.name !== name && !lock.stale && (options.exclusive || lock.info?.exclusive !== false),
    );
  } catch (error) {
    await backend.delete(name).catch(() => undefined);
    forgetInterrupt();
    throw error;
  }
  if (conflicts.length > 0) {
    await backend.delete(name);
    forgetInterrupt();
    const holder = conflicts[0]!.info!;
    const who = `${holder.operation} by pid ${holder.pid} on ${holder.host} since ${holder.created}`;
    throw new LockedError(`the repository is locked (${who})`, {
      hint: 'Wait for it to finish; if that process is gone, run `strongbox unlock`.',
    });
  }
  return new Lock(backend, metadataKey, name, info, forgetInterrupt);
}

export async function listLocks(backend: StorageBackend, metadataKey: Buffer): Promise<ListedLock[]> {
  const locks: ListedLock[] = [];
  for await (const object of backend.list(folderOf('lock'))) {
    const info = readLock(object.name, metadataKey, await backend.get(object.name));
    locks.push({ name: object.name, ...(info ? { info } : {}), stale: info ? isStale(info) : true });
  }
  return locks;
}

/**
 * A lock's record, or undefined when it cannot be read: locks are written whole (put is atomic)
 * and sealed with the key every writer has, so one that fails to open, decompress or parse is
 * damaged or a stray file, no running process's lock, and holds nothing.
 */
function readLock(name: string, metadataKey: Buffer, bytes: Buffer): LockInfo | undefined {
  try {
    return parseLock(openJson('SBLK', metadataKey, bytes), name);
  } catch (error) {
    if (error instanceof MissingDependencyError) throw error;
    return undefined;
  }
}

export function isStale(info: LockInfo, now = Date.now()): boolean {
  if (now - Date.parse(info.refreshed) > STALE_AFTER_MS) return true;
  if (info.host === os.hostname() && info.pid !== process.pid) return !processExists(info.pid);
  return false;
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
