import { spawn, type ChildProcess } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cleanEnv, runCli, tempRepo, type TempRepo, expectExit } from './helpers/cli.ts';
import { socketUrl, startCluster, type TestCluster } from './helpers/postgres.ts';
import { seededRandom } from './helpers/fault-proxy.ts';
import { rounds, seed } from './helpers/soak.ts';

/**
 * `backup postgres` while the server terminates its sessions (pg_terminate_backend, as an
 * administrator or a failover does) at random moments: pg_dump's while it connects, reads the
 * catalog (pg_dump starts while the repository opens) or streams rows, strongbox's own psql
 * sessions (the server version, the session that exports the snapshot), or all at once. Every
 * run ends in one of two ways: exit 0 with a snapshot that verifies and restores, or exit 4 with
 * strongbox's one-line message and no snapshot. Never a crash.
 */

const ROWS = 200_000;
const KILLER = 'strongbox-test-killer';

/** Whose sessions a round terminates, and how long after the first of them appears. */
interface Termination {
  victims: 'pg_dump' | 'psql' | 'both';
  delaySeconds: number;
}

function drawTermination(random: () => number): Termination {
  const victims = (['pg_dump', 'pg_dump', 'psql', 'both'] as const)[Math.floor(random() * 4)]!;
  const moment = random();
  // A third at once (pg_dump connecting and reading the catalog, or psql's first statement),
  // a third within pg_dump's reading of the catalog, the rest anywhere in the run (or after it).
  const delaySeconds = moment < 1 / 3 ? 0 : moment < 2 / 3 ? random() * 0.15 : random() * 1.5;
  return { victims, delaySeconds };
}

/**
 * A session that waits, on the server, for a session of `victims` to appear in `database`, then
 * waits `delaySeconds` and terminates every such session there. It says "ready" (a NOTICE) once
 * it watches, so the backup starts only then.
 */
function startKiller(
  cluster: TestCluster,
  database: string,
  termination: Termination,
): Promise<ChildProcess> {
  const names = termination.victims === 'both' ? `'pg_dump', 'psql'` : `'${termination.victims}'`;
  const sql = `
    do $$
    declare
      deadline timestamptz := clock_timestamp() + interval '60 s';
    begin
      raise notice 'ready';
      loop
        perform pg_stat_clear_snapshot();
        exit when exists (select from pg_stat_activity where datname = '${database}'
          and application_name in (${names}) and pid <> pg_backend_pid());
        if clock_timestamp() > deadline then return; end if;
        perform pg_sleep(0.001);
      end loop;
      perform pg_sleep(${termination.delaySeconds});
      perform pg_stat_clear_snapshot();
      perform pg_terminate_backend(pid) from pg_stat_activity where datname = '${database}'
        and application_name in (${names}) and pid <> pg_backend_pid();
    end $$;`;
  const killer = spawn(path.join(cluster.binDir, 'psql'), ['-X', '-q', '-d', 'postgres', '-c', sql], {
    env: { ...cleanEnv(), ...cluster.env(), PGAPPNAME: KILLER },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  return new Promise((resolve, reject) => {
    let stderr = '';
    killer.stderr!.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
      if (stderr.includes('NOTICE:  ready')) resolve(killer);
    });
    killer.on('close', (code) => reject(new Error(`the killing session ended early (${code}): ${stderr}`)));
  });
}

/** Ends the killing session if it is still waiting, and waits for it to be gone. */
async function stopKiller(cluster: TestCluster, killer: ChildProcess): Promise<void> {
  const closed = new Promise((resolve) => killer.once('close', resolve));
  if (killer.exitCode === null && killer.signalCode === null) {
    await cluster.psql(
      `select pg_terminate_backend(pid) from pg_stat_activity where application_name = '${KILLER}'`,
    );
    await closed;
  }
}

describe('backup postgres while the server terminates its sessions', () => {
  let cluster: TestCluster;
  let repo: TempRepo;
  let env: Record<string, string>;
  const url = (database: string) => socketUrl(cluster, database);
  const filesIn = (dir: string) => readdir(path.join(repo.repo, dir)).catch(() => []);
  const snapshotIds = async () =>
    (
      JSON.parse((await runCli(['snapshots', '--json'], { env: repo.env })).stdout.toString()) as {
        id: string;
      }[]
    ).map((snapshot) => snapshot.id);

  beforeAll(async () => {
    cluster = await startCluster();
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
    await cluster.createDatabase('shop');
    await cluster.psql(
      `create table orders (id bigint primary key, customer text, note text, placed timestamptz);
       insert into orders select g, md5(g::text), repeat(chr(97 + g % 26), 40), timestamptz '2026-01-01' + g * interval '1 s'
         from generate_series(1, ${ROWS}) g;
       create table customers as select g as id, md5((g * 7)::text) as name from generate_series(1, 5000) g;
       create sequence order_numbers; select setval('order_numbers', 4242);`,
      'shop',
    );
    env = { ...repo.env, ...cluster.env(), PGDATABASE: 'shop' };
  });
  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
  });

  it(
    'exits 0 with a snapshot that restores, or 4 with one line and no snapshot',
    { timeout: 600_000 },
    async () => {
      const random = seededRandom(seed('backup-terminate'));
      const saved: string[] = [];
      const failures: string[] = [];
      for (let round = 0; round < rounds(10); round++) {
        const termination = drawTermination(random);
        const killer = await startKiller(cluster, 'shop', termination);
        const result = await runCli(['backup', 'postgres', '-q', '--pg-bin', cluster.binDir, '--json'], {
          env,
        });
        await stopKiller(cluster, killer);
        const context = `round ${round} (${JSON.stringify(termination)}): exit ${result.code}\n${result.stderr}`;
        if (result.code === 0)
          saved.push((JSON.parse(result.stdout.toString()) as { snapshot: string }).snapshot);
        // Listed from the directory: opening the repository each round would cost more than the backup.
        expect(await filesIn('snapshots'), context).toHaveLength(saved.length);
        expect(await filesIn('locks'), context).toEqual([]);
        if (result.code === 0) continue;
        expect(result.code, context).toBe(4);
        // strongbox's one-line message, and the hint under it: no stack trace, no crash.
        const lines = result.stderr.split('\n').filter(Boolean);
        expect(lines.length, context).toBeLessThanOrEqual(2);
        expect(lines[0], context).toMatch(/^strongbox: /);
        if (lines[1] !== undefined) expect(lines[1], context).toMatch(/^ {2}\S/);
        expect(result.stderr, context).not.toMatch(/unhandled|unexpected error/i);
        failures.push(lines[0]!);
      }
      console.log(`${saved.length} backups saved, ${failures.length} failed as expected`);
      expect(await snapshotIds()).toEqual(saved);

      expectExit(await runCli(['check', '--read-data'], { env: repo.env }), 0);
      for (const [index, snapshot] of saved.entries()) {
        expectExit(
          await runCli(['verify', snapshot, '--to', url('shop'), '--pg-bin', cluster.binDir], {
            env: repo.env,
          }),
          0,
        );
        // One restore proves the archive whole; the rest share its blobs, which check read.
        if (index === 0) {
          expectExit(
            await runCli(['restore', snapshot, '--to', url('shop_restored'), '--pg-bin', cluster.binDir], {
              env: repo.env,
            }),
            0,
          );
        }
      }
    },
  );
});
