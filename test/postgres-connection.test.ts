import { describe, expect, it } from 'vitest';
import { ConfigError } from '../src/errors.ts';
import { resolveConnection } from '../src/sources/postgres/connection.ts';

describe('PostgreSQL connection settings', () => {
  it('reads a URL, keeping the password out of the display', () => {
    const connection = resolveConnection('postgres://app:s%40cret@db.example:6543/shop?sslmode=require', {});
    expect(connection.env).toEqual({
      PGHOST: 'db.example',
      PGPORT: '6543',
      PGUSER: 'app',
      PGPASSWORD: 's@cret',
      PGDATABASE: 'shop',
      PGSSLMODE: 'require',
    });
    expect(connection.display).toBe('app@db.example:6543/shop');
    expect(connection.database).toBe('shop');
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
