import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';

/** Everything under `root`, by relative path: type, mode, and content hash, link target or mtime. */
export async function describeTree(root: string): Promise<Map<string, string>> {
  const entries = new Map<string, string>();
  const walk = async (relative: string): Promise<void> => {
    for (const entry of await fs.readdir(path.join(root, relative))) {
      const child = path.join(relative, entry);
      const absolute = path.join(root, child);
      const stats = await fs.lstat(absolute);
      const mode = (stats.mode & 0o7777).toString(8);
      if (stats.isSymbolicLink()) entries.set(child, `symlink -> ${await fs.readlink(absolute)}`);
      else if (stats.isDirectory()) {
        entries.set(child, `dir ${mode}`);
        await walk(child);
      } else {
        const hash = createHash('sha256')
          .update(await fs.readFile(absolute))
          .digest('hex');
        entries.set(child, `file ${mode} ${Math.floor(stats.mtimeMs)} ${hash}`);
      }
    }
  };
  await walk('');
  return entries;
}
