import path from 'node:path';
import { ConfigError } from '../errors.ts';
import type { StorageBackend } from './backend.ts';
import { LocalBackend } from './local.ts';

/** Turns a repository location (a path, or a `file://` URL) into its backend. */
export function openBackend(location: string): StorageBackend {
  if (location.startsWith('file://')) return new LocalBackend(new URL(location).pathname);
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(location)?.[1];
  if (scheme) {
    throw new ConfigError(`repository scheme ${scheme}:// is not supported`, {
      hint: 'Use a local path or file:// URL.',
    });
  }
  return new LocalBackend(path.resolve(location));
}
