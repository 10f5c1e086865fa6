import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, startCli, expectExit } from './helpers/cli.ts';
import { exited, startShop, type ShopFixture } from './helpers/restore-watch.ts';

const ROWS = 2000;

describe('restore --replace: interruptions, leftovers, long names', () => {
  let shop: ShopFixture;
  const to = (database: string) => shop.to(database);
  const content = (database: string) => shop.content(database);
  const makeOld = (database: string) => shop.makeOld(database);
  const replace = (database: string, ...args: string[]) =>
    runCli(['restore', 'latest', '--to', to(database), '--replace', '--yes', ...args], {
      env: shop.repo.env,
    });
  const startReplace = (database: string) =>
    startCli(['restore', 'latest', '--to', to(database), '--replace', '--yes'], { env: shop.repo.env });
  const kill = (child: ChildProcess) => process.kill(-child.pid!, 'SIGKILL');
  const databases = async () =>
    (await shop.session.query('select datname from pg_database order by 1')).sort();
  const dropAll = async (names: string[]) => {
    for (const name of names)
      await shop.cluster.psql(`drop database "${name.replaceAll('"', '""')}" with (force)`);
  };

  /**
   * Starts a restore and kills it while pg_restore loads its database, which it returns. A restore
   * that finished before that moment was seen is run again (its database dropped first).
   */
  const killWhenLoading = async (start: () => Promise<ChildProcess>): Promise<string> => {
    const initial = await databases();
    for (let attempt = 0; attempt < 10; attempt++) {
      const child = await start();
      const done = exited(child);
      while (child.exitCode === null && child.signalCode === null) {
        const loading = await shop.session.query(
          `select datname from pg_stat_activity where application_name = 'pg_restore' and datname is not null`,
        );
        if (loading.length > 0) {
          kill(child);
          await done;
          return loading[0]!;
        }
      }
      await done;
      await dropAll((await databases()).filter((name) => !initial.includes(name)));
    }
    throw new Error('pg_restore was never seen loading in ten restores');
  };

  beforeAll(async () => {
    shop = await startShop(ROWS);
  });
  afterAll(async () => {
    await shop?.stop();
  });

  it('a SIGKILL while the names are swapped leaves the target reachable, old or new', async () => {
    const initial = await databases();
    for (let round = 0; round < 3; round++) {
      await makeOld('shop');
      const child = startReplace('shop');
      const done = exited(child);
      let finished = false;
      void done.then(() => (finished = true));
      // Kill the moment the target is missing or closed to connections; the fix never lets it be.
      while (!finished) {
        const rows = await shop.session.query(`select datallowconn from pg_database where datname = 'shop'`);
        if (rows.length === 0 || rows[0] === 'f') {
          kill(child);
          break;
        }
      }
      await done;
      expect(await shop.session.query(`select datallowconn from pg_database where datname = 'shop'`)).toEqual(
        ['t'],
      );
      expect([`${ROWS} ${ROWS}`, `${ROWS} 0`]).toContain(await content('shop'));
      await dropAll((await databases()).filter((name) => !initial.includes(name)));
    }
  });

  it('removes the scratch database of a killed restore: on the next restore of its target, and with --cleanup', async () => {
    const initial = await databases();
    const killWhileLoading = () =>
      killWhenLoading(async () => {
        await makeOld('shop');
        return startReplace('shop');
      });
    const scratch = await killWhileLoading();
    expect(scratch).toMatch(/^strongbox_restore_shop_\d{8}_\d{6}$/);
    expect(await content('shop')).toBe(`${ROWS} ${ROWS}`);

    const listed = await runCli(['restore', '--cleanup', '--dry-run', '--to', to('postgres')]);
    expectExit(listed, 0);
    expect(listed.stdout.toString()).toMatch(
      new RegExp(
        `would remove +${scratch} \\(the scratch database of a restore of shop that did not finish\\)`,
      ),
    );
    expect(await databases()).toContain(scratch);

    const next = await replace('shop');
    expectExit(next, 0);
    expect(next.stderr).toContain(
      `removed ${scratch} (the scratch database of a restore of shop that did not finish)`,
    );
    expect(await content('shop')).toBe(`${ROWS} 0`);
    const kept = (await databases()).filter((name) => !initial.includes(name));
    expect(kept).toEqual([expect.stringMatching(/^shop_before_\d{8}_\d{6}$/)]);
    await dropAll(kept);

    const again = await killWhileLoading();
    const cleaned = await runCli(['restore', '--cleanup', '--to', to('postgres'), '--json']);
    expectExit(cleaned, 0);
    expect(JSON.parse(cleaned.stdout.toString())).toMatchObject({
      removed: [{ database: again, kind: 'scratch', target: 'shop', running: false }],
    });
    expect(await databases()).toEqual(initial);
    const nothing = await runCli(['restore', '--cleanup', '--to', to('postgres')]);
    expectExit(nothing, 0);
    expect(nothing.stderr).toMatch(/nothing left by restores on /);
  });

  it('loads a new database under a scratch name: a kill while loading leaves nothing under the target name', async () => {
    const initial = await databases();
    const scratch = await killWhenLoading(async () =>
      startCli(['restore', 'latest', '--to', to('shop_new')], { env: shop.repo.env }),
    );
    expect(scratch).toMatch(/^strongbox_restore_shop_new_\d{8}_\d{6}$/);
    expect(await databases()).not.toContain('shop_new');

    const next = await runCli(['restore', 'latest', '--to', to('shop_new')], { env: shop.repo.env });
    expectExit(next, 0);
    expect(next.stderr).toMatch(/removed strongbox_restore_shop_new_\d{8}_\d{6} \(the scratch database/);
    expect(await content('shop_new')).toBe(`${ROWS} 0`);
    expect((await databases()).filter((name) => !initial.includes(name))).toEqual(['shop_new']);
    await dropAll(['shop_new']);
  });

  it('drops the old database with --drop-old, and finishes a drop a killed restore left', async () => {
    const initial = await databases();
    await makeOld('shop');
    const dropped = await replace('shop', '--drop-old', '--json');
    expectExit(dropped, 0);
    expect(JSON.parse(dropped.stdout.toString())).not.toHaveProperty('keptAs');
    expect(await databases()).toEqual(initial);
    // What a --drop-old restore killed between its swap and its drop leaves: the old database, marked.
    await shop.cluster.psql(
      `create database shop_before_20261204_000000; comment on database shop_before_20261204_000000 is '{"strongbox":"replaced","target":"shop"}'`,
    );
    const cleaned = await runCli(['restore', '--cleanup', '--to', to('postgres')]);
    expectExit(cleaned, 0);
    expect(cleaned.stdout.toString()).toMatch(
      /removed +shop_before_20261204_000000 \(the database a restore of shop replaced and was to drop\)/,
    );
    expect(await databases()).toEqual(initial);
  });

  it('leaves alone the scratch database of a restore still running', async () => {
    await makeOld('shop');
    const child = startReplace('shop');
    const done = exited(child);
    let scratch: string | undefined;
    while (!scratch) {
      [scratch] = await shop.session.query(
        `select datname from pg_database where datname like 'strongbox\\_restore\\_%'`,
      );
      expect(child.exitCode).toBeNull();
    }
    const cleaned = await runCli(['restore', '--cleanup', '--to', to('postgres'), '--json']);
    await done;
    expect(child.exitCode, 'the running restore').toBe(0);
    expectExit(cleaned, 0);
    const result = JSON.parse(cleaned.stdout.toString()) as {
      removed: unknown[];
      found: { database: string }[];
    };
    expect(result.removed).toEqual([]);
    expect(await content('shop')).toBe(`${ROWS} 0`);
    await dropAll((await databases()).filter((name) => name.startsWith('shop_before_')));
  });

  it('fits every name it makes within 63 bytes, unique and exactly as reported, for long and multibyte targets', async () => {
    // 63 bytes: the old scratch name was cut back to the target's; 3-byte characters, cut at a
    // boundary; 45 bytes: the old _before_ names of two runs hours apart were cut to the same one.
    for (const target of ['x'.repeat(63), `${'数据'.repeat(7)}_${'é'.repeat(10)}`, 'l'.repeat(45)]) {
      expect(Buffer.byteLength(target)).toBeLessThanOrEqual(63);
      expectExit(await runCli(['restore', 'latest', '--to', to(target)], { env: shop.repo.env }), 0);
      await makeOld(target);
      const before = await databases();
      const keptAs: string[] = [];
      // Twice, as fast as it goes: the second run's names must not meet the first's.
      for (let run = 0; run < 2; run++) {
        const replaced = await replace(target, '--json');
        expectExit(replaced, 0);
        const result = JSON.parse(replaced.stdout.toString()) as { keptAs: string; steps: string[] };
        keptAs.push(result.keptAs);
        expect(Buffer.byteLength(result.keptAs)).toBeLessThanOrEqual(63);
        expect(result.keptAs).toMatch(/_before_\d{8}_\d{6}(_\d+)?$/);
        expect(result.keptAs.startsWith(target.slice(0, 10))).toBe(true);
        const scratch = /^create database (.*)$/.exec(result.steps[0]!)![1]!;
        expect(scratch).toMatch(/^strongbox_restore_.*_\d{8}_\d{6}(_\d+)?$/);
        expect(Buffer.byteLength(scratch)).toBeLessThanOrEqual(63);
        expect(await content(target)).toBe(`${ROWS} 0`);
      }
      expect(new Set(keptAs).size).toBe(2);
      expect((await databases()).filter((name) => !before.includes(name)).sort()).toEqual([...keptAs].sort());
      expect(await content(keptAs[0]!)).toBe(`${ROWS} ${ROWS}`);
      await dropAll([target, ...keptAs]);
    }
  }, 300_000);
});
