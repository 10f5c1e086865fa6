import type { Command } from 'commander';
import {
  configFileFrom,
  defaultConfig,
  loadConfigFile,
  type StrongboxConfig,
} from '../config-file/config-file.ts';
import { ConfigError } from '../errors.ts';
import { migrateRepository, type MigrationResult } from '../repository/migrate.ts';
import { Repository } from '../repository/repository.ts';
import type { RepositoryOptions } from '../repository/config.ts';
import { closingOnFailure, openBackend } from '../storage/open.ts';
import { Output } from './output.ts';
import { resolvePassword } from './secrets.ts';
import { openRepositoryAt, readIdentityFile } from '../repository/open.ts';
import { decodeIdentityFile } from '../repository/keys.ts';
import type { StorageBackend } from '../storage/backend.ts';
import { auditOpened, releaseRepository } from './audit.ts';

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
  config?: string;
  metricsTextfile?: string;
  pushgateway?: string;
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

/**
 * A repository a command opens, with its key options and environment variables: the one of the
 * global options (`--password-file`, STRONGBOX_PASSWORD_FILE…), the source of `copy`
 * (`--from-password-file`, STRONGBOX_FROM_PASSWORD_FILE…), the target of `backup --copy-to`.
 */
export interface RepositoryRole {
  /** How prompts and messages name it. */
  label: string;
  /** The prefix of its key options: '' for --password-file, '--from' for --from-password-file. */
  option: string;
  /** The prefix of its environment variables: STRONGBOX, STRONGBOX_FROM… */
  env: string;
}

export const MAIN_REPOSITORY: RepositoryRole = { label: 'repository', option: '', env: 'STRONGBOX' };

export interface KeyOptions {
  passwordFile?: string | undefined;
  passwordCommand?: string | undefined;
  identityFile?: string | undefined;
}

const flag = (role: RepositoryRole, name: string) => (role.option ? `${role.option}-${name}` : `--${name}`);

export function describeKeyOptions(role: RepositoryRole): string {
  return (
    `${flag(role, 'password-file')}, ${flag(role, 'password-command')}, ${flag(role, 'identity-file')}, ` +
    `${role.env}_PASSWORD_FILE, ${role.env}_PASSWORD_COMMAND or ${role.env}_PASSWORD`
  );
}

/**
 * The key for `role`, resolved now (a prompt, a command, a file). Options on the command line win
 * over the environment, so that an explicit --password-file is not silently overridden by a
 * STRONGBOX_PASSWORD_FILE left in the environment.
 */
export async function resolveKey(
  role: RepositoryRole,
  options: KeyOptions,
  confirm = false,
): Promise<{ passphrase: string } | { identityFile: string }> {
  const identityFile = identityFileOf(role, options);
  if (identityFile) return { identityFile };
  return { passphrase: await password(role, options, confirm) };
}

/** Key options given on the command line: then the environment's are not read at all. */
function keyOptionsGiven(options: KeyOptions): boolean {
  return Boolean(options.identityFile || options.passwordFile || options.passwordCommand);
}

function identityFileOf(role: RepositoryRole, options: KeyOptions): string | undefined {
  return keyOptionsGiven(options) ? options.identityFile : process.env[`${role.env}_IDENTITY_FILE`];
}

function password(role: RepositoryRole, options: KeyOptions, confirm: boolean): Promise<string> {
  const given = keyOptionsGiven(options);
  return resolvePassword({
    file: given ? options.passwordFile : process.env[`${role.env}_PASSWORD_FILE`],
    command: given ? options.passwordCommand : process.env[`${role.env}_PASSWORD_COMMAND`],
    value: given ? undefined : process.env[`${role.env}_PASSWORD`],
    prompt: role === MAIN_REPOSITORY ? 'Repository password: ' : `Password of the ${role.label}: `,
    confirm,
    describe: describeKeyOptions(role),
  });
}

export function usesIdentityFile(options: GlobalOptions): boolean {
  return Boolean(identityFileOf(MAIN_REPOSITORY, options));
}

export async function openRepository(options: GlobalOptions): Promise<Repository> {
  const output = outputFor(options);
  const repository = await openRepositoryAt(
    repositoryLocation(options),
    await resolveKey(MAIN_REPOSITORY, options),
    { onWarning: (message: string) => output.warn(`warning: ${message}`) },
  );
  readWithoutLockWhereRefused(repository, output);
  repository.readLocking.skip = options.lock === false;
  auditOpened(repository);
  return repository;
}

/** Commands that only read go on without a lock where the storage refuses one, saying so. */
export function readWithoutLockWhereRefused(repository: Repository, output: Output): void {
  repository.readLocking.onUnlocked = (refused) =>
    output.warn(`warning: ${refused.message}; reading without a lock (as --no-lock does)`);
}

export function repositoryPassword(options: GlobalOptions, confirm: boolean): Promise<string> {
  return password(MAIN_REPOSITORY, options, confirm);
}

export async function initRepository(
  options: GlobalOptions,
  settings: RepositoryOptions,
): Promise<Repository> {
  const backend = await openBackend(repositoryLocation(options));
  const repository = await closingOnFailure(backend, async () =>
    Repository.init(backend, await repositoryPassword(options, true), settings, {
      onWarning: (message) => outputFor(options).warn(`warning: ${message}`),
    }),
  );
  auditOpened(repository);
  return repository;
}

/**
 * `strongbox migrate`: the repository named by --repo, with the key the global options give. The
 * migrated repository is then opened with the key's new form, for the audit record.
 */
export async function migrateRepositoryAt(options: GlobalOptions): Promise<MigrationResult> {
  const backend = await openBackend(repositoryLocation(options));
  let migrated: Repository | undefined;
  try {
    const key = await resolveKey(MAIN_REPOSITORY, options);
    const result = await migrateRepository(
      backend,
      'identityFile' in key ? { identity: await readIdentityFile(key.identityFile) } : key,
    );
    migrated = await openMigrated(backend, result.identityFile ?? key, options);
    return result;
  } finally {
    if (!migrated) await backend.close();
  }
}

async function openMigrated(
  backend: StorageBackend,
  key: string | { passphrase: string } | { identityFile: string },
  options: GlobalOptions,
): Promise<Repository | undefined> {
  if (typeof key !== 'string' && 'identityFile' in key) return undefined;
  const output = outputFor(options);
  try {
    const repository = await Repository.open(
      backend,
      typeof key === 'string' ? { identity: decodeIdentityFile(key, 'the new identity file') } : key,
      { onWarning: (message) => output.warn(`warning: ${message}`) },
    );
    auditOpened(repository);
    return repository;
  } catch (error) {
    output.warn(
      `warning: the migrated repository could not be opened for its audit record: ${error instanceof Error ? error.message : String(error)}`,
    );
    return undefined;
  }
}

/**
 * Runs `action` with an open repository and always closes it: at once, or, for a command the
 * audit log records, once its record is appended (audit.ts).
 */
export async function withRepository<T>(
  options: GlobalOptions,
  action: (repository: Repository) => Promise<T>,
): Promise<T> {
  const repository = await openRepository(options);
  try {
    return await action(repository);
  } finally {
    await releaseRepository(repository);
  }
}

const configs = new Map<string, Promise<StrongboxConfig>>();

/**
 * The configuration file --config or STRONGBOX_CONFIG names, read and validated once a process
 * (program.ts reads it before any command runs); the built-in settings when none is named.
 */
export function loadedConfig(options: GlobalOptions): Promise<StrongboxConfig> {
  const file = configFileFrom(options);
  if (file === undefined) return Promise.resolve(defaultConfig());
  let config = configs.get(file);
  if (!config) configs.set(file, (config = loadConfigFile(file)));
  return config;
}
