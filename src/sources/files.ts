import { constants, type BigIntStats } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import picomatch from 'picomatch';
import { ConfigError, errnoCode, SourceError, UnreadableFileError } from '../errors.ts';
import type { TreeNode } from '../repository/tree.ts';
import { readPieces } from './read-pieces.ts';
import type { BackupSource, ContentSink, ParentTrees, SourceResult } from './source.ts';

export interface FilesSourceOptions {
  /** Globs: with a `/` they match the absolute path, without one the name of any entry. */
  exclude?: string[];
  name?: string;
  onWarning?: (message: string) => void;
}

/**
 * Files and directories, stored under their absolute paths as restic does: backing up
 * /etc/myapp gives a root tree holding `etc`, whose tree holds only `myapp`.
 */
export function filesSource(paths: string[], options: FilesSourceOptions = {}): BackupSource {
  if (paths.length === 0)
    throw new ConfigError('no paths to back up', { hint: 'Name at least one file or directory.' });
  const absolute = paths.map((given) => path.resolve(given));
  return {
    kind: 'files',
    name: options.name ?? absolute[0]!,
    run: (sink, parent) => new FilesBackup(sink, parent, options).run(absolute),
  };
}

/** The part of the filesystem a backup covers: whole subtrees, and the directories leading to them. */
interface Selection {
  whole: boolean;
  children: Map<string, Selection>;
}

function selectPaths(paths: string[]): Selection {
  const root: Selection = { whole: false, children: new Map() };
  for (const absolute of paths) {
    let selection = root;
    for (const part of absolute.split('/').filter((component) => component !== '')) {
      if (selection.whole) break;
      let child = selection.children.get(part);
      if (!child) selection.children.set(part, (child = { whole: false, children: new Map() }));
      selection = child;
    }
    selection.whole = true;
    selection.children.clear();
  }
  return root;
}

/** O_NOFOLLOW: a file swapped for a symlink after lstat is not followed. O_NONBLOCK: nor does a fifo hang the open. */
const OPEN_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
/** Errors that mean the entry vanished or was replaced between listing and reading it. */
const CHANGED_DURING_WALK = new Set(['ENOENT', 'ENOTDIR', 'ELOOP']);

class FilesBackup {
  private readonly isExcluded: (absolute: string) => boolean;
  private readonly warn: (message: string) => void;
  private readonly summary = {
    files: 0,
    dirs: 0,
    symlinks: 0,
    otherNodes: 0,
    unchangedFiles: 0,
    changedFiles: 0,
    skipped: 0,
  };
  private size = 0;

  constructor(
    private readonly sink: ContentSink,
    private readonly parent: ParentTrees | undefined,
    options: FilesSourceOptions,
  ) {
    this.isExcluded = globMatcher(options.exclude ?? []);
    this.warn = (message) => {
      this.summary.skipped++;
      options.onWarning?.(message);
    };
  }

  async run(paths: string[]): Promise<SourceResult> {
    for (const given of paths) await requireExisting(given);
    const selection = selectPaths(paths);
    const tree = selection.whole
      ? // Only a vanished directory gives no tree, and / cannot vanish.
        (await this.backupDirectory('/', this.parent?.root))!
      : await this.backupSelection('/', selection, this.parent?.root);
    return { tree, size: this.size, paths, summary: { ...this.summary } };
  }

  /** Stores the directories leading to the chosen paths, each holding only what leads on. */
  private async backupSelection(
    directory: string,
    selection: Selection,
    parentTree: string | undefined,
  ): Promise<string> {
    const parentNodes = await this.readParent(parentTree);
    const nodes: TreeNode[] = [];
    for (const [name, child] of [...selection.children].sort(([a], [b]) => compareNames(a, b))) {
      const absolute = path.join(directory, name);
      const node = child.whole
        ? await this.backupEntry(absolute, name, parentNodes.get(name))
        : await this.backupLeadingDirectory(absolute, name, child, parentNodes.get(name));
      if (node) nodes.push(node);
    }
    return this.sink.storeTree({ nodes });
  }

  private async backupLeadingDirectory(
    absolute: string,
    name: string,
    selection: Selection,
    parentNode: TreeNode | undefined,
  ): Promise<TreeNode | undefined> {
    // stat, not lstat: a symlinked directory on the way (/var/run → /run) is restored as a directory.
    const stats = await this.unlessChanged(absolute, () => fs.stat(absolute, { bigint: true }));
    if (!stats) return undefined;
    const subtree = await this.backupSelection(absolute, selection, parentDirectory(parentNode));
    this.summary.dirs++;
    return { ...metadata(name, 'dir', stats), subtree };
  }

  private async backupDirectory(
    directory: string,
    parentTree: string | undefined,
  ): Promise<string | undefined> {
    const names = await this.unlessChanged(directory, () => fs.readdir(directory));
    if (!names) return undefined;
    const parentNodes = await this.readParent(parentTree);
    const nodes: TreeNode[] = [];
    for (const name of names.sort(compareNames)) {
      const absolute = path.join(directory, name);
      if (this.isExcluded(absolute)) continue;
      const node = await this.backupEntry(absolute, name, parentNodes.get(name));
      if (node) nodes.push(node);
    }
    return this.sink.storeTree({ nodes });
  }

  private async backupEntry(
    absolute: string,
    name: string,
    parentNode: TreeNode | undefined,
  ): Promise<TreeNode | undefined> {
    const stats = await this.unlessChanged(absolute, () => fs.lstat(absolute, { bigint: true }));
    if (!stats) return undefined;
    if (stats.isFile()) return this.backupFile(absolute, name, stats, parentNode);
    if (stats.isDirectory()) {
      const subtree = await this.backupDirectory(absolute, parentDirectory(parentNode));
      if (subtree === undefined) return undefined;
      this.summary.dirs++;
      return { ...metadata(name, 'dir', stats), subtree };
    }
    if (stats.isSymbolicLink()) {
      const linkTarget = await this.unlessChanged(absolute, () => fs.readlink(absolute));
      if (linkTarget === undefined) return undefined;
      this.summary.symlinks++;
      return { ...metadata(name, 'symlink', stats), linkTarget };
    }
    if (stats.isFIFO()) {
      this.summary.otherNodes++;
      return metadata(name, 'fifo', stats);
    }
    this.warn(`skipped ${absolute}: ${stats.isSocket() ? 'sockets' : 'device files'} are not backed up`);
    return undefined;
  }

  private async backupFile(
    absolute: string,
    name: string,
    stats: BigIntStats,
    parentNode: TreeNode | undefined,
  ): Promise<TreeNode | undefined> {
    const node = { ...metadata(name, 'file', stats), device: Number(stats.dev), inode: Number(stats.ino) };
    if (
      parentNode &&
      isUnchanged(parentNode, node, Number(stats.size)) &&
      this.sink.reuseContent(parentNode.content!, parentNode.size!)
    ) {
      const size = parentNode.size!;
      this.summary.files++;
      this.summary.unchangedFiles++;
      this.size += size;
      return { ...node, size, content: parentNode.content };
    }
    const handle = await this.unlessChanged(absolute, () => fs.open(absolute, OPEN_FLAGS));
    if (!handle) return undefined;
    try {
      if (!(await handle.stat()).isFile()) {
        this.warn(`skipped ${absolute}: it was replaced during the backup`);
        return undefined;
      }
      // A changed file's previous version lets its changed chunks find their predecessors.
      const previous = parentNode?.type === 'file' ? parentNode.content : undefined;
      const stored = await this.sink.storeContent(readContent(handle, absolute), previous);
      this.summary.files++;
      this.summary.changedFiles++;
      this.size += stored.size;
      // The stored size, not the lstat one: it is what a restore will verify against.
      return { ...node, size: stored.size, content: stored.blobs };
    } finally {
      await handle.close();
    }
  }

  private async readParent(tree: string | undefined): Promise<Map<string, TreeNode>> {
    if (tree === undefined || !this.parent) return new Map();
    const { nodes } = await this.parent.readTree(tree);
    return new Map(nodes.map((node) => [node.name, node]));
  }

  /** Runs `read`; undefined, with a warning, when the entry vanished or was replaced meanwhile. */
  private async unlessChanged<T>(absolute: string, read: () => Promise<T>): Promise<T | undefined> {
    try {
      return await read();
    } catch (error) {
      if (!CHANGED_DURING_WALK.has(errnoCode(error) ?? '')) throw readError(absolute, error);
      this.warn(`skipped ${absolute}: it vanished or changed during the backup`);
      return undefined;
    }
  }
}

async function requireExisting(absolute: string): Promise<void> {
  try {
    await fs.lstat(absolute);
  } catch (error) {
    if (errnoCode(error) === 'ENOENT')
      throw new SourceError(`cannot back up ${absolute}: it does not exist`, {
        hint: 'Check the path, or leave it out.',
        cause: error,
      });
    throw readError(absolute, error);
  }
}

async function* readContent(handle: fs.FileHandle, absolute: string): AsyncGenerator<Uint8Array> {
  try {
    yield* readPieces(handle);
  } catch (error) {
    throw readError(absolute, error);
  }
}

function readError(absolute: string, error: unknown): SourceError {
  return new UnreadableFileError(absolute, errnoCode(error), error);
}

function metadata(name: string, type: TreeNode['type'], stats: BigIntStats): TreeNode {
  return {
    name,
    type,
    mode: Number(stats.mode & 0o7777n),
    mtimeNs: stats.mtimeNs.toString(),
    uid: Number(stats.uid),
    gid: Number(stats.gid),
  };
}

function isUnchanged(parentNode: TreeNode, node: TreeNode, size: number): boolean {
  return (
    parentNode.type === 'file' &&
    parentNode.content !== undefined &&
    parentNode.size === size &&
    parentNode.mtimeNs === node.mtimeNs &&
    parentNode.inode === node.inode
  );
}

function parentDirectory(parentNode: TreeNode | undefined): string | undefined {
  return parentNode?.type === 'dir' ? parentNode.subtree : undefined;
}

/**
 * --exclude and --include globs: one with a `/` matches the whole path, one without matches
 * the last component's name, so that `*.log` or `cache` applies at any depth.
 */
export function globMatcher(
  patterns: string[],
  normalisePathPattern: (pattern: string) => string = (pattern) => pattern,
): (filePath: string) => boolean {
  const byPath = patterns.filter((pattern) => pattern.includes('/')).map(normalisePathPattern);
  const byName = patterns.filter((pattern) => !pattern.includes('/'));
  const matchesPath = byPath.length > 0 ? picomatch(byPath, { dot: true }) : () => false;
  const matchesName = byName.length > 0 ? picomatch(byName, { dot: true }) : () => false;
  return (filePath) => matchesPath(filePath) || matchesName(path.posix.basename(filePath));
}

/** Code-unit order, as encodeTree sorts: the walk, and so its warnings, do not depend on readdir order. */
function compareNames(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
