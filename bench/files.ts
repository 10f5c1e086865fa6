import { createReadStream } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';

/** Regular files under `dir`, recursively. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name));
}

/** The sum of file sizes under `dir`: what a repository occupies, as `du -sb` without directories. */
export async function treeSize(dir: string): Promise<number> {
  const sizes = await Promise.all((await filesUnder(dir)).map(async (file) => (await stat(file)).size));
  return sizes.reduce((sum, size) => sum + size, 0);
}

export async function fileSize(file: string): Promise<number> {
  return (await stat(file)).size;
}

/** Reads a file once and drops the bytes, so the next reader finds it in the page cache. */
export async function warmFile(file: string): Promise<void> {
  for await (const _chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
    // Reading is the point.
  }
}

export async function warmTree(dir: string): Promise<void> {
  for (const file of await filesUnder(dir)) await warmFile(file);
}
