import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempRepo, type TempRepo, expectExit } from '../helpers/cli.ts';
import { startCluster, type TestCluster, socketUrl } from '../helpers/postgres.ts';

const PASSWORD = 'repository password, never for pg_dump';
const CANARY = 'a-cloud-secret-the-tools-must-not-see';
const DATABASE_PASSWORD = 'the database password, for the tools alone';

/**
 * The PostgreSQL programs strongbox runs get the connection's variables and what they need to
 * run, not strongbox's own secrets: a pg_dump, or anything its PATH or a server-side extension
 * lets read /proc/<pid>/environ, must not learn the repository password. The database password
 * is theirs: it comes as PGPASSWORD, and the variable that named its file stays behind.
 */
describe('attack: secrets in the environment of the PostgreSQL programs', () => {
  let cluster: TestCluster;
  let repo: TempRepo;
  let wrappers: string;
  let seen: string;
  const to = (database: string) => socketUrl(cluster, database);

  beforeAll(async () => {
    cluster = await startCluster();
    repo = await tempRepo(PASSWORD);
    wrappers = path.join(repo.dir, 'bin');
    seen = path.join(repo.dir, 'environments');
    await mkdir(wrappers);
    // Each program, wrapped: it writes down its environment, then runs the real one.
    for (const program of ['pg_dump', 'pg_dumpall', 'pg_restore', 'psql']) {
      const wrapper = path.join(wrappers, program);
      await writeFile(
        wrapper,
        `#!/bin/sh\nenv >> '${seen}'\nexec '${path.join(cluster.binDir, program)}' "$@"\n`,
      );
      await chmod(wrapper, 0o755);
    }
    await cluster.createDatabase('shop');
    await cluster.psql('create table items (id int); insert into items values (1), (2)', 'shop');
  });
  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
  });

  it('keeps STRONGBOX_PASSWORD and other variables out of pg_dump, psql and pg_restore', async () => {
    const databasePasswordFile = path.join(repo.dir, 'db-password');
    await writeFile(databasePasswordFile, `${DATABASE_PASSWORD}\n`, { mode: 0o600 });
    const env = {
      STRONGBOX_REPO: repo.repo,
      STRONGBOX_PASSWORD: PASSWORD,
      STRONGBOX_DB_PASSWORD_FILE: databasePasswordFile,
      AWS_SECRET_ACCESS_KEY: CANARY,
    };
    expectExit(await runCli(['init'], { env }), 0);
    expectExit(
      await runCli(['backup', 'postgres', '--pg-bin', wrappers], {
        env: { ...env, ...cluster.env(), PGDATABASE: 'shop' },
      }),
      0,
    );
    expectExit(
      await runCli(['restore', 'latest', '--pg-bin', wrappers, '--to', to('shop_copy')], { env }),
      0,
    );
    expectExit(await runCli(['verify', 'latest', '--pg-bin', wrappers, '--to', to('shop_copy')], { env }), 0);

    const environments = await readFile(seen, 'utf8');
    // The programs ran, with what they need to connect.
    expect(environments).toMatch(new RegExp(`^PGPORT=${cluster.port}$`, 'm'));
    expect(environments).toMatch(/^PATH=/m);
    expect(environments).toMatch(new RegExp(`^PGPASSWORD=${DATABASE_PASSWORD}$`, 'm'));
    expect(environments).not.toContain(PASSWORD);
    expect(environments).not.toContain(CANARY);
    expect(environments).not.toMatch(/^STRONGBOX_/m);
  });
});
