import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { promisify } from 'node:util';
import { ConfigError } from '../errors.ts';
import { decodeIdentityFile, type KeyMaterial } from '../repository/keys.ts';
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
  confirm?: boolean;
  /** Names of the option and variables, for the error when none is given. */
  describe: string;
}

export async function resolvePassword(sources: PasswordSources): Promise<string> {
  if (sources.file) return stripNewline(await readSecretFile(sources.file, 'password file'));
  if (sources.command) {
    try {
      const { stdout } = await promisify(execFile)('/bin/sh', ['-c', sources.command], {
        maxBuffer: 1024 * 1024,
      });
      return stripNewline(stdout);
    } catch (cause) {
      throw new ConfigError('the password command failed', { cause, hint: 'Run it by hand to see why.' });
    }
  }
  if (sources.value !== undefined) return sources.value;
  if (process.stdin.isTTY && process.stderr.isTTY) {
    const password = await promptHidden(sources.prompt);
    if (sources.confirm && (await promptHidden('Repeat it: ')) !== password) {
      throw new ConfigError('the two passwords differ');
    }
    if (password === '') throw new ConfigError('an empty password is not allowed');
    return password;
  }
  throw new ConfigError('no password given', { hint: `Set ${sources.describe}.` });
}

export async function readIdentityFile(path: string): Promise<KeyMaterial> {
  const text = await readSecretFile(path, 'identity file');
  try {
    return decodeIdentityFile(text);
  } catch (cause) {
    throw new ConfigError(`${path} is not a strongbox identity file`, { cause });
  }
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
