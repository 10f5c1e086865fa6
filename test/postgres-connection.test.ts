import { describe, expect, it } from 'vitest';
import { ConfigError, PasswordInUrlError } from '../src/errors.ts';
import { checkDatabaseUrl, resolveConnection } from '../src/postgres/connection.ts';

describe('PostgreSQL connection settings', () => {
  it('reads a URL into libpq variables and a display', () => {
    const connection = resolveConnection('postgres://app@db.example:6543/shop?sslmode=require', {});
    expect(connection.env).toEqual({
      PGHOST: 'db.example',
      PGPORT: '6543',
      PGUSER: 'app',
      PGDATABASE: 'shop',
      PGSSLMODE: 'require',
    });
    expect(connection.display).toBe('app@db.example:6543/shop');
    expect(connection.database).toBe('shop');
  });

  it('refuses a URL that holds a password, naming it without the password', () => {
    for (const [url, location] of [
      [
        'postgres://app:s%40cret@db.example:6543/shop?sslmode=require',
        'postgres://app@db.example:6543/shop?sslmode=require',
      ],
      ['postgresql://:s%40cret@db.example/shop', 'postgresql://db.example/shop'],
      ['postgres://app@db.example/shop?password=s%40cret', 'postgres://app@db.example/shop'],
    ] as const) {
      let refused: unknown;
      try {
        checkDatabaseUrl(url);
      } catch (error) {
        refused = error;
      }
      expect(refused).toBeInstanceOf(PasswordInUrlError);
      expect(refused).toBeInstanceOf(ConfigError);
      expect((refused as PasswordInUrlError).location).toBe(location);
      expect((refused as Error).message).toMatch(/visible in the process list/);
      expect((refused as Error).message).not.toMatch(/s%40cret|s@cret/);
      expect(() => resolveConnection(url, {})).toThrow(PasswordInUrlError);
    }
    // An empty password is no password.
    expect(resolveConnection('postgres://app:@db.example/shop', {}).env.PGPASSWORD).toBeUndefined();
  });

  it('takes a password given apart from the URL, over the environment', () => {
    const environment = { PGPASSWORD: 'pgpass', DB_PASSWORD: 'dbpass' };
    expect(resolveConnection('postgres://app@db.example/shop', environment).env.PGPASSWORD).toBe('pgpass');
    expect(resolveConnection('postgres://app@db.example/shop', environment, 's@cret').env).toMatchObject({
      PGPASSWORD: 's@cret',
      PGUSER: 'app',
    });
    expect(resolveConnection(undefined, { PGDATABASE: 'shop' }, 's@cret').env.PGPASSWORD).toBe('s@cret');
  });

  it('prefers the URL, then libpq variables, then the DB_* variables', () => {
    const environment = {
      DB_HOST: 'from-db',
      DB_NAME: 'dbname',
      DB_USER: 'dbuser',
      DB_PASSWORD: 'dbpass',
      PGHOST: 'from-pg',
    };
    const fromEnvironment = resolveConnection(undefined, environment);
    expect(fromEnvironment.env).toMatchObject({
      PGHOST: 'from-pg',
      PGDATABASE: 'dbname',
      PGUSER: 'dbuser',
      PGPASSWORD: 'dbpass',
    });
    const fromUrl = resolveConnection('postgres://urluser@url-host/urldb', environment);
    expect(fromUrl.env).toMatchObject({
      PGHOST: 'url-host',
      PGUSER: 'urluser',
      PGDATABASE: 'urldb',
      PGPASSWORD: 'dbpass',
    });
  });

  it('takes a socket directory from the host parameter', () => {
    expect(resolveConnection('postgres:///shop?host=/var/run/postgresql', {}).env).toMatchObject({
      PGHOST: '/var/run/postgresql',
      PGDATABASE: 'shop',
    });
  });

  it('refuses what it cannot use, as configuration errors', () => {
    expect(() => resolveConnection('mysql://x/y', {})).toThrow(ConfigError);
    expect(() => resolveConnection('postgres://x/y?frobnicate=1', {})).toThrow(
      /unsupported database URL parameter/,
    );
    expect(() => resolveConnection(undefined, {})).toThrow(/no database given/);
  });
});
