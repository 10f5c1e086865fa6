import { randomBytes } from 'node:crypto';
import { constants, promises as fs } from 'node:fs';
import path from 'node:path';
import { errnoCode, StorageError } from '../errors.ts';
import {
  AccessDeniedError,
  ObjectNotFoundError,
  type ObjectInfo,
  type PutOptions,
  type StorageBackend,
} from './backend.ts';

const FILE_MODE = 0o600;
const DIR_MODE = 0o700;
/** Temporary files start with a dot so that listings skip them and a crashed write stays invisible. */
const TEMP_PREFIX = '.tmp-';

/** A repository in a local (or mounted) directory. */
export class LocalBackend implements StorageBackend {
  readonly location: string;
  /**
   * One put at a time: a pack's write and fsync take tens of milliseconds on a local disk, where a
   * backup makes one every few hundred, so a second in flight only held another pack (17 MiB) in
   * memory.
   */
  readonly concurrency = 1;
  /** Files written with deferSync, and their directories, not yet synced. */
  private unsyncedFiles = new Set<string>();
  private unsyncedDirs = new Set<string>();

  constructor(private readonly root: string) {
    this.location = path.resolve(root);
  }

  async put(name: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    const target = this.pathOf(name);
    const dir = path.dirname(target);
    const temp = path.join(dir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
    try {
      await this.ensureDir(dir);
      const handle = await fs.open(
        temp,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL,
        FILE_MODE,
      );
      try {
        await handle.writeFile(data);
        if (!options.deferSync) await handle.sync();
      } finally {
        await handle.close();
      }
      await fs.rename(temp, target);
      if (options.deferSync) {
        this.unsyncedFiles.add(target);
        this.unsyncedDirs.add(dir);
      } else {
        await syncPath(dir);
      }
    } catch (error) {
      await fs.rm(temp, { force: true }).catch(() => undefined);
      throw this.wrap(error, `write ${name}`);
    }
  }

  async syncDeferred(): Promise<void> {
    const files = [...this.unsyncedFiles];
    const dirs = [...this.unsyncedDirs];
    this.unsyncedFiles.clear();
    this.unsyncedDirs.clear();
    try {
      // The kernel has been writing these back since they were written; this waits for the rest.
      await Promise.all(files.map((file) => syncPath(file)));
      await Promise.all(dirs.map((dir) => syncPath(dir)));
    } catch (error) {
      throw this.wrap(error, 'sync written files');
    }
  }

  async get(name: string): Promise<Buffer> {
    try {
      return await fs.readFile(this.pathOf(name));
    } catch (error) {
      throw this.wrap(error, `read ${name}`, name);
    }
  }

  async getRange(name: string, offset: number, length: number): Promise<Buffer> {
    let handle: fs.FileHandle | undefined;
    try {
      handle = await fs.open(this.pathOf(name), 'r');
      const buffer = Buffer.allocUnsafe(length);
      let filled = 0;
      while (filled < length) {
        const { bytesRead } = await handle.read(buffer, filled, length - filled, offset + filled);
        if (bytesRead === 0) break;
        filled += bytesRead;
      }
      if (filled < length) {
        throw new StorageError(
          `${name} is shorter than expected (wanted bytes ${offset}..${offset + length})`,
          {
            hint: 'The file was truncated; run `strongbox check --read-data`.',
          },
        );
      }
      return buffer;
    } catch (error) {
      throw this.wrap(error, `read ${name}`, name);
    } finally {
      await handle?.close();
    }
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const start = this.pathOf(prefix);
    const stack = [start];
    while (stack.length > 0) {
      const dir = stack.pop()!;
      let entries;
      try {
        entries = await fs.readdir(dir, { withFileTypes: true });
      } catch (error) {
        if (errnoCode(error) === 'ENOENT') continue;
        throw this.wrap(error, `list ${prefix}`);
      }
      for (const entry of entries) {
        if (entry.name.startsWith('.')) continue;
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) {
          stack.push(full);
        } else if (entry.isFile()) {
          const { size } = await fs.stat(full);
          yield { name: path.relative(this.location, full).split(path.sep).join('/'), size };
        }
      }
    }
  }

  async stat(name: string): Promise<ObjectInfo | undefined> {
    try {
      const info = await fs.stat(this.pathOf(name));
      return { name, size: info.size };
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') return undefined;
      throw this.wrap(error, `stat ${name}`);
    }
  }

  async delete(name: string): Promise<void> {
    const target = this.pathOf(name);
    try {
      await fs.rm(target, { force: true });
      await syncPath(path.dirname(target));
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') return;
      throw this.wrap(error, `delete ${name}`);
    }
  }

  async close(): Promise<void> {}

  async removeIncompleteUploads(startedBefore: Date): Promise<number> {
    let removed = 0;
    const stack = [this.location];
    while (stack.length > 0) {
      const dir = stack.pop()!;
      const entries = await fs.readdir(dir, { withFileTypes: true }).catch(() => []);
      for (const entry of entries) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) stack.push(full);
        else if (entry.name.startsWith(TEMP_PREFIX)) {
          const info = await fs.stat(full).catch(() => undefined);
          if (!info || info.mtimeMs >= startedBefore.getTime()) continue;
          await fs.rm(full, { force: true });
          removed++;
        }
      }
    }
    return removed;
  }

  private pathOf(name: string): string {
    const normalized = path.posix.normalize(name);
    if (normalized.startsWith('..') || path.posix.isAbsolute(normalized)) {
      throw new StorageError(`invalid object name ${JSON.stringify(name)}`);
    }
    return path.join(this.location, ...normalized.split('/'));
  }

  private async ensureDir(dir: string): Promise<void> {
    try {
      await fs.access(dir);
      return;
    } catch {
      // Created below; the parent is synced so the new directory itself survives a crash.
    }
    await this.ensureDir(path.dirname(dir));
    await fs.mkdir(dir, { mode: DIR_MODE }).catch((error: unknown) => {
      if (errnoCode(error) !== 'EEXIST') throw error;
    });
    await syncPath(path.dirname(dir));
  }

  private wrap(error: unknown, action: string, objectName?: string): Error {
    if (error instanceof StorageError) return error;
    const code = errnoCode(error);
    if (code === 'ENOENT' && objectName) return new ObjectNotFoundError(objectName, this.location);
    const message = `cannot ${action} in ${this.location}: ${code ?? String(error)}`;
    if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
      return new AccessDeniedError(message, {
        hint:
          code === 'EROFS'
            ? `${this.location} is on a read-only file system.`
            : `Check the permissions of ${this.location}.`,
        cause: error,
      });
    }
    return new StorageError(message, {
      hint: code === 'ENOSPC' ? 'The disk is full: free space or move the repository.' : undefined,
      cause: error,
    });
  }
}

/** fsync of a file, or of a directory (which makes the names in it durable). */
async function syncPath(file: string): Promise<void> {
  const handle = await fs.open(file, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
