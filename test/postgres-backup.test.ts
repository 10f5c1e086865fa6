import { spawn } from 'node:child_process';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backup, openRepository, postgresSource } from '../src/index.ts';
import { CLI, cleanEnv, runCli, tempRepo, type RunResult, type TempRepo, expectExit } from './helpers/cli.ts';
import { startCluster, type TestCluster } from './helpers/postgres.ts';

/** Every table's rows as sorted COPY text: equal when two databases hold the same data. */
async function tableContents(cluster: TestCluster, database: string): Promise<Record<string, string>> {
  const tables = (
    await cluster.psql(
      `select format('%I.%I', n.nspname, c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where c.relkind = 'r' and n.nspname not in ('pg_catalog', 'information_schema') order by 1`,
      database,
    )
  )
    .trim()
    .split('\n');
  const contents: Record<string, string> = {};
  for (const table of tables) {
    const rows = await cluster.psql(`copy ${table} to stdout`, database);
    contents[table] = rows.split('\n').sort().join('\n');
  }
  return contents;
}

async function schema(cluster: TestCluster, database: string): Promise<string> {
  const { execFile } = await import('node:child_process');
  return new Promise((resolve, reject) =>
    execFile(
      path.join(cluster.binDir, 'pg_dump'),
      ['--schema-only', database],
      { env: { ...process.env, ...cluster.env() }, maxBuffer: 1 << 26 },
      (error, stdout) =>
        // \restrict lines carry a random key in every dump (PostgreSQL 15.14 and later).
        error ? reject(error) : resolve(stdout.replace(/^(-- Dumped (from|by)|\\(un)?restrict) .*$/gm, '')),
    ),
  );
}

async function snapshotNames(repo: TempRepo): Promise<string[]> {
  const listed = await runCli(['snapshots', '--json'], { env: repo.env });
  return (JSON.parse(listed.stdout.toString()) as { name: string }[]).map((snapshot) => snapshot.name);
}

/** Runs pg_restore of `archive` into a new database (or an existing one). */
async function restoreInto(
  cluster: TestCluster,
  archive: Buffer,
  database: string,
  options = { exists: false },
): Promise<void> {
  if (!options.exists) await cluster.createDatabase(database);
  await new Promise<void>((resolve, reject) => {
    const child = spawn(path.join(cluster.binDir, 'pg_restore'), ['--exit-on-error', '-d', database], {
      env: { ...process.env, ...cluster.env() },
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`pg_restore failed: ${stderr}`))));
    child.stdin.end(archive);
  });
}

/** Waits until `condition` holds, for at most 10 s. */
async function until(condition: () => Promise<boolean>): Promise<void> {
  for (const deadline = Date.now() + 10_000; !(await condition()); await sleep(50)) {
    if (Date.now() > deadline) throw new Error('condition not met within 10 s');
  }
}

describe('backup postgres', () => {
  let cluster: TestCluster;
  let repo: TempRepo;

  beforeAll(async () => {
    cluster = await startCluster();
    await cluster.loadDataset('shop', 0.02);
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
  });
  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
  });

  it('streams pg_dump into a snapshot whose archive pg_restore rebuilds exactly', async () => {
    const backedUp = await runCli(['backup', 'postgres', '--json', '--tag', 'env=test'], {
      env: { ...repo.env, ...cluster.env(), PGDATABASE: 'shop' },
    });
    expectExit(backedUp, 0);
    const summary = JSON.parse(backedUp.stdout.toString()) as {
      size: number;
      stored: number;
      deduplicationRatio: number;
    };
    expect(summary.size).toBeGreaterThan(100_000);
    // COPY text compresses: the archive takes less room than its size.
    expect(summary.deduplicationRatio).toBeCloseTo(summary.size / summary.stored, 6);
    expect(summary.deduplicationRatio).toBeGreaterThan(1.5);
    expect(await snapshotNames(repo)).toEqual(['shop']);

    const dumped = await runCli(['dump', 'latest'], { env: repo.env });
    expectExit(dumped, 0);
    expect(dumped.stdout.subarray(0, 5).toString()).toBe('PGDMP');
    await restoreInto(cluster, dumped.stdout, 'shop_restored');
    expect(await tableContents(cluster, 'shop_restored')).toEqual(await tableContents(cluster, 'shop'));
    expect(await schema(cluster, 'shop_restored')).toBe(await schema(cluster, 'shop'));
  });

  it('restores the dataset with every table checked against its fingerprint', async () => {
    const restored = await runCli(
      [
        'restore',
        'latest',
        '--name',
        'shop',
        '--json',
        '--to',
        `postgres:///shop_verified?host=${encodeURIComponent(cluster.host)}&port=${cluster.port}&user=${cluster.user}`,
      ],
      {
        env: repo.env,
      },
    );
    expectExit(restored, 0);
    const { verification } = JSON.parse(restored.stdout.toString()) as {
      verification: { tables: number; rows: number; mismatched: unknown[] };
    };
    const tablesWithRows = Object.values(await tableContents(cluster, 'shop')).filter(
      (rows) => rows !== '',
    ).length;
    expect(verification.tables).toBeGreaterThanOrEqual(tablesWithRows);
    expect(verification.rows).toBeGreaterThan(1000);
    expect(verification.mismatched).toEqual([]);
  });

  it('restores with --jobs, several pg_restores each fed only its tables, to the same database', async () => {
    const restored = await runCli(
      [
        'restore',
        'latest',
        '--name',
        'shop',
        '--jobs',
        '3',
        '--json',
        '--to',
        `postgres:///shop_parallel?host=${encodeURIComponent(cluster.host)}&port=${cluster.port}&user=${cluster.user}`,
      ],
      { env: repo.env },
    );
    expectExit(restored, 0);
    const { verification, steps } = JSON.parse(restored.stdout.toString()) as {
      verification: { tables: number; mismatched: unknown[]; catalogDifferences: unknown[] };
      steps: string[];
    };
    expect(steps.join('\n')).toMatch(/3 at a time/);
    expect(verification.mismatched).toEqual([]);
    expect(verification.catalogDifferences).toEqual([]);
    expect(await tableContents(cluster, 'shop_parallel')).toEqual(await tableContents(cluster, 'shop'));
    expect(await schema(cluster, 'shop_parallel')).toBe(await schema(cluster, 'shop'));
  });

  it('refuses to record a dump that ends early even though pg_dump exited 0', async () => {
    // A stand-in pg_dump: the real one, its output cut short, and a successful exit.
    const bin = path.join(repo.dir, 'truncating-bin');
    await mkdir(bin, { recursive: true });
    await writeFile(
      path.join(bin, 'pg_dump'),
      `#!/bin/sh
[ "$1" = --version ] && exec ${path.join(cluster.binDir, 'pg_dump')} --version
${path.join(cluster.binDir, 'pg_dump')} "$@" | head -c 200000
exit 0
`,
    );
    await chmod(path.join(bin, 'pg_dump'), 0o755);
    await writeFile(
      path.join(bin, 'psql'),
      `#!/bin/sh
exec ${path.join(cluster.binDir, 'psql')} "$@"
`,
    );
    await chmod(path.join(bin, 'psql'), 0o755);
    const before = await snapshotNames(repo);
    const truncated = await runCli(['backup', 'postgres', '--pg-bin', bin], {
      env: { ...repo.env, ...cluster.env(), PGDATABASE: 'shop' },
    });
    expectExit(truncated, 4);
    expect(truncated.stderr).toMatch(/pg_dump archive: .*(ends|truncated)/i);
    expect(await snapshotNames(repo)).toEqual(before);
  });

  it('takes the connection from the DB_* variables the replaced scripts used', async () => {
    const env = {
      ...repo.env,
      DB_HOST: cluster.host,
      DB_PORT: String(cluster.port),
      DB_USER: cluster.user,
      DB_NAME: 'shop',
    };
    expectExit(await runCli(['backup', 'postgres', '--table', 'shop.products'], { env }), 0);
    const dumped = await runCli(['dump', 'latest'], { env: repo.env });
    // A dump of one table holds no schema: make it first.
    await cluster.createDatabase('products_only');
    await cluster.psql('create schema shop', 'products_only');
    await restoreInto(cluster, dumped.stdout, 'products_only', { exists: true });
    expect(Object.keys(await tableContents(cluster, 'products_only'))).toEqual(['shop.products']);
  });

  it('passes the password of a password file to the tools through their environment, never their arguments', async () => {
    // Stand-ins that record their arguments, then run the real programs.
    const bin = path.join(repo.dir, 'recording-bin');
    const log = path.join(repo.dir, 'argv.log');
    await mkdir(bin, { recursive: true });
    for (const program of ['pg_dump', 'psql']) {
      const script = path.join(bin, program);
      await writeFile(
        script,
        `#!/bin/sh\necho "${program} $*" >> ${log}\nexec ${path.join(cluster.binDir, program)} "$@"\n`,
      );
      await chmod(script, 0o755);
    }
    const passwordFile = path.join(repo.dir, 'db-password');
    await writeFile(passwordFile, `${cluster.password}\n`, { mode: 0o600 });
    expectExit(
      await runCli(
        ['backup', 'postgres', cluster.url('shop', { tcp: true }), '--pg-bin', bin, '--schema-only'],
        { env: { ...repo.env, STRONGBOX_DB_PASSWORD_FILE: passwordFile } },
      ),
      0,
    );
    const argv = await readFile(log, 'utf8');
    expect(argv).toMatch(/pg_dump --format=custom/);
    expect(argv).not.toContain(cluster.password);
  });

  it('exits 4 with the reason and no snapshot on a wrong password', async () => {
    const before = await snapshotNames(repo);
    const passwordFile = path.join(repo.dir, 'wrong-db-password');
    await writeFile(passwordFile, 'wrong-password\n', { mode: 0o600 });
    const failed = await runCli(
      ['backup', 'postgres', cluster.url('shop', { tcp: true }), '--db-password-file', passwordFile],
      { env: repo.env },
    );
    expectExit(failed, 4);
    expect(failed.stderr).toMatch(/password authentication failed/);
    expect(failed.stderr).not.toContain('wrong-password');
    expect(await snapshotNames(repo)).toEqual(before);
  });

  it('stops a dump it began early when the backup cannot start', async () => {
    const before = await snapshotNames(repo);
    const repository = await openRepository({ repo: repo.repo, passphrase: 'correct horse battery staple' });
    // Another operation holds the repository: the backup fails to lock it, after pg_dump began.
    const held = await repository.lock(true, 'check');
    const dumps = async () =>
      Number(
        (
          await cluster.psql(`select count(*) from pg_stat_activity where application_name = 'pg_dump'`)
        ).trim(),
      );
    try {
      const source = await postgresSource({ url: cluster.url('shop'), startNow: true });
      // The dump is larger than the pipes' buffers: pg_dump waits for a reader, connected.
      await until(async () => (await dumps()) === 1);
      await expect(backup(repository, source)).rejects.toThrow(/locked/);
      await until(async () => (await dumps()) === 0);
    } finally {
      await held.release();
      await repository.close();
    }
    expect(await snapshotNames(repo)).toEqual(before);
  });

  it('exits 2 when pg_dump is missing or older than the server', async () => {
    const empty = path.join(repo.dir, 'empty-bin');
    await mkdir(empty, { recursive: true });
    const missing = await runCli(['backup', 'postgres', '--pg-bin', empty], {
      env: { ...repo.env, ...cluster.env(), PGDATABASE: 'shop' },
    });
    expectExit(missing, 2);
    expect(missing.stderr).toMatch(/pg_dump was not found/);

    // No PostgreSQL 9.6 client is installed here: a stand-in pg_dump reports that version.
    const old = path.join(repo.dir, 'old-bin');
    await mkdir(old, { recursive: true });
    await writeFile(path.join(old, 'pg_dump'), '#!/bin/sh\necho "pg_dump (PostgreSQL) 9.6.24"\n');
    await chmod(path.join(old, 'pg_dump'), 0o755);
    await writeFile(path.join(old, 'psql'), `#!/bin/sh\nexec ${path.join(cluster.binDir, 'psql')} "$@"\n`);
    await chmod(path.join(old, 'psql'), 0o755);
    const tooOld = await runCli(['backup', 'postgres', '--pg-bin', old], {
      env: { ...repo.env, ...cluster.env(), PGDATABASE: 'shop' },
    });
    expectExit(tooOld, 2);
    expect(tooOld.stderr).toMatch(/pg_dump 15 or later is needed .*newest found is 9/);
  });

  describe('interrupted dumps', () => {
    beforeAll(async () => {
      // Big enough that pg_dump runs for a few seconds.
      await cluster.createDatabase('big');
      await cluster.psql(
        `create table filler as select g, repeat(md5(g::text), 40) as payload from generate_series(1, 400000) g`,
        'big',
      );
    });

    async function backupWhile(interrupt: (pid: number) => Promise<void>): Promise<RunResult> {
      // A stand-in pg_dump that records its pid, so the test can find the real one it becomes.
      const bin = path.join(repo.dir, `pid-bin-${Math.random().toString(36).slice(2)}`);
      const pidFile = path.join(bin, 'pid');
      await mkdir(bin, { recursive: true });
      await writeFile(
        path.join(bin, 'pg_dump'),
        `#!/bin/sh\n[ "$1" = --version ] || echo $$ > ${pidFile}\nexec ${path.join(cluster.binDir, 'pg_dump')} "$@"\n`,
      );
      await chmod(path.join(bin, 'pg_dump'), 0o755);
      await writeFile(path.join(bin, 'psql'), `#!/bin/sh\nexec ${path.join(cluster.binDir, 'psql')} "$@"\n`);
      await chmod(path.join(bin, 'psql'), 0o755);
      const child = spawn(process.execPath, [CLI, 'backup', 'postgres', '--pg-bin', bin], {
        env: { ...cleanEnv(), ...repo.env, ...cluster.env(), PGDATABASE: 'big' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
      const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
      let pid: number | undefined;
      for (let tries = 0; tries < 200 && pid === undefined; tries++) {
        pid = Number(await readFile(pidFile, 'utf8').catch(() => '')) || undefined;
        if (pid === undefined) await sleep(25);
      }
      expect(pid).toBeDefined();
      await sleep(150);
      await interrupt(pid!);
      return { code: await closed, signal: null, stdout: Buffer.alloc(0), stderr };
    }

    it('exits 4 and writes no snapshot when pg_dump is killed', async () => {
      const before = await snapshotNames(repo);
      const result = await backupWhile(async (pid) => void process.kill(pid, 'SIGKILL'));
      expectExit(result, 4);
      expect(result.stderr).toMatch(/pg_dump of .* was killed by SIGKILL; no snapshot was written/);
      expect(await snapshotNames(repo)).toEqual(before);
    });

    it('exits 4 and writes no snapshot when its server backend is terminated', async () => {
      const before = await snapshotNames(repo);
      const result = await backupWhile(async () => {
        await cluster.psql(
          `select pg_terminate_backend(pid) from pg_stat_activity where datname = 'big' and application_name = 'pg_dump'`,
        );
      });
      expectExit(result, 4);
      expect(result.stderr).toMatch(/pg_dump of .* failed/);
      expect(await snapshotNames(repo)).toEqual(before);
      expectExit(await runCli(['check', '--read-data'], { env: repo.env }), 0);
    });
  });
});
