import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCli, tempRepo, type RunResult, type TempRepo, expectExit } from '../helpers/cli.ts';
import { startCluster, type TestCluster } from '../helpers/postgres.ts';

/**
 * A command line is public on a host: every user reads it with ps or /proc/<pid>/cmdline. A
 * database password in strongbox's arguments is refused before anything connects; given in a
 * file, it reaches the PostgreSQL programs through their environment only.
 */
describe('attack: a database password on the command line', () => {
  let cluster: TestCluster;
  let repo: TempRepo;
  let wrappers: string;
  let commandLines: string;
  let environments: string;
  let passwordFile: string;
  /** The cluster over TCP, where the superuser logs in with its password (scram-sha-256). */
  const tcp = (database: string) => cluster.url(database, { tcp: true });
  const withPassword = (database: string) =>
    tcp(database).replace(`${cluster.user}@`, `${cluster.user}:${encodeURIComponent(cluster.password)}@`);
  const printed = (result: RunResult) => result.stdout.toString() + result.stderr;
  const fromFile = () => ['--pg-bin', wrappers, '--db-password-file', passwordFile];

  beforeAll(async () => {
    cluster = await startCluster();
    repo = await tempRepo();
    wrappers = path.join(repo.dir, 'bin');
    commandLines = path.join(repo.dir, 'command-lines');
    environments = path.join(repo.dir, 'environments');
    passwordFile = path.join(repo.dir, 'db-password');
    await writeFile(passwordFile, `${cluster.password}\n`, { mode: 0o600 });
    await mkdir(wrappers);
    // Each program, wrapped: while it runs, it writes down its own arguments and those of its
    // parent, strongbox (read from /proc as another user would), and its environment.
    for (const program of ['pg_dump', 'pg_dumpall', 'pg_restore', 'psql']) {
      const wrapper = path.join(wrappers, program);
      await writeFile(
        wrapper,
        [
          '#!/bin/sh',
          `tr '\\0' ' ' < /proc/$PPID/cmdline >> '${commandLines}'`,
          `echo >> '${commandLines}'`,
          `tr '\\0' ' ' < /proc/$$/cmdline >> '${commandLines}'`,
          `echo >> '${commandLines}'`,
          `env >> '${environments}'`,
          `exec '${path.join(cluster.binDir, program)}' "$@"`,
          '',
        ].join('\n'),
      );
      await chmod(wrapper, 0o755);
    }
    await cluster.createDatabase('shop');
    await cluster.psql('create table items (id int primary key, name text)', 'shop');
    await cluster.psql("insert into items select i, 'item ' || i from generate_series(1, 100) i", 'shop');
    expectExit(await runCli(['init'], { env: repo.env }), 0);
  });
  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
  });

  async function snapshotCount(): Promise<number> {
    const listed = await runCli(['snapshots', '--json'], { env: repo.env });
    expectExit(listed, 0);
    return (JSON.parse(listed.stdout.toString()) as unknown[]).length;
  }

  it('refuses a password in the URL of every command that connects, before it connects', async () => {
    expectExit(await runCli(['backup', 'postgres', tcp('shop'), ...fromFile()], { env: repo.env }), 0);
    const snapshots = await snapshotCount();
    const ranBefore = await readFile(commandLines, 'utf8');
    const encoded = encodeURIComponent(cluster.password);
    const commands = [
      ['backup', 'postgres', withPassword('shop')],
      ['backup', 'postgres', '--all', withPassword('postgres')],
      ['restore', 'latest', '--to', withPassword('shop_copy')],
      ['restore', '--all', 'latest', '--to', withPassword('postgres')],
      ['restore', '--cleanup', '--to', withPassword('postgres')],
      ['verify', 'latest', '--to', withPassword('shop')],
      // libpq's other place for a password.
      ['verify', 'latest', '--to', `${tcp('shop')}?password=${encoded}`],
    ];
    for (const args of commands) {
      const refused = await runCli([...args, '--pg-bin', wrappers], { env: repo.env });
      expectExit(refused, 3);
      expect(refused.stderr).toMatch(/holds a password, which would be visible in the process list/);
      // The URL is named, without its password.
      expect(refused.stderr).toContain(`${cluster.user}@127.0.0.1:${cluster.port}`);
      for (const replacement of [
        '--db-password-file',
        'STRONGBOX_DB_PASSWORD_FILE',
        'PGPASSWORD',
        'DB_PASSWORD',
        '~/.pgpass',
        'PGPASSFILE',
      ])
        expect(refused.stderr).toContain(replacement);
      expect(printed(refused)).not.toContain(cluster.password);
      expect(printed(refused)).not.toContain(encoded);
    }
    // No PostgreSQL program ran (not even pg_dump --version), and nothing was written or created.
    expect(await readFile(commandLines, 'utf8')).toBe(ranBefore);
    expect(await snapshotCount()).toBe(snapshots);
    expect((await cluster.psql(`select count(*) from pg_database where datname = 'shop_copy'`)).trim()).toBe(
      '0',
    );
  });

  it('refuses the URL before it opens the repository, which might ask for its password', async () => {
    const refused = await runCli(['verify', 'latest', '--to', withPassword('shop')], {
      env: { STRONGBOX_REPO: repo.repo },
    });
    expectExit(refused, 3);
    expect(refused.stderr).toMatch(/visible in the process list/);
  });

  it('backs up, restores and verifies over TCP with the password in a file, never in an argument', async () => {
    // What the programs of earlier tests wrote down is not this test's.
    const earlier = (await readFile(commandLines, 'utf8').catch(() => '')).length;
    // Without the file, nothing else gives the password: the login fails.
    const refused = await runCli(['backup', 'postgres', tcp('shop'), '--pg-bin', wrappers], {
      env: repo.env,
    });
    expectExit(refused, 4);
    expect(refused.stderr).toMatch(/no password supplied|password authentication failed/);

    expectExit(await runCli(['backup', 'postgres', tcp('shop'), ...fromFile()], { env: repo.env }), 0);
    expectExit(
      await runCli(['restore', 'latest', '--to', tcp('shop_copy'), '--pg-bin', wrappers], {
        env: { ...repo.env, STRONGBOX_DB_PASSWORD_FILE: passwordFile },
      }),
      0,
    );
    expectExit(
      await runCli(['verify', 'latest', '--to', tcp('shop_copy'), ...fromFile()], { env: repo.env }),
      0,
    );
    expect((await cluster.psql('select count(*) from items', 'shop_copy')).trim()).toBe('100');

    const seen = (await readFile(commandLines, 'utf8')).slice(earlier);
    // pg_dump, pg_restore and psql ran, under strongbox, and the password reached them…
    expect(seen).toMatch(/\bpg_dump .*--format=custom/);
    expect(seen).toMatch(/\bpg_restore /);
    expect(seen).toMatch(/strongbox\.js backup postgres postgres:\/\//);
    expect(await readFile(environments, 'utf8')).toContain(`PGPASSWORD=${cluster.password}\n`);
    // …through their environment alone: neither their arguments nor strongbox's hold it.
    expect(seen).not.toContain(cluster.password);
    expect(seen).not.toContain(encodeURIComponent(cluster.password));
  });

  it('warns of a password file every user can read, and refuses an empty one', async () => {
    const shared = path.join(repo.dir, 'db-password-shared');
    await writeFile(shared, `${cluster.password}\nsecond line, not read\n`);
    await chmod(shared, 0o644);
    const warned = await runCli(
      ['restore', '--cleanup', '--dry-run', '--to', tcp('postgres'), '--db-password-file', shared],
      { env: repo.env },
    );
    expectExit(warned, 0);
    expect(warned.stderr).toMatch(
      /warning: the database password file .* can be read by every user of this host/,
    );
    expect(printed(warned)).not.toContain(cluster.password);

    const empty = path.join(repo.dir, 'db-password-empty');
    await writeFile(empty, '\n', { mode: 0o600 });
    const refused = await runCli(
      ['restore', '--cleanup', '--dry-run', '--to', tcp('postgres'), '--db-password-file', empty],
      { env: repo.env },
    );
    expectExit(refused, 3);
    expect(refused.stderr).toMatch(/database password file .* is empty/);
  });
});
