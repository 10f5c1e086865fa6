import { execFile } from 'node:child_process';
import { access } from 'node:fs/promises';
import { createServer } from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, withCluster, type TestCluster } from './helpers/postgres.ts';

const execFileAsync = promisify(execFile);

/** psql with nothing inherited from the caller's libpq environment but what `env` gives. */
function psqlWith(cluster: TestCluster, args: string[], env: Record<string, string>) {
  const inherited = Object.fromEntries(
    Object.entries(process.env).filter(([name]) => !name.startsWith('PG')),
  );
  return execFileAsync(path.join(cluster.binDir, 'psql'), ['-X', '-At', ...args], {
    env: { ...inherited, ...env },
  });
}

function canListen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = createServer();
    server.on('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

describe('test PostgreSQL clusters', () => {
  let first: TestCluster;
  let second: TestCluster;

  beforeAll(async () => {
    [first, second] = await Promise.all([startCluster(), startCluster()]);
  });

  afterAll(async () => {
    await Promise.all([first?.stop(), second?.stop()]);
  });

  it('runs two clusters side by side on their own ports and sockets', async () => {
    expect(first.port).not.toBe(second.port);
    expect(first.host).not.toBe(second.host);
    expect(await first.psql('select 1 + 1')).toBe('2\n');
    expect(await second.psql(`select current_setting('port')`)).toBe(`${second.port}\n`);
    expect(await first.psql('select current_user')).toBe('postgres\n');
  });

  it('creates databases', async () => {
    await first.createDatabase('Mixed "Case"');
    expect(await first.psql('select current_database()', 'Mixed "Case"')).toBe('Mixed "Case"\n');
  });

  it('connects through env() and url() without a password over the socket', async () => {
    const viaEnv = await psqlWith(first, ['-d', 'postgres', '-c', 'select 1'], first.env());
    expect(viaEnv.stdout).toBe('1\n');
    const viaUrl = await psqlWith(
      second,
      [second.url('postgres'), '-c', `select current_setting('port')`],
      {},
    );
    expect(viaUrl.stdout).toBe(`${second.port}\n`);
  });

  it('requires the password over TCP', async () => {
    const url = second.url('postgres', { tcp: true });
    expect(url).toBe(`postgres://postgres@127.0.0.1:${second.port}/postgres`);
    const right = await psqlWith(second, [url, '-c', 'select inet_server_addr()'], {
      PGPASSWORD: second.password,
    });
    expect(right.stdout).toBe('127.0.0.1\n');
    const wrong = psqlWith(
      second,
      ['-h', '127.0.0.1', '-p', String(second.port), '-U', 'postgres', '-c', 'select 1'],
      {
        PGPASSWORD: `${second.password}x`,
      },
    );
    await expect(wrong).rejects.toThrow(/password authentication failed/);
  });

  it('loads the benchmark dataset', async () => {
    await first.loadDataset('shop', 0.01);
    expect(Number(await first.psql('select count(*) from shop.orders', 'shop'))).toBeGreaterThan(0);
  });

  it('stops, removes its directory and frees its port, and stops again harmlessly', async () => {
    const { host, port } = await withCluster(async (cluster) => {
      expect(await cluster.psql('select 1')).toBe('1\n');
      return cluster;
    });
    await expect(access(host)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await canListen(port)).toBe(true);

    await first.stop();
    await first.stop();
    await expect(access(first.host)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await canListen(first.port)).toBe(true);
  });
});
