import { execFile } from 'node:child_process';
import { chmod, mkdtemp, open, readdir, readlink, rm, symlink, unlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRepository } from '../src/index.ts';
import { restoreFiles } from '../src/ops/restore-files.ts';
import { parsePhysicalSource } from '../src/postgres/record-schema.ts';
import type { Repository } from '../src/repository/repository.ts';
import type { TreeNode } from '../src/repository/tree.ts';
import { expectExit, runCli, startCli, tempRepo, type TempRepo } from './helpers/cli.ts';
import { startCluster, startClusterOn, type TestCluster } from './helpers/postgres.ts';
import { waitUntil } from './helpers/prune-repo.ts';

const run = promisify(execFile);
const asRoot = process.getuid?.() === 0;
const DAY = path.resolve(import.meta.dirname, '../../shared/bench/day.sql');

/** Every database's pg_dump, which two clusters holding the same data give alike. */
async function dumps(cluster: TestCluster): Promise<Record<string, string>> {
  const databases = (await cluster.psql('select datname from pg_database where datallowconn order by 1'))
    .trim()
    .split('\n');
  const dumped: Record<string, string> = {};
  for (const database of databases) {
    // An unlogged table restores empty, as the server leaves one after a crash.
    const args = ['--no-tablespaces', '--no-unlogged-table-data', database];
    const { stdout } = await run(path.join(cluster.binDir, 'pg_dump'), args, {
      env: { PATH: process.env.PATH, ...cluster.env() },
      maxBuffer: 1 << 30,
    });
    // \restrict lines carry a random key in every dump (PostgreSQL 15.14 and later).
    dumped[database] = stdout.replace(/^(-- Dumped (from|by)|\\(un)?restrict) .*$/gm, '');
  }
  return dumped;
}

async function snapshots(
  repo: TempRepo,
): Promise<{ id: string; kind: string; name: string; stored: number }[]> {
  const listed = await runCli(['snapshots', '--json'], { env: repo.env });
  expectExit(listed, 0);
  return JSON.parse(listed.stdout.toString()) as { id: string; kind: string; name: string; stored: number }[];
}

async function openRepo(repo: TempRepo): Promise<Repository> {
  return openRepository({ repo: repo.repo, passphrase: 'correct horse battery staple' });
}

async function listing(repository: Repository, tree: string): Promise<Map<string, TreeNode>> {
  return new Map((await repository.readTree(tree)).nodes.map((node) => [node.name, node]));
}

/** A directory the postgres OS user may use (tests run as root; the server does not). */
async function serverDirectory(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  await chmod(dir, 0o755);
  if (asRoot) await run('chown', ['postgres:postgres', dir]);
  return dir;
}

function backupArgs(cluster: TestCluster, ...flags: string[]): string[] {
  return ['backup', 'postgres', '--physical', '--json', ...flags];
}

describe('backup postgres --physical', () => {
  let cluster: TestCluster;
  let repo: TempRepo;
  let tablespaceDir: string;

  beforeAll(async () => {
    cluster = await startCluster();
    tablespaceDir = await serverDirectory('strongbox-tablespace-');
    await cluster.loadDataset('shop', 0.02);
    await cluster.psql(`create tablespace extra location '${tablespaceDir}'`);
    await cluster.createDatabase('spaced');
    await cluster.psql(
      `create table far (id int primary key, note text) tablespace extra;
       insert into far select g, md5(g::text) from generate_series(1, 20000) g;
       create index far_note on far (note) tablespace extra;
       create unlogged table scratch as select g as id from generate_series(1, 5000) g`,
      'spaced',
    );
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
  });
  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
    if (tablespaceDir) await rm(tablespaceDir, { recursive: true, force: true });
  });

  it('refuses a cluster that does not archive its WAL, unless the WAL is included', async () => {
    const refused = await runCli(backupArgs(cluster), { env: { ...repo.env, ...cluster.env() } });
    expectExit(refused, 3);
    expect(refused.stderr.toString()).toMatch(/does not archive its WAL/);
    expect(refused.stderr.toString()).toContain('or pass --include-wal');
    expect(await snapshots(repo)).toEqual([]);
  });

  it('reads through pg_basebackup for a role that may not read the files, and refuses --method files for it (exit 3)', async () => {
    await cluster.psql('create role plain login replication');
    const env = { ...repo.env, ...cluster.env(), PGUSER: 'plain' };
    const refused = await runCli(backupArgs(cluster, '--include-wal', '--method', 'files'), { env });
    expectExit(refused, 3);
    expect(refused.stderr.toString()).toMatch(/may not run pg_backup_start/);
    expect(refused.stderr.toString()).toContain('--method pg_basebackup');

    const before = new Set((await snapshots(repo)).map((snapshot) => snapshot.id));
    expectExit(await runCli(backupArgs(cluster, '--include-wal'), { env }), 0);
    const [snapshot] = (await snapshots(repo)).filter((listed) => !before.has(listed.id));
    const repository = await openRepo(repo);
    try {
      const { body } = await repository.loadSnapshot(snapshot!.id);
      expect(parsePhysicalSource(body.source, snapshot!.id).method).toBe('pg_basebackup');
    } finally {
      await repository.close();
    }
  });

  it.each(['files', 'pg_basebackup'] as const)(
    'backs the cluster up, tablespace and all, read with %s, and the restored files start as the same cluster',
    async (method) => {
      const before = new Set((await snapshots(repo)).map((snapshot) => snapshot.id));
      const backedUp = await runCli(backupArgs(cluster, '--include-wal', '--method', method), {
        env: { ...repo.env, ...cluster.env() },
      });
      expectExit(backedUp, 0);
      const [snapshot] = (await snapshots(repo)).filter((listed) => !before.has(listed.id));
      expect(snapshot!.kind).toBe('postgres-physical');
      expect(snapshot!.name).toBe(`postgres@${cluster.host}:${cluster.port}`);

      const repository = await openRepo(repo);
      let restoreDir: string | undefined;
      let restored: TestCluster | undefined;
      try {
        const { body } = await repository.loadSnapshot(snapshot!.id);
        await repository.loadIndex();
        const details = parsePhysicalSource(body.source, snapshot!.id);
        const oid = (await cluster.psql(`select oid from pg_tablespace where spcname = 'extra'`)).trim();
        expect(details).toMatchObject({
          serverVersion: Number((await cluster.psql('show server_version_num')).trim()),
          systemIdentifier: (await cluster.psql('select system_identifier from pg_control_system()')).trim(),
          walIncluded: true,
          method,
          pgBasebackupMajor: method === 'files' ? 0 : 15,
          dataChecksums: false,
          walSegmentSize: 16 * 1024 * 1024,
          timeline: 1,
          tablespaces: { [oid]: { name: 'extra', location: tablespaceDir } },
        });
        expect(details.backupLabel).toMatch(/^START WAL LOCATION: /);
        expect(details.startLsn).toMatch(/^[0-9A-F]+\/[0-9A-F]+$/);

        const root = await listing(repository, body.tree);
        // pg_basebackup's manifest, as it sent it; strongbox's own tree is the manifest of files it read.
        expect([...root.keys()].sort()).toEqual(
          method === 'files' ? ['data', 'tablespaces'] : ['backup_manifest', 'data', 'tablespaces'],
        );
        const data = await listing(repository, root.get('data')!.subtree!);
        for (const name of ['base', 'global', 'PG_VERSION', 'backup_label', 'pg_wal', 'pg_tblspc'])
          expect(data.has(name), name).toBe(true);
        expect(data.has('tablespace_map')).toBe(false);
        const links = await listing(repository, data.get('pg_tblspc')!.subtree!);
        expect(links.get(oid)).toMatchObject({ type: 'symlink', linkTarget: tablespaceDir });

        // The files as they were, the tablespace under a directory of its own, its link re-pointed.
        restoreDir = await serverDirectory('strongbox-physical-restore-');
        await restoreFiles(repository, body.tree, restoreDir, { overwrite: true });
        const dataDir = path.join(restoreDir, 'data');
        const link = path.join(dataDir, 'pg_tblspc', oid);
        expect(await readlink(link)).toBe(tablespaceDir);
        await unlink(link);
        await symlink(path.join(restoreDir, 'tablespaces', oid), link);
        await chmod(dataDir, 0o700);
        expect((await readdir(path.join(restoreDir, 'tablespaces', oid)))[0]).toMatch(/^PG_15_/);
        restored = await startClusterOn(restoreDir, dataDir);
        expect(await dumps(restored)).toEqual(await dumps(cluster));
        expect((await restored.psql('select count(*) from far', 'spaced')).trim()).toBe('20000');
        // An unlogged table comes back as its init fork says: empty.
        const scratch = (await cluster.psql(`select pg_relation_filepath('scratch')`, 'spaced')).trim();
        const databaseFiles = await listing(
          repository,
          (await listing(repository, data.get('base')!.subtree!)).get(scratch.split('/')[1]!)!.subtree!,
        );
        expect(databaseFiles.has(`${path.basename(scratch)}_init`)).toBe(true);
        expect(databaseFiles.has(path.basename(scratch))).toBe(false);
        expect((await restored.psql('select count(*) from scratch', 'spaced')).trim()).toBe('0');
      } finally {
        await restored?.stop();
        if (!restored && restoreDir) await rm(restoreDir, { recursive: true, force: true });
        await repository.close();
      }
    },
  );
});

describe('backup postgres --physical of a cluster with data checksums', () => {
  it('fails loudly on a page whose checksum does not match, and writes no snapshot', async () => {
    const cluster = await startCluster({ dataChecksums: true });
    const repo = await tempRepo();
    try {
      expectExit(await runCli(['init'], { env: repo.env }), 0);
      await cluster.psql(
        `create table victim (id int, note text); insert into victim select g, 'row ' || g from generate_series(1, 1000) g; checkpoint`,
      );
      const file = path.join(
        cluster.dataDir,
        (await cluster.psql(`select pg_relation_filepath('victim')`)).trim(),
      );
      // One byte of the first page's tuple data, past its header: only the checksum notices.
      const flipByte = async () => {
        const handle = await open(file, 'r+');
        try {
          const byte = Buffer.alloc(1);
          await handle.read(byte, 0, 1, 8000);
          byte[0] = byte[0]! ^ 0xff;
          await handle.write(byte, 0, 1, 8000);
        } finally {
          await handle.close();
        }
      };
      await cluster.restart(flipByte);
      // strongbox checks the pages it reads itself; through pg_basebackup the server does.
      for (const method of ['files', 'pg_basebackup']) {
        const failed = await runCli(backupArgs(cluster, '--include-wal', '--method', method), {
          env: { ...repo.env, ...cluster.env() },
        });
        expectExit(failed, 4);
        expect(failed.stderr.toString()).toMatch(/checksums do not match/);
        if (method === 'files') expect(failed.stderr.toString()).toContain(`${file}, block 0`);
      }
      expect(await snapshots(repo)).toEqual([]);
      // The server's own backup ended with the session: another can start, and with the page
      // mended every page of the cluster checks out.
      await cluster.restart(flipByte);
      expectExit(
        await runCli(backupArgs(cluster, '--include-wal', '--method', 'files'), {
          env: { ...repo.env, ...cluster.env() },
        }),
        0,
      );
    } finally {
      await cluster.stop();
      await repo.cleanup();
    }
  });
});

describe('backup postgres --physical, a day later', () => {
  let cluster: TestCluster;
  let repo: TempRepo;

  beforeAll(async () => {
    cluster = await startCluster({ settings: { archive_mode: 'on', archive_command: `'/bin/true'` } });
    await cluster.loadDataset('shop', Number(process.env.STRONGBOX_PHYSICAL_SCALE ?? 1));
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
  });
  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
  });

  it('stores a small fraction of the first backup after a day of writes', async () => {
    const env = { ...repo.env, ...cluster.env() };
    const first = await runCli(backupArgs(cluster), { env });
    expectExit(first, 0);
    const { stored: firstStored } = JSON.parse(first.stdout.toString()) as { stored: number };
    await run(path.join(cluster.binDir, 'psql'), ['-X', '-q', '-v', 'scale=1', '-d', 'shop', '-f', DAY], {
      env: { PATH: process.env.PATH, ...cluster.env() },
    });
    const second = await runCli(backupArgs(cluster), { env });
    expectExit(second, 0);
    const { stored: secondStored } = JSON.parse(second.stdout.toString()) as { stored: number };
    const fraction = secondStored / firstStored;
    console.log(
      `physical backup after day.sql: first stored ${firstStored} bytes, second ${secondStored} (${(100 * fraction).toFixed(2)} %)`,
    );
    expect(fraction).toBeLessThan(0.1);
  });
});

describe('backup postgres --physical, reading the files, killed', () => {
  it('while it waits for its WAL to be archived writes no snapshot, and the next backup succeeds', async () => {
    // archive_command fails: pg_backup_stop waits for the backup's last segment to be archived.
    const cluster = await startCluster({ settings: { archive_mode: 'on', archive_command: `'/bin/false'` } });
    const repo = await tempRepo();
    try {
      expectExit(await runCli(['init'], { env: repo.env }), 0);
      await cluster.psql(`create table kept as select g as id from generate_series(1, 10000) g`);
      const env = { ...repo.env, ...cluster.env() };
      const child = startCli(backupArgs(cluster, '--method', 'files'), { env });
      const exited = new Promise<NodeJS.Signals | null>((resolve) =>
        child.once('exit', (_code, signal) => resolve(signal)),
      );
      // Every file read and stored: the state between the last write and the snapshot.
      await waitUntil(
        'the backup waits in pg_backup_stop',
        async () =>
          (
            await cluster.psql(
              `select count(*) from pg_stat_activity where state = 'active' and query like '%pg_backup_stop(true)%' and pid <> pg_backend_pid()`,
            )
          ).trim() === '1',
      );
      process.kill(-child.pid!, 'SIGKILL');
      expect(await exited).toBe('SIGKILL');
      expect(await snapshots(repo)).toEqual([]);
      expectExit(await runCli(['check', '--read-data'], { env: repo.env }), 0);

      await cluster.psql(`alter system set archive_command = '/bin/true'; select pg_reload_conf()`);
      expectExit(await runCli(backupArgs(cluster, '--method', 'files'), { env }), 0);
      expect(await snapshots(repo)).toHaveLength(1);
    } finally {
      await cluster.stop();
      await repo.cleanup();
    }
  });
});
