import type { Command } from 'commander';
import { checkDatabaseUrl } from '../postgres/connection.ts';
import type { Output } from './output.ts';
import { readDatabasePasswordFile } from './secrets.ts';

export interface DatabasePasswordOptions {
  dbPasswordFile?: string;
}

/** The option of every command that connects to PostgreSQL: the password, which a URL may not hold. */
export function databasePasswordOption(command: Command): Command {
  return command.option(
    '--db-password-file <file>',
    'read the database password from a file, first line (env STRONGBOX_DB_PASSWORD_FILE)',
  );
}

/** What the library's operations take beside the URL. */
export interface DatabaseCredentials {
  password?: string;
}

/**
 * Checks the database URL and reads the password file before the repository opens, so that a
 * refused URL or a missing file fails at once, not after a prompt for the repository's password.
 * Returns the password for the library's `password` option, when a file gives one.
 */
export async function databaseCredentials(
  url: string | undefined,
  options: DatabasePasswordOptions,
  output: Output,
): Promise<DatabaseCredentials> {
  if (url) checkDatabaseUrl(url);
  const file = options.dbPasswordFile ?? process.env.STRONGBOX_DB_PASSWORD_FILE;
  if (!file) return {};
  return { password: await readDatabasePasswordFile(file, (message) => output.warn(`warning: ${message}`)) };
}
