import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import { runCli, tempRepo, type RunResult, type TempRepo } from './cli.ts';
import { startCluster, type TestCluster } from './postgres.ts';

/**
 * One psql session kept open on a test cluster, for tests that poll the catalog quickly enough to
 * catch a state that lasts milliseconds (a psql per query costs tens of them).
 */
export interface CatalogSession {
  /** Runs SQL; returns its unaligned rows. */
  query(sql: string): Promise<string[]>;
  close(): Promise<void>;
}

const END = '__end_of_query__';

export function openSession(cluster: TestCluster): CatalogSession {
  const child = spawn(path.join(cluster.binDir, 'psql'), ['-X', '-q', '-A', '-t', '-d', 'postgres'], {
    env: { PATH: process.env.PATH ?? '', ...cluster.env() },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let buffered = '';
  let waiting: ((rows: string[]) => void) | undefined;
  child.stdout.setEncoding('utf8').on('data', (data: string) => {
    buffered += data;
    const end = buffered.indexOf(`${END}\n`);
    if (end < 0 || !waiting) return;
    const rows = buffered.slice(0, end).split('\n').filter(Boolean);
    buffered = buffered.slice(end + END.length + 1);
    const resolve = waiting;
    waiting = undefined;
    resolve(rows);
  });
  let chain: Promise<unknown> = Promise.resolve();
  const query = (sql: string) => {
    const next = chain.then(
      () =>
        new Promise<string[]>((resolve) => {
          waiting = resolve;
          child.stdin.write(`${sql};\n\\echo ${END}\n`);
        }),
    );
    chain = next;
    return next;
  };
  return { query, close: () => closeChild(child) };
}

function closeChild(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null) return resolve();
    child.once('close', () => resolve());
    child.stdin?.end();
  });
}

/** Resolves when `child` has exited. */
export function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once('exit', () => resolve());
  });
}

/**
 * A cluster with a database `shop` whose table `items` has `rows` rows, a repository holding
 * one backup of it, and a catalog session: what the tests of `restore --replace` start from.
 */
export interface ShopFixture {
  cluster: TestCluster;
  repo: TempRepo;
  session: CatalogSession;
  /** A --to URL for `database` on the cluster (any bytes in its name). */
  to(database: string): string;
  /** "<rows> <rows marked old>" of items in `database`: the backup has none marked. */
  content(database: string): Promise<string>;
  /** Marks every row of items in `database` old: a state the backup does not have. */
  makeOld(database: string): Promise<void>;
  stop(): Promise<void>;
}

export async function startShop(rows: number): Promise<ShopFixture> {
  const cluster = await startCluster();
  const repo = await tempRepo();
  const session = openSession(cluster);
  const fixture: ShopFixture = {
    cluster,
    repo,
    session,
    to: (database) =>
      `postgres:///${encodeURIComponent(database)}?host=${encodeURIComponent(cluster.host)}&port=${cluster.port}&user=${cluster.user}`,
    content: async (database) =>
      (
        await cluster.psql(
          `select count(*) || ' ' || count(*) filter (where name = 'old') from items`,
          database,
        )
      ).trim(),
    makeOld: async (database) => void (await cluster.psql(`update items set name = 'old'`, database)),
    stop: async () => {
      await session.close();
      await cluster.stop();
      await repo.cleanup();
    },
  };
  try {
    await expectOk(runCli(['init'], { env: repo.env }));
    await cluster.createDatabase('shop');
    await cluster.psql(
      `create table items (id int primary key, name text); create index items_name on items (name);
       insert into items select g, 'item ' || g from generate_series(1, ${rows}) g`,
      'shop',
    );
    await expectOk(
      runCli(['backup', 'postgres'], { env: { ...repo.env, ...cluster.env(), PGDATABASE: 'shop' } }),
    );
    return fixture;
  } catch (error) {
    await fixture.stop();
    throw error;
  }
}

async function expectOk(run: Promise<RunResult>): Promise<void> {
  const result = await run;
  if (result.code !== 0) throw new Error(`strongbox exited ${result.code}: ${result.stderr}`);
}
