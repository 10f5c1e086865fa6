import path from 'node:path';
import { ConfigError } from '../errors.ts';
import type { StorageBackend } from './backend.ts';
import { LocalBackend } from './local.ts';

/**
 * Turns a repository location (a path, `file://`, `s3://`, `azure://` or `sftp://` URL) into its
 * backend. Remote backends are loaded only when used, so that their SDKs cost nothing otherwise.
 * Options a location needs beyond its URL come from the URL's query string and from `env`
 * (docs/CLI.md lists them); secrets only ever come from `env` or files.
 */
export async function openBackend(
  location: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<StorageBackend> {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(location)?.[1]?.toLowerCase();
  switch (scheme) {
    case undefined:
      return new LocalBackend(path.resolve(location));
    case 'file':
      return new LocalBackend(locationUrl(location).pathname);
    case 's3':
      return (await import('./s3.ts')).openS3Backend(locationUrl(location), env);
    case 'azure':
      return (await import('./azure.ts')).openAzureBackend(locationUrl(location), env);
    case 'sftp':
      return (await import('./sftp.ts')).openSftpBackend(locationUrl(location), env);
    default:
      throw new ConfigError(`repository scheme ${scheme}:// is not supported`, {
        hint: 'Use a local path, or a file://, s3://, azure:// or sftp:// URL.',
      });
  }
}

/** The location as a URL; one that does not parse is a usage error that does not echo it (it may hold a secret). */
function locationUrl(location: string): URL {
  try {
    return new URL(location);
  } catch {
    throw new ConfigError(`the repository location ${location.split('://')[0]}://… is not a valid URL`, {
      hint: 'Check its spelling; characters such as / in a secret must be URL-encoded (%2F).',
    });
  }
}

/**
 * Runs `use` (opening a repository on `backend`), closing the backend if it fails: a remote
 * backend's connection would otherwise outlive the error.
 */
export async function closingOnFailure<T>(backend: StorageBackend, use: () => Promise<T>): Promise<T> {
  try {
    return await use();
  } catch (error) {
    await backend.close().catch(() => undefined);
    throw error;
  }
}
