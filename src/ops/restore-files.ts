import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import {
  ConfigError,
  DamagedBlobError,
  errnoCode,
  StrongboxError,
  TargetNotEmptyError,
  VerificationError,
} from '../errors.ts';
import type { Tree, TreeNode } from '../repository/tree.ts';
import { globMatcher } from '../sources/files.ts';
import { readBlobs } from './read-content.ts';

export interface SnapshotReader {
  readTree(id: string): Promise<Tree>;
  readBlob(id: string): Promise<Buffer>;
}

export interface RestoreFilesOptions {
  /** Globs on the path below the snapshot root (`etc/myapp/**`); without a `/`, on any entry's name. */
  include?: string[];
  /** Restore into a non-empty directory, replacing whatever is in the way. */
  overwrite?: boolean;
  /** Called after each blob is written, with the bytes written so far. */
  onProgress?: (bytes: number) => void;
  onWarning?: (message: string) => void;
}

export interface RestoreFilesResult {
  files: number;
  dirs: number;
  symlinks: number;
  bytes: number;
}

/** Recreates a files snapshot under `target`: /etc/myapp comes back as TARGET/etc/myapp. */
export async function restoreFiles(
  reader: SnapshotReader,
  rootTree: string,
  target: string,
  options: RestoreFilesOptions = {},
): Promise<RestoreFilesResult> {
  const root = path.resolve(target);
  await prepareTarget(root, options.overwrite ?? false);
  const restore = new FilesRestore(reader, options);
  const everything = !options.include || options.include.length === 0;
  await restore.restoreListing(
    rootTree,
    new PendingDirectory(root, undefined, restore.overwrite),
    '',
    everything,
  );
  if (restore.damaged.length > 0) {
    const { files } = restore.result;
    throw new VerificationError(
      `${restore.damaged.length} file(s) not restored, their data is damaged: ${restore.damaged.join(', ')} (${files} file(s) restored)`,
      {
        hint: 'Run `strongbox check --read-data` to see what is damaged; restore those files from another snapshot.',
      },
    );
  }
  return restore.result;
}

async function prepareTarget(root: string, overwrite: boolean): Promise<void> {
  let stats;
  try {
    stats = await fs.stat(root);
  } catch (error) {
    if (errnoCode(error) !== 'ENOENT') throw targetError(root, error);
    await onTarget(root, () => fs.mkdir(root, { recursive: true }));
    return;
  }
  if (!stats.isDirectory())
    throw new ConfigError(`${root} exists and is not a directory`, {
      hint: 'Choose an empty directory to restore into.',
    });
  if (!overwrite && (await onTarget(root, () => fs.readdir(root))).length > 0)
    throw new TargetNotEmptyError(root);
}

/** A directory made only once something is restored into it, so --include leaves no empty trail. */
class PendingDirectory {
  created: boolean;

  constructor(
    readonly path: string,
    private readonly parent: PendingDirectory | undefined,
    private readonly overwrite: boolean,
  ) {
    this.created = parent === undefined;
  }

  async ensure(): Promise<void> {
    if (this.created) return;
    await this.parent?.ensure();
    await onTarget(this.path, () => makeDirectory(this.path, this.overwrite));
    this.created = true;
  }
}

async function makeDirectory(directory: string, overwrite: boolean): Promise<void> {
  try {
    // Private until its own mode is applied, after its children are written.
    await fs.mkdir(directory, 0o700);
    return;
  } catch (error) {
    if (errnoCode(error) !== 'EEXIST' || !overwrite) throw error;
  }
  // lstat: a symlink in the way is replaced, never followed out of the target.
  if ((await fs.lstat(directory)).isDirectory()) return;
  await fs.rm(directory, { force: true });
  await fs.mkdir(directory, 0o700);
}

const runFile = promisify(execFile);

class FilesRestore {
  readonly result: RestoreFilesResult = { files: 0, dirs: 0, symlinks: 0, bytes: 0 };
  /** Files left out because a blob of theirs is damaged: the others are still restored. */
  readonly damaged: string[] = [];
  readonly overwrite: boolean;
  private readonly isIncluded: (relative: string) => boolean;
  private readonly restoresOwners = process.getuid?.() === 0;

  constructor(
    private readonly reader: SnapshotReader,
    private readonly options: RestoreFilesOptions,
  ) {
    this.overwrite = options.overwrite ?? false;
    this.isIncluded = includeMatcher(options.include ?? []);
  }

  /** `included`: an ancestor matched --include, so everything below is restored. */
  async restoreListing(
    tree: string,
    directory: PendingDirectory,
    relative: string,
    included: boolean,
  ): Promise<void> {
    const { nodes } = await this.reader.readTree(tree);
    requireSafeNames(nodes, relative);
    for (const node of nodes) {
      const nodeRelative = relative === '' ? node.name : `${relative}/${node.name}`;
      const selected = included || this.isIncluded(nodeRelative);
      if (node.type === 'dir') {
        await this.restoreDirectory(node, directory, nodeRelative, selected);
      } else if (selected) {
        await directory.ensure();
        await this.restoreLeaf(node, path.join(directory.path, node.name), nodeRelative);
      }
    }
  }

  private async restoreDirectory(
    node: TreeNode,
    parent: PendingDirectory,
    relative: string,
    selected: boolean,
  ): Promise<void> {
    const directory = new PendingDirectory(path.join(parent.path, node.name), parent, this.overwrite);
    if (selected) await directory.ensure();
    if (node.subtree !== undefined) await this.restoreListing(node.subtree, directory, relative, selected);
    if (!directory.created) return;
    this.result.dirs++;
    // After the children: writing them would move the mtime, and the mode may forbid writing.
    await this.applyMetadata(node, directory.path);
  }

  private async restoreLeaf(node: TreeNode, destination: string, relative: string): Promise<void> {
    if (this.overwrite)
      await onTarget(destination, () => fs.rm(destination, { recursive: true, force: true }));
    switch (node.type) {
      case 'file':
        if (!(await this.restoreFile(node, destination, relative))) return;
        this.result.files++;
        break;
      case 'symlink':
        await onTarget(destination, () => fs.symlink(node.linkTarget ?? '', destination));
        this.result.symlinks++;
        break;
      case 'fifo':
        if (!(await this.makeFifo(destination))) return;
        break;
      default:
        this.warn(`skipped ${relative}: ${node.type} nodes are not restored`);
        return;
    }
    await this.applyMetadata(node, destination);
  }

  /** False when the file's data is damaged: then no part of it is left in the target. */
  private async restoreFile(node: TreeNode, destination: string, relative: string): Promise<boolean> {
    // wx: never write through something already there; overwrite removed it first.
    const handle = await onTarget(destination, () => fs.open(destination, 'wx', 0o600));
    let written = 0;
    let damage: DamagedBlobError | undefined;
    try {
      for await (const blob of readBlobs(this.reader, node.content ?? [])) {
        await onTarget(destination, () => writeAll(handle, blob));
        written += blob.length;
        this.result.bytes += blob.length;
        this.options.onProgress?.(this.result.bytes);
      }
    } catch (error) {
      if (!(error instanceof DamagedBlobError)) throw error;
      damage = error;
    } finally {
      await handle.close();
    }
    if (damage) {
      this.damaged.push(relative);
      this.warn(`${relative} not restored: ${damage.message}`);
      await onTarget(destination, () => fs.rm(destination, { force: true }));
      return false;
    }
    if (node.size !== undefined && written !== node.size)
      throw new VerificationError(
        `${relative} restored as ${written} bytes but the snapshot records ${node.size}`,
        {
          hint: 'The snapshot is damaged; run strongbox check and restore from another snapshot.',
        },
      );
    return true;
  }

  /** False when mkfifo is not installed: the fifo is skipped with a warning. */
  private async makeFifo(destination: string): Promise<boolean> {
    try {
      await runFile('mkfifo', [destination]);
      return true;
    } catch (error) {
      if (errnoCode(error) !== 'ENOENT') throw targetError(destination, error);
      this.warn(`skipped fifo ${destination}: the mkfifo command is not installed`);
      return false;
    }
  }

  private async applyMetadata(node: TreeNode, destination: string): Promise<void> {
    const mtime = secondsFromNs(node.mtimeNs, node.name);
    await onTarget(destination, async () => {
      // chown before chmod: changing the owner clears setuid and setgid bits.
      if (this.restoresOwners) await fs.lchown(destination, node.uid, node.gid);
      if (node.type === 'symlink') {
        await fs.lutimes(destination, mtime, mtime);
        return;
      }
      await fs.chmod(destination, node.mode);
      await fs.utimes(destination, mtime, mtime);
    });
  }

  private warn(message: string): void {
    this.options.onWarning?.(message);
  }
}

async function writeAll(handle: fs.FileHandle, data: Buffer): Promise<void> {
  for (let offset = 0; offset < data.length;) offset += (await handle.write(data, offset)).bytesWritten;
}

/** Names come from the snapshot: one that is not a plain single component could write outside the target. */
function requireSafeNames(nodes: TreeNode[], relative: string): void {
  const seen = new Set<string>();
  for (const { name } of nodes) {
    const unsafe = name === '' || name === '.' || name === '..' || name.includes('/') || name.includes('\0');
    if (unsafe || seen.has(name))
      throw new VerificationError(
        `the snapshot directory /${relative} holds an ${unsafe ? 'unsafe' : 'duplicate'} entry name ${JSON.stringify(name)}`,
        {
          hint: 'The snapshot is damaged or was crafted to write outside the target; do not restore it.',
        },
      );
    seen.add(name);
  }
}

/**
 * Node hands times to libuv as float seconds, which truncates them to whole microseconds.
 * Nanoseconds since the epoch exceed 2^53, so split through BigInt, and aim at the middle of
 * the microsecond: float rounding (a fraction of a microsecond at today's dates) cannot then
 * push the time into the neighbouring one.
 */
function secondsFromNs(mtimeNs: string, name: string): number {
  if (!/^-?\d+$/.test(mtimeNs))
    throw new VerificationError(`${name} has an invalid mtime ${JSON.stringify(mtimeNs)}`);
  const micros = floorDiv(BigInt(mtimeNs), 1000n);
  const seconds = floorDiv(micros, 1_000_000n);
  return Number(seconds) + (Number(micros - seconds * 1_000_000n) + 0.5) / 1e6;
}

function floorDiv(a: bigint, b: bigint): bigint {
  const quotient = a / b;
  return a % b < 0n ? quotient - 1n : quotient;
}

function includeMatcher(patterns: string[]): (relative: string) => boolean {
  // Snapshot paths are absolute, so /etc/myapp is accepted as well as etc/myapp.
  return globMatcher(patterns, (pattern) => pattern.replace(/^\/+/, ''));
}

async function onTarget<T>(destination: string, action: () => Promise<T>): Promise<T> {
  try {
    return await action();
  } catch (error) {
    throw targetError(destination, error);
  }
}

function targetError(destination: string, error: unknown): StrongboxError {
  if (error instanceof StrongboxError) return error;
  // A failed command's message runs over several lines; the first says what failed.
  const code = errnoCode(error) ?? (error instanceof Error ? error.message : String(error)).split('\n')[0];
  return new StrongboxError(`cannot restore ${destination}: ${code}`, {
    hint: 'Check free space and permissions where you restore to.',
    cause: error,
  });
}
