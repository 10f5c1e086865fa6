import { ConfigError, PasswordInUrlError } from '../errors.ts';

/**
 * Where and how to connect, as libpq environment variables for the PostgreSQL tools. Settings
 * come from a postgres:// URL, then libpq's own variables (PGHOST, PGPORT, PGUSER, PGPASSWORD,
 * PGDATABASE, PGSSLMODE…, and ~/.pgpass, which libpq reads itself), then the variables the
 * scripts strongbox replaces used (DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_PASSWORD). The tools
 * always get them through their environment: a password never appears in a process's arguments.
 * That is also why a URL may not hold one: URLs are given on command lines, which every user of
 * the host can read; the password comes separately, from the environment, ~/.pgpass or the caller.
 */
export interface PostgresConnection {
  /** libpq variables to add to the tools' environment. */
  env: Record<string, string>;
  database: string;
  /** Where, for messages and snapshots: user@host:port/database, never a password. */
  display: string;
}

/** libpq variables a URL's query parameters map to. */
const QUERY_PARAMETERS: Record<string, string> = {
  sslmode: 'PGSSLMODE',
  sslrootcert: 'PGSSLROOTCERT',
  sslcert: 'PGSSLCERT',
  sslkey: 'PGSSLKEY',
  application_name: 'PGAPPNAME',
  connect_timeout: 'PGCONNECT_TIMEOUT',
  options: 'PGOPTIONS',
  host: 'PGHOST',
  port: 'PGPORT',
  user: 'PGUSER',
  dbname: 'PGDATABASE',
};

/** The replaced scripts' variables, and the libpq variable each stands for. */
const SCRIPT_VARIABLES: Record<string, string> = {
  DB_HOST: 'PGHOST',
  DB_PORT: 'PGPORT',
  DB_NAME: 'PGDATABASE',
  DB_USER: 'PGUSER',
  DB_PASSWORD: 'PGPASSWORD',
};

/** The same server and credentials, another database. */
export function withDatabase(connection: PostgresConnection, database: string): PostgresConnection {
  return {
    env: { ...connection.env, PGDATABASE: database },
    database,
    display: connection.display.replace(/\/[^/]*$/, `/${database}`),
  };
}

/**
 * `password`, when given, wins over PGPASSWORD and DB_PASSWORD: the caller read it from where it
 * was told to (a password file), more specific than what the environment happens to hold.
 */
export function resolveConnection(
  url: string | undefined,
  environment: NodeJS.ProcessEnv = process.env,
  password?: string,
): PostgresConnection {
  const env: Record<string, string> = {};
  for (const [scriptName, libpqName] of Object.entries(SCRIPT_VARIABLES)) {
    const value = environment[scriptName];
    if (value && !environment[libpqName]) env[libpqName] = value;
  }
  for (const [name, value] of Object.entries(environment)) {
    if (name.startsWith('PG') && value !== undefined) env[name] = value;
  }
  if (url) Object.assign(env, fromUrl(url));
  if (password !== undefined) env.PGPASSWORD = password;
  const database = env.PGDATABASE ?? env.PGUSER ?? environment.USER;
  if (!database) {
    throw new ConfigError('no database given', {
      hint: 'Pass a postgres:// URL, or set PGDATABASE (or DB_NAME).',
    });
  }
  env.PGDATABASE = database;
  const host = env.PGHOST ?? 'the local socket';
  const display = `${env.PGUSER ? `${env.PGUSER}@` : ''}${host}${env.PGPORT ? `:${env.PGPORT}` : ''}/${database}`;
  return { env, database, display };
}

/**
 * Throws what resolveConnection would for this URL, without resolving anything else: for callers
 * that refuse a bad URL before they open a repository or ask for its password.
 */
export function checkDatabaseUrl(url: string): void {
  fromUrl(url);
}

function fromUrl(text: string): Record<string, string> {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError('the database URL is not valid', {
      hint: 'Use postgres://user@host:5432/database.',
    });
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    throw new ConfigError(`unsupported database URL scheme ${url.protocol}`, {
      hint: 'Use postgres://user@host:5432/database.',
    });
  }
  // libpq takes a password in the user part and as a parameter.
  if (url.password || url.searchParams.has('password')) throw new PasswordInUrlError(withoutPassword(url));
  const env: Record<string, string> = {};
  if (url.hostname) env.PGHOST = decodeURIComponent(url.hostname.replace(/^\[|\]$/g, ''));
  if (url.port) env.PGPORT = url.port;
  if (url.username) env.PGUSER = decodeURIComponent(url.username);
  const database = decodeURIComponent(url.pathname.replace(/^\//, ''));
  if (database) env.PGDATABASE = database;
  for (const [key, value] of url.searchParams) {
    const name = QUERY_PARAMETERS[key];
    if (!name)
      throw new ConfigError(`unsupported database URL parameter ${key}`, {
        hint: `Known: ${Object.keys(QUERY_PARAMETERS).join(', ')}.`,
      });
    env[name] = value;
  }
  return env;
}

function withoutPassword(url: URL): string {
  const shown = new URL(url.href);
  shown.password = '';
  if (shown.searchParams.has('password')) shown.searchParams.delete('password');
  return shown.href;
}
