import { promises as fs } from 'node:fs';
import { ConfigError } from '../errors.ts';
import { closingOnFailure, openBackend } from '../storage/open.ts';
import { decodeIdentityFile, type KeyMaterial, type LegacyKeyMaterial } from './keys.ts';
import { Repository, type KeySource, type OpenOptions } from './repository.ts';

/** How a caller names the key: a passphrase, an identity file's path, or material it holds already. */
export type RepositoryKey = KeySource | { identityFile: string };

/**
 * The one way a repository is opened from a location (the library's `openRepository`, the CLI's
 * `--repo`, `copy --from` and `backup --copy-to`): its storage, then the key, closing the storage
 * again if the key does not open it.
 */
export async function openRepositoryAt(
  location: string,
  key: RepositoryKey,
  options: OpenOptions = {},
): Promise<Repository> {
  const backend = await openBackend(location);
  return closingOnFailure(backend, async () =>
    Repository.open(
      backend,
      'identityFile' in key ? { identity: await readIdentityFile(key.identityFile) } : key,
      options,
    ),
  );
}

export async function readIdentityFile(path: string): Promise<KeyMaterial | LegacyKeyMaterial> {
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (cause) {
    throw new ConfigError(
      `cannot read the identity file ${path}: ${(cause as NodeJS.ErrnoException).code ?? cause}`,
      { cause },
    );
  }
  return decodeIdentityFile(text, path);
}
