import type { Command } from 'commander';
import { ConfigError } from '../errors.ts';
import { migrateRepository, type MigrationResult } from '../repository/migrate.ts';
import { Repository } from '../repository/repository.ts';
import type { RepositoryOptions } from '../repository/config.ts';
import { closingOnFailure, openBackend } from '../storage/open.ts';
import { Output } from './output.ts';
import { readIdentityFile, resolvePassword } from './secrets.ts';

/** Options every command accepts, with their environment forms. */
export interface GlobalOptions {
  repo?: string;
  passwordFile?: string;
  passwordCommand?: string;
  identityFile?: string;
  json?: boolean;
  quiet?: boolean;
  debug?: boolean;
  /** Commander's name for --no-lock: false when it is given. */
  lock?: boolean;
}

export function globalOptions(command: Command): GlobalOptions {
  return command.optsWithGlobals<GlobalOptions>();
}

export function outputFor(options: GlobalOptions): Output {
  return new Output(Boolean(options.json), Boolean(options.quiet));
}

function repositoryLocation(options: GlobalOptions): string {
  const location = options.repo ?? process.env.STRONGBOX_REPO;
  if (!location) throw new ConfigError('no repository given', { hint: 'Pass --repo or set STRONGBOX_REPO.' });
  return location;
}

interface KeySources {
  identityFile?: string | undefined;
  passwordFile?: string | undefined;
  passwordCommand?: string | undefined;
  password?: string | undefined;
}

/**
 * Options on the command line win over the environment, so that an explicit --password-file is
 * not silently overridden by a STRONGBOX_PASSWORD_FILE left in the environment.
 */
function keySources(options: GlobalOptions): KeySources {
  if (options.identityFile || options.passwordFile || options.passwordCommand) {
    return {
      identityFile: options.identityFile,
      passwordFile: options.passwordFile,
      passwordCommand: options.passwordCommand,
    };
  }
  return {
    identityFile: process.env.STRONGBOX_IDENTITY_FILE,
    passwordFile: process.env.STRONGBOX_PASSWORD_FILE,
    passwordCommand: process.env.STRONGBOX_PASSWORD_COMMAND,
    password: process.env.STRONGBOX_PASSWORD,
  };
}

export function usesIdentityFile(options: GlobalOptions): boolean {
  return Boolean(keySources(options).identityFile);
}

export async function openRepository(options: GlobalOptions): Promise<Repository> {
  const backend = await openBackend(repositoryLocation(options));
  const output = outputFor(options);
  const opening = { onWarning: (message: string) => output.warn(`warning: ${message}`) };
  const repository = await closingOnFailure(backend, async () => {
    const { identityFile } = keySources(options);
    if (identityFile)
      return Repository.open(backend, { identity: await readIdentityFile(identityFile) }, opening);
    return Repository.open(backend, { passphrase: await repositoryPassword(options, false) }, opening);
  });
  readWithoutLockWhereRefused(repository, output);
  repository.readLocking.skip = options.lock === false;
  return repository;
}

/** Commands that only read go on without a lock where the storage refuses one, saying so. */
export function readWithoutLockWhereRefused(repository: Repository, output: Output): void {
  repository.readLocking.onUnlocked = (refused) =>
    output.warn(`warning: ${refused.message}; reading without a lock (as --no-lock does)`);
}

export function repositoryPassword(options: GlobalOptions, confirm: boolean): Promise<string> {
  const sources = keySources(options);
  return resolvePassword({
    file: sources.passwordFile,
    command: sources.passwordCommand,
    value: sources.password,
    prompt: 'Repository password: ',
    confirm,
    describe:
      '--password-file, --password-command, STRONGBOX_PASSWORD_FILE, STRONGBOX_PASSWORD_COMMAND or STRONGBOX_PASSWORD',
  });
}

export async function initRepository(
  options: GlobalOptions,
  settings: RepositoryOptions,
): Promise<Repository> {
  const backend = await openBackend(repositoryLocation(options));
  return closingOnFailure(backend, async () =>
    Repository.init(backend, await repositoryPassword(options, true), settings, {
      onWarning: (message) => outputFor(options).warn(`warning: ${message}`),
    }),
  );
}

/** `strongbox migrate`: the repository named by --repo, with the key the global options give. */
export async function migrateRepositoryAt(options: GlobalOptions): Promise<MigrationResult> {
  const backend = await openBackend(repositoryLocation(options));
  try {
    const { identityFile } = keySources(options);
    return await migrateRepository(
      backend,
      identityFile
        ? { identity: await readIdentityFile(identityFile) }
        : { passphrase: await repositoryPassword(options, false) },
    );
  } finally {
    await backend.close();
  }
}

/** Runs `action` with an open repository and always closes it. */
export async function withRepository<T>(
  options: GlobalOptions,
  action: (repository: Repository) => Promise<T>,
): Promise<T> {
  const repository = await openRepository(options);
  try {
    return await action(repository);
  } finally {
    await repository.close();
  }
}
