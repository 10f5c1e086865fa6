import { execFile } from 'node:child_process';
import { promises as fs, constants } from 'node:fs';
import { promisify } from 'node:util';
import { ConfigError } from '../errors.ts';
import { promptHidden } from './prompt.ts';

/**
 * Where passwords come from, in order: a file, a command, an environment variable, then a
 * prompt when a terminal is attached. Never from a command-line argument, which other users
 * of the machine can read.
 */
export interface PasswordSources {
  file?: string | undefined;
  command?: string | undefined;
  value?: string | undefined;
  /** What to ask on a terminal, when nothing else is given. */
  prompt: string;
  /** A password for a new key: asked twice on a terminal, and refused when empty. */
  confirm?: boolean;
  /** Names of the option and variables, for the error when none is given. */
  describe: string;
}

export async function resolvePassword(sources: PasswordSources): Promise<string> {
  const { password, from } = await readPassword(sources);
  // The library refuses too; here the message can say where the empty password came from.
  if (sources.confirm && password === '')
    throw new ConfigError(`the new password ${from} is empty`, {
      hint: 'A key needs a password: anyone who can read the repository could open it with an empty one.',
    });
  return password;
}

async function readPassword(sources: PasswordSources): Promise<{ password: string; from: string }> {
  if (sources.file) {
    const password = stripNewline(await readSecretFile(sources.file, 'password file'));
    return { password, from: `in ${sources.file}` };
  }
  if (sources.command) {
    try {
      const { stdout } = await promisify(execFile)('/bin/sh', ['-c', sources.command], {
        maxBuffer: 1024 * 1024,
      });
      return { password: stripNewline(stdout), from: 'printed by the password command' };
    } catch (cause) {
      throw new ConfigError('the password command failed', { cause, hint: 'Run it by hand to see why.' });
    }
  }
  if (sources.value !== undefined) return { password: sources.value, from: 'in the environment' };
  if (process.stdin.isTTY && process.stderr.isTTY) {
    const password = await promptHidden(sources.prompt);
    if (sources.confirm && (await promptHidden('Repeat it: ')) !== password) {
      throw new ConfigError('the two passwords differ');
    }
    return { password, from: 'you typed' };
  }
  throw new ConfigError('no password given', { hint: `Set ${sources.describe}.` });
}

/**
 * The database password from a file: its first line. A file every user of the host may read is
 * used, with a warning rather than refused: mounted secrets (Kubernetes 0644, Docker 0444) are
 * often so, alone in their container; group access is a deliberate sharing and goes unremarked.
 */
export async function readDatabasePasswordFile(
  path: string,
  onWarning: (message: string) => void,
): Promise<string> {
  const [password = ''] = (await readSecretFile(path, 'database password file')).split(/\r?\n/, 1);
  if (password === '') throw new ConfigError(`the database password file ${path} is empty`);
  if (await readableByOthers(path))
    onWarning(`the database password file ${path} can be read by every user of this host (chmod o-r)`);
  return password;
}

async function readableByOthers(path: string): Promise<boolean> {
  return ((await fs.stat(path)).mode & 0o004) !== 0;
}

async function readSecretFile(path: string, what: string): Promise<string> {
  try {
    return await fs.readFile(path, 'utf8');
  } catch (cause) {
    throw new ConfigError(
      `cannot read the ${what} ${path}: ${(cause as NodeJS.ErrnoException).code ?? cause}`,
      { cause },
    );
  }
}

function stripNewline(text: string): string {
  return text.replace(/\r?\n$/, '');
}

/** A new file only its owner can read, created before the secret it will hold exists. */
export interface SecretFile {
  write(text: string): Promise<void>;
  /** Removes the file again, when the operation that was to fill it failed. */
  abandon(): Promise<void>;
}

/**
 * Creates the file (mode 0600, refusing an existing one) before the key it will hold is made: a
 * rotation or migration whose new key could not then be written would lock its user out.
 */
export async function reserveSecretFile(path: string): Promise<SecretFile> {
  const handle = await fs
    .open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600)
    .catch((cause: NodeJS.ErrnoException) => {
      throw new ConfigError(`cannot create ${path}: ${cause.code ?? cause.message}`, {
        hint: 'Choose a path that does not exist yet.',
        cause,
      });
    });
  return {
    async write(text) {
      try {
        await handle.writeFile(text);
        await handle.sync();
      } finally {
        await handle.close();
      }
    },
    async abandon() {
      await handle.close();
      await fs.unlink(path).catch(() => undefined);
    },
  };
}

/** Runs `make` with `path` reserved, and writes what it returns there; nothing is left if it fails. */
export async function withSecretFile<T>(
  path: string | undefined,
  make: () => Promise<{ secret?: string | undefined; result: T }>,
): Promise<T> {
  const file = path === undefined ? undefined : await reserveSecretFile(path);
  let made: { secret?: string | undefined; result: T };
  try {
    made = await make();
  } catch (error) {
    await file?.abandon();
    throw error;
  }
  if (file) {
    if (made.secret === undefined) await file.abandon();
    else await file.write(made.secret);
  }
  return made.result;
}
