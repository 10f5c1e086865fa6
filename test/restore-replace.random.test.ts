import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startCli } from './helpers/cli.ts';
import { seededRandom } from './helpers/fault-proxy.ts';
import { exited, startShop, type ShopFixture } from './helpers/restore-watch.ts';
import { rounds, seed } from './helpers/soak.ts';

const ROWS = 3000;

/**
 * The moments of a `restore --replace` to interrupt, each an observable state: the scratch
 * database exists, pg_restore loads it, the comparison runs, the names are being swapped.
 */
const MOMENTS = ['created', 'loading', 'comparing', 'swapping'] as const;
type Moment = (typeof MOMENTS)[number];

describe('restore --replace killed at random moments', () => {
  let shop: ShopFixture;

  beforeAll(async () => {
    shop = await startShop(ROWS);
  });
  afterAll(async () => {
    await shop?.stop();
  });

  it('leaves the target whole under its name, and the next restore cleans up and succeeds', async () => {
    const random = seededRandom(seed('restore-replace.random'));
    const reached = async (moment: Moment, stderr: string): Promise<boolean> => {
      // A turn of the event loop, so that the child's output and exit come in between checks.
      await new Promise((resolve) => setImmediate(resolve));
      switch (moment) {
        case 'created':
          return (
            (
              await shop.session.query(
                `select 1 from pg_database where datname like 'strongbox\\_restore\\_%'`,
              )
            ).length > 0
          );
        case 'loading':
          return (
            (await shop.session.query(`select 1 from pg_stat_activity where application_name = 'pg_restore'`))
              .length > 0
          );
        case 'comparing':
          return stderr.includes('compare the restored database');
        case 'swapping':
          return stderr.includes('end sessions on shop');
      }
    };
    for (let round = 0, total = rounds(2); round < total; round++) {
      const moment = MOMENTS[Math.floor(random() * MOMENTS.length)]!;
      const signal = random() < 0.25 ? 'SIGTERM' : 'SIGKILL';
      const extraMs = Math.floor(random() * 200);
      const context = `round ${round}: ${signal} at ${moment} + ${extraMs} ms`;
      await shop.cluster.psql(`update items set name = 'old'`, 'shop');

      const child = startCli(['restore', 'latest', '--to', shop.to('shop'), '--replace', '--yes'], {
        env: shop.repo.env,
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
        await shop.session.query(`select datallowconn from pg_database where datname = 'shop'`),
        context,
      ).toEqual(['t']);
      expect([`${ROWS} ${ROWS}`, `${ROWS} 0`], context).toContain(await shop.content('shop'));

      const next = await runCli(['restore', 'latest', '--to', shop.to('shop'), '--replace', '--yes'], {
        env: shop.repo.env,
      });
      expect(next.code, `${context}\n${next.stderr}`).toBe(0);
      expect(await shop.content('shop'), context).toBe(`${ROWS} 0`);
      // Nothing left but the old database, kept: no scratch database, none closed.
      expect(
        await shop.session.query(
          `select datname from pg_database where datname not in ('postgres', 'template0', 'template1', 'shop')
             and datname not like 'shop\\_before\\_%' or not datallowconn and not datistemplate`,
        ),
        context,
      ).toEqual([]);
      for (const kept of await shop.session.query(
        `select datname from pg_database where datname like 'shop\\_before\\_%'`,
      ))
        await shop.cluster.psql(`drop database "${kept}" with (force)`);
    }
  }, 600_000);
});
