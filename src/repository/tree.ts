import { parseJson } from '../util/schema.ts';
import { parseTree } from './schemas.ts';

/**
 * A tree blob lists one directory. Files name their content blobs in order; directories name
 * the tree blob of their listing. Trees are JSON, stored and encrypted like any other blob.
 */
export type NodeType = 'file' | 'dir' | 'symlink' | 'fifo' | 'socket' | 'chardev' | 'blockdev';

export interface TreeNode {
  name: string;
  type: NodeType;
  /** Permission bits, including setuid, setgid and sticky. */
  mode: number;
  /** Modification time in nanoseconds since the epoch, as a decimal string (it exceeds 2^53). */
  mtimeNs: string;
  uid: number;
  gid: number;
  size?: number;
  /** Device and inode at backup time, to tell an unchanged file from a replaced one. */
  device?: number;
  inode?: number;
  content?: string[];
  subtree?: string;
  linkTarget?: string;
  /** Device number of a character or block device. */
  rdev?: number;
}

export interface Tree {
  nodes: TreeNode[];
}

export function encodeTree(tree: Tree): Buffer {
  const nodes = [...tree.nodes].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  return Buffer.from(JSON.stringify({ nodes }));
}

/** The tree blob `id`, parsed against the schema of what encodeTree writes (schemas.ts). */
export function decodeTree(bytes: Uint8Array, id: string): Tree {
  return parseTree(parseJson(Buffer.from(bytes).toString('utf8'), { kind: 'tree', id }), id);
}
