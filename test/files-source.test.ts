import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import { createServer } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SourceError, VerificationError } from '../src/errors.ts';
import { restoreFiles } from '../src/ops/restore-files.ts';
import type { TreeNode } from '../src/repository/tree.ts';
import { filesSource, type FilesSourceOptions } from '../src/sources/files.ts';
import type { ContentPiece, ParentTrees, SourceResult } from '../src/sources/source.ts';
import { MemorySink } from './helpers/memory-sink.ts';

const isRoot = process.getuid?.() === 0;

let scratch: string;
let sink: MemorySink;

beforeEach(async () => {
  scratch = await fs.mkdtemp(path.join(os.tmpdir(), 'strongbox-files-'));
  sink = new MemorySink();
});

afterEach(async () => {
  await fs.rm(scratch, { recursive: true, force: true });
});

function backup(paths: string[], options?: FilesSourceOptions, parent?: ParentTrees): Promise<SourceResult> {
  return filesSource(paths, options).run(sink, parent);
}

/** Where `original` comes back when a snapshot is restored into `target`. */
function restored(target: string, original: string): string {
  return path.join(target, original);
}

/** The node at an absolute path in a snapshot. */
async function nodeAt(rootTree: string, absolute: string): Promise<TreeNode | undefined> {
  let tree = await sink.readTree(rootTree);
  let node: TreeNode | undefined;
  for (const part of absolute.split('/').filter((component) => component !== '')) {
    node = tree.nodes.find((candidate) => candidate.name === part);
    if (!node) return undefined;
    if (node.subtree) tree = await sink.readTree(node.subtree);
  }
  return node;
}

async function contentOf(node: TreeNode | undefined): Promise<Buffer> {
  return Buffer.concat(await Promise.all((node?.content ?? []).map((id) => sink.readBlob(id))));
}

async function expectSameMetadata(original: string, copy: string): Promise<void> {
  const [a, b] = await Promise.all([fs.lstat(original, { bigint: true }), fs.lstat(copy, { bigint: true })]);
  const comparable = (stats: typeof a) => ({
    mode: stats.mode,
    mtimeMicros: stats.mtimeNs / 1000n,
    ...(isRoot ? { uid: stats.uid, gid: stats.gid } : {}),
  });
  expect(comparable(b), copy).toEqual(comparable(a));
}

describe('files source and restore', () => {
  it('round-trips contents and metadata', async () => {
    const source = path.join(scratch, 'src');
    const app = path.join(source, 'app');
    await fs.mkdir(path.join(app, 'empty'), { recursive: true });
    const big = randomBytes(5 * 1024 * 1024);
    const files: Record<string, { data: Buffer; mode: number }> = {
      'setuid-tool': { data: Buffer.from('#!/bin/sh\n'), mode: 0o4755 },
      secret: { data: Buffer.from('hunter2'), mode: 0o600 },
      'big.bin': { data: big, mode: 0o644 },
      'with space ü 日本.txt': { data: Buffer.from('unicode'), mode: 0o640 },
      'empty-file': { data: Buffer.alloc(0), mode: 0o644 },
    };
    for (const [name, { data, mode }] of Object.entries(files)) {
      await fs.writeFile(path.join(app, name), data);
      await fs.chmod(path.join(app, name), mode);
      await fs.utimes(path.join(app, name), 1_600_000_000.123456, 1_600_000_000.123456);
    }
    // touch sets nanoseconds, which fs.utimes cannot.
    execFileSync('touch', ['-m', '-d', '@1700000000.987654321', path.join(app, 'secret')]);
    await fs.symlink('secret', path.join(app, 'link'));
    await fs.symlink('/nowhere/at/all', path.join(app, 'dangling'));
    if (isRoot) await fs.chown(path.join(app, 'secret'), 12345, 23456);
    await fs.chmod(path.join(app, 'empty'), 0o750);
    await fs.utimes(path.join(app, 'empty'), 1_500_000_000.5, 1_500_000_000.5);
    await fs.utimes(app, 1_400_000_000.25, 1_400_000_000.25);

    const result = await backup([source]);
    expect(result.paths).toEqual([source]);
    expect(result.size).toBe(big.length + 10 + 7 + 7);
    expect(result.summary).toMatchObject({
      files: 5,
      symlinks: 2,
      changedFiles: 5,
      unchangedFiles: 0,
      skipped: 0,
    });

    const target = path.join(scratch, 'out');
    const totals = await restoreFiles(sink, result.tree, target);
    expect(totals).toMatchObject({ files: 5, symlinks: 2, bytes: result.size });

    const copy = restored(target, app);
    for (const [name, { data }] of Object.entries(files)) {
      expect((await fs.readFile(path.join(copy, name))).equals(data), name).toBe(true);
      await expectSameMetadata(path.join(app, name), path.join(copy, name));
    }
    expect((await fs.stat(path.join(copy, 'setuid-tool'))).mode & 0o7777).toBe(0o4755);
    expect(await fs.readlink(path.join(copy, 'link'))).toBe('secret');
    expect(await fs.readlink(path.join(copy, 'dangling'))).toBe('/nowhere/at/all');
    await expectSameMetadata(path.join(app, 'dangling'), path.join(copy, 'dangling'));
    expect(await fs.readdir(path.join(copy, 'empty'))).toEqual([]);
    await expectSameMetadata(path.join(app, 'empty'), path.join(copy, 'empty'));
    await expectSameMetadata(app, copy);
    if (isRoot) expect(await fs.stat(path.join(copy, 'secret'))).toMatchObject({ uid: 12345, gid: 23456 });
  });

  it('mirrors absolute paths and keeps only what leads to them', async () => {
    for (const dir of ['etc/myapp', 'etc/other', 'srv/state'])
      await fs.mkdir(path.join(scratch, dir), { recursive: true });
    await fs.writeFile(path.join(scratch, 'etc/myapp/app.conf'), 'port = 1');
    await fs.writeFile(path.join(scratch, 'srv/state/db'), 'rows');
    await fs.chmod(path.join(scratch, 'etc'), 0o711);
    const paths = [path.join(scratch, 'etc/myapp'), path.join(scratch, 'srv/state')];

    const result = await backup(paths);
    expect(filesSource(paths).name).toBe(paths[0]);
    const scratchNode = await nodeAt(result.tree, scratch);
    expect((await sink.readTree(scratchNode!.subtree!)).nodes.map((node) => node.name)).toEqual([
      'etc',
      'srv',
    ]);
    const etc = await nodeAt(result.tree, path.join(scratch, 'etc'));
    expect(etc).toMatchObject({ type: 'dir', mode: 0o711 });
    expect((await sink.readTree(etc!.subtree!)).nodes.map((node) => node.name)).toEqual(['myapp']);
    expect(await contentOf(await nodeAt(result.tree, path.join(scratch, 'srv/state/db')))).toEqual(
      Buffer.from('rows'),
    );
  });

  it('excludes by name anywhere and by absolute path, without descending', async () => {
    const source = path.join(scratch, 'src');
    for (const dir of ['a/cache/deep', 'b/tmp', 'c'])
      await fs.mkdir(path.join(source, dir), { recursive: true });
    for (const file of [
      'a/x.log',
      'a/keep.txt',
      'a/cache/deep/f',
      'b/tmp/t',
      'b/.hidden.log',
      'c/keep.txt',
    ]) {
      await fs.writeFile(path.join(source, file), file);
    }
    const seen: string[] = [];
    const original = sink.storeContent.bind(sink);
    sink.storeContent = async (content: AsyncIterable<ContentPiece>) => {
      const stored = await original(content);
      seen.push((await contentOf({ content: stored.blobs } as TreeNode)).toString());
      return stored;
    };

    const result = await backup([source], { exclude: ['*.log', 'cache', path.join(source, 'b/tmp')] });
    expect(seen.sort()).toEqual(['a/keep.txt', 'c/keep.txt']);
    expect(await nodeAt(result.tree, path.join(source, 'a/cache'))).toBeUndefined();
    expect(await nodeAt(result.tree, path.join(source, 'b/tmp'))).toBeUndefined();
    expect(await nodeAt(result.tree, path.join(source, 'b'))).toMatchObject({ type: 'dir' });
  });

  it('keeps an unchanged file without reading it, and rereads a changed size', async () => {
    const source = path.join(scratch, 'src');
    await fs.mkdir(source);
    const same = path.join(source, 'same-size');
    const grown = path.join(source, 'grown');
    await fs.writeFile(same, 'old bytes');
    await fs.writeFile(grown, 'short');
    // A whole-second mtime, so that fs.utimes can put back exactly the same one.
    const mtime = 1_650_000_000;
    await fs.utimes(same, mtime, mtime);
    const first = await backup([source]);

    // Same size, same inode (written in place), mtime put back: only reading would notice.
    const handle = await fs.open(same, 'r+');
    await handle.write(Buffer.from('NEW BYTES'), 0, 9, 0);
    await handle.close();
    await fs.utimes(same, mtime, mtime);
    await fs.writeFile(grown, 'longer now');

    const second = await backup([source], {}, sink.parent(first.tree));
    expect(await contentOf(await nodeAt(second.tree, same))).toEqual(Buffer.from('old bytes'));
    expect(await contentOf(await nodeAt(second.tree, grown))).toEqual(Buffer.from('longer now'));
    expect(second.summary).toMatchObject({ files: 2, unchangedFiles: 1, changedFiles: 1 });
    expect(second.size).toBe(9 + 10);
    expect(sink.reusedBytes).toBe(9);
  });

  it('stores fifos, skips sockets with a warning', async () => {
    const source = path.join(scratch, 'src');
    await fs.mkdir(source);
    execFileSync('mkfifo', ['-m', '0640', path.join(source, 'pipe')]);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(path.join(source, 'sock'), resolve));
    const warnings: string[] = [];
    try {
      const result = await backup([source], { onWarning: (message) => warnings.push(message) });
      expect(result.summary).toMatchObject({ otherNodes: 1, skipped: 1 });
      expect(warnings).toEqual([`skipped ${path.join(source, 'sock')}: sockets are not backed up`]);

      const target = path.join(scratch, 'out');
      await restoreFiles(sink, result.tree, target);
      const pipe = await fs.lstat(restored(target, path.join(source, 'pipe')));
      expect(pipe.isFIFO()).toBe(true);
      expect(pipe.mode & 0o7777).toBe(0o640);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('skips a file that vanishes during the walk with a warning', async () => {
    const source = path.join(scratch, 'src');
    await fs.mkdir(source);
    await fs.writeFile(path.join(source, 'a'), 'first');
    await fs.writeFile(path.join(source, 'b'), 'second');
    const original = sink.storeContent.bind(sink);
    sink.storeContent = async (content: AsyncIterable<ContentPiece>) => {
      await fs.rm(path.join(source, 'b'), { force: true });
      return original(content);
    };
    const warnings: string[] = [];

    const result = await backup([source], { onWarning: (message) => warnings.push(message) });
    expect(warnings).toEqual([`skipped ${path.join(source, 'b')}: it vanished or changed during the backup`]);
    expect(result.summary).toMatchObject({ files: 1, skipped: 1 });
    expect(await nodeAt(result.tree, path.join(source, 'b'))).toBeUndefined();
  });

  it('fails with a SourceError, before storing anything, for a path that does not exist', async () => {
    const missing = path.join(scratch, 'missing');
    const failure = await backup([path.join(scratch), missing]).catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(SourceError);
    expect(failure).toMatchObject({ exitCode: 4, message: `cannot back up ${missing}: it does not exist` });
    expect(sink.trees.size).toBe(0);
  });
});

describe('restoreFiles', () => {
  async function snapshotOf(files: Record<string, string>): Promise<{ source: string; tree: string }> {
    const source = path.join(scratch, 'src');
    for (const [name, data] of Object.entries(files)) {
      await fs.mkdir(path.dirname(path.join(source, name)), { recursive: true });
      await fs.writeFile(path.join(source, name), data);
    }
    return { source, tree: (await backup([source])).tree };
  }

  it('refuses a non-empty target unless told to overwrite', async () => {
    const { source, tree } = await snapshotOf({ 'conf/app.conf': 'new' });
    const target = path.join(scratch, 'out');
    await fs.mkdir(path.join(restored(target, source), 'conf'), { recursive: true });
    await fs.writeFile(path.join(restored(target, source), 'conf/app.conf'), 'stale');

    await expect(restoreFiles(sink, tree, target)).rejects.toMatchObject({
      exitCode: 3,
      message: `${target} is not empty`,
    });
    await restoreFiles(sink, tree, target, { overwrite: true });
    expect(await fs.readFile(path.join(restored(target, source), 'conf/app.conf'), 'utf8')).toBe('new');
  });

  it('restores only what --include selects', async () => {
    const { source, tree } = await snapshotOf({
      'etc/myapp/a.conf': 'a',
      'etc/other/b.conf': 'b',
      'var/x.log': 'x',
      'var/y.txt': 'y',
    });
    const relativeSource = source.slice(1);
    const target = path.join(scratch, 'out');

    const totals = await restoreFiles(sink, tree, target, {
      include: [`/${relativeSource}/etc/myapp`, '*.log'],
    });
    expect(totals.files).toBe(2);
    expect(await fs.readFile(path.join(restored(target, source), 'etc/myapp/a.conf'), 'utf8')).toBe('a');
    expect(await fs.readdir(path.join(restored(target, source), 'etc'))).toEqual(['myapp']);
    expect(await fs.readdir(path.join(restored(target, source), 'var'))).toEqual(['x.log']);

    const relativeTarget = path.join(scratch, 'out-relative');
    await restoreFiles(sink, tree, relativeTarget, { include: [`${relativeSource}/var/*.txt`] });
    expect(await fs.readdir(restored(relativeTarget, source))).toEqual(['var']);
    expect(await fs.readdir(path.join(restored(relativeTarget, source), 'var'))).toEqual(['y.txt']);
  });

  it('rejects node names that would leave the target', async () => {
    for (const name of ['..', '.', 'a/b']) {
      const tree = await sink.storeTree({
        nodes: [{ name, type: 'file', mode: 0o644, mtimeNs: '0', uid: 0, gid: 0, size: 0, content: [] }],
      });
      const target = await fs.mkdtemp(path.join(scratch, 'out-'));
      const failure = await restoreFiles(sink, tree, target).catch((error: unknown) => error);
      expect(failure, name).toBeInstanceOf(VerificationError);
      expect(failure).toMatchObject({ exitCode: 7 });
    }
  });

  it('fails verification when the blobs do not add up to the recorded size', async () => {
    const stored = await sink.storeContent(
      (async function* () {
        yield Buffer.from('12345');
      })(),
    );
    const tree = await sink.storeTree({
      nodes: [
        {
          name: 'f',
          type: 'file',
          mode: 0o644,
          mtimeNs: '0',
          uid: 0,
          gid: 0,
          size: 6,
          content: stored.blobs,
        },
      ],
    });
    await expect(restoreFiles(sink, tree, path.join(scratch, 'out'))).rejects.toBeInstanceOf(
      VerificationError,
    );
  });
});
