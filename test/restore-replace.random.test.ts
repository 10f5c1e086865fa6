import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startCli, tempRepo, type RunResult, type TempRepo } from './helpers/cli.ts';
import { startCluster, type TestCluster } from './helpers/postgres.ts';
import { exited, openSession, type CatalogSession } from './helpers/restore-watch.ts';
import { rounds, seed } from './helpers/soak.ts';

function expectExit(result: RunResult, code: number): void {
  expect(result.code, result.stderr).toBe(code);
}

/** mulberry32: a small seeded generator, so that a failing round replays from its seed. */
function generator(start: number): () => number {
  let state = start >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

const ROWS = 3000;

/**
 * The moments of a `restore --replace` to interrupt, each an observable state: the scratch
 * database exists, pg_restore loads it, the comparison runs, the names are being swapped.
 */
const MOMENTS = ['created', 'loading', 'comparing', 'swapping'] as const;
type Moment = (typeof MOMENTS)[number];

describe('restore --replace killed at random moments', () => {
  let cluster: TestCluster;
  let repo: TempRepo;
  let session: CatalogSession;
  const to = (database: string) =>
    `postgres:///${database}?host=${encodeURIComponent(cluster.host)}&port=${cluster.port}&user=${cluster.user}`;
  const content = async () =>
    (
      await cluster.psql(`select count(*) || ' ' || count(*) filter (where name = 'old') from items`, 'shop')
    ).trim();

  beforeAll(async () => {
    cluster = await startCluster();
    repo = await tempRepo();
    session = openSession(cluster);
    expectExit(await runCli(['init'], { env: repo.env }), 0);
    await cluster.createDatabase('shop');
    await cluster.psql(
      `create table items (id int primary key, name text); create index items_name on items (name);
       insert into items select g, 'item ' || g from generate_series(1, ${ROWS}) g`,
      'shop',
    );
    expectExit(
      await runCli(['backup', 'postgres'], { env: { ...repo.env, ...cluster.env(), PGDATABASE: 'shop' } }),
      0,
    );
  });
  afterAll(async () => {
    await session?.close();
    await cluster?.stop();
    await repo?.cleanup();
  });

  it('leaves the target whole under its name, and the next restore cleans up and succeeds', async () => {
    const random = generator(seed('restore-replace.random'));
    const reached = async (moment: Moment, stderr: string): Promise<boolean> => {
      // A turn of the event loop, so that the child's output and exit come in between checks.
      await new Promise((resolve) => setImmediate(resolve));
      switch (moment) {
        case 'created':
          return (
            (await session.query(`select 1 from pg_database where datname like 'strongbox\\_restore\\_%'`))
              .length > 0
          );
        case 'loading':
          return (
            (await session.query(`select 1 from pg_stat_activity where application_name = 'pg_restore'`))
              .length > 0
          );
        case 'comparing':
          return stderr.includes('compare every restored table');
        case 'swapping':
          return stderr.includes('end sessions on shop');
      }
    };
    for (let round = 0, total = rounds(4); round < total; round++) {
      const moment = MOMENTS[Math.floor(random() * MOMENTS.length)]!;
      const signal = random() < 0.25 ? 'SIGTERM' : 'SIGKILL';
      const extraMs = Math.floor(random() * 200);
      const context = `round ${round}: ${signal} at ${moment} + ${extraMs} ms`;
      await cluster.psql(`update items set name = 'old'`, 'shop');

      const child = startCli(['restore', 'latest', '--to', to('shop'), '--replace', '--yes'], {
        env: repo.env,
      });
      let stderr = '';
      child.stderr!.on('data', (data: Buffer) => (stderr += data.toString()));
      const done = exited(child);
      let finished = false;
      void done.then(() => (finished = true));
      while (!finished && !(await reached(moment, stderr))) {
        // Polled as fast as it goes: catalog states through one open session, output as it comes.
      }
      if (!finished) {
        await new Promise((resolve) => setTimeout(resolve, extraMs));
        if (!finished) process.kill(-child.pid!, signal);
      }
      await done;

      // Whole under its name: old or new, reachable, open.
      expect(
        await session.query(`select datallowconn from pg_database where datname = 'shop'`),
        context,
      ).toEqual(['t']);
      expect([`${ROWS} ${ROWS}`, `${ROWS} 0`], context).toContain(await content());

      const next = await runCli(['restore', 'latest', '--to', to('shop'), '--replace', '--yes'], {
        env: repo.env,
      });
      expect(next.code, `${context}\n${next.stderr}`).toBe(0);
      expect(await content(), context).toBe(`${ROWS} 0`);
      // Nothing left but the old database, kept: no scratch database, none closed.
      expect(
        await session.query(
          `select datname from pg_database where datname not in ('postgres', 'template0', 'template1', 'shop')
             and datname not like 'shop\\_before\\_%' or not datallowconn and not datistemplate`,
        ),
        context,
      ).toEqual([]);
      for (const kept of await session.query(
        `select datname from pg_database where datname like 'shop\\_before\\_%'`,
      ))
        await cluster.psql(`drop database "${kept}" with (force)`);
    }
  }, 600_000);
});
