import { ConfigError } from '../errors.ts';
import type { StorageBackend } from './backend.ts';

/** Placeholder until the backend lands. */
export function openAzureBackend(url: URL, env: NodeJS.ProcessEnv): Promise<StorageBackend> {
  void env;
  return Promise.reject(new ConfigError(`${url.protocol}// repositories are not supported yet`));
}
