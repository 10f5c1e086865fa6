import { spawn } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, cleanEnv, runCli, tempRepo, type RunResult, type TempRepo } from './helpers/cli.ts';
import { startCluster, type TestCluster } from './helpers/postgres.ts';
import {
  READ_ONLY_ACCESS_KEY,
  S3RVER_ACCESS_KEY,
  startS3Server,
  type S3Server,
} from './helpers/s3-server.ts';

function expectExit(result: RunResult, code: number): void {
  expect({ code: result.code, stderr: result.stderr }).toMatchObject({ code });
}

const LOCK_REFUSED =
  /^warning: cannot write locks\/\w+ in .*: (EACCES|EROFS|AccessDenied \(HTTP 403\)); reading without a lock \(as --no-lock does\)$/m;

/**
 * Disaster recovery from a repository this process may read but not write: files only nobody
 * can read and not write, opened as the user nobody; and an S3 key that may only read.
 */
describe.runIf(process.getuid?.() === 0)('a repository that cannot be written', () => {
  let repo: TempRepo;
  let cluster: TestCluster;
  let files: string;
  let database: string;
  const sourceDir = () => path.join(repo.dir, 'etc');

  /** Runs the binary as the user nobody, who may read the repository and not write it. */
  function asNobody(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
    return runCli(args, { env: { ...repo.env, ...env }, cwd: repo.dir, user: 'nobody' });
  }

  beforeAll(async () => {
    cluster = await startCluster();
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
    await fs.mkdir(sourceDir());
    await fs.writeFile(path.join(sourceDir(), 'app.conf'), 'port = 80\n');
    const backedUp = await runCli(['backup', 'files', sourceDir(), '--json'], { env: repo.env });
    files = (JSON.parse(backedUp.stdout.toString()) as { snapshot: string }).snapshot;
    await cluster.createDatabase('app');
    await cluster.psql(
      'create table items (id int primary key); insert into items select generate_series(1, 500)',
      'app',
    );
    const dumped = await runCli(['backup', 'postgres', cluster.url('app', { tcp: true }), '--json'], {
      env: { ...repo.env, PGPASSWORD: cluster.password },
    });
    expectExit(dumped, 0);
    database = (JSON.parse(dumped.stdout.toString()) as { snapshot: string }).snapshot;
    // Readable by everyone, writable by root alone; the temp directory is root's (0700) otherwise.
    await fs.chmod(repo.dir, 0o755);
    await fs.chmod(repo.passwordFile, 0o644);
    await runChmod(repo.repo);
    await fs.mkdir(path.join(repo.dir, 'target'));
    await fs.chown(path.join(repo.dir, 'target'), 65534, 65534);
  });
  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
  });

  it('restores files, checks and cats, each saying once that it reads without a lock', async () => {
    const restored = await asNobody(['restore', 'files', files, '--target', path.join(repo.dir, 'target')]);
    expectExit(restored, 0);
    expect(restored.stderr.match(new RegExp(LOCK_REFUSED, 'gm'))).toHaveLength(1);
    expect(await fs.readFile(path.join(repo.dir, 'target', sourceDir(), 'app.conf'), 'utf8')).toBe(
      'port = 80\n',
    );
    const checked = await asNobody(['check', '--read-data']);
    expectExit(checked, 0);
    expect(checked.stderr).toMatch(LOCK_REFUSED);
    const cat = await asNobody(['cat', files, path.join(sourceDir(), 'app.conf')]);
    expectExit(cat, 0);
    expect(cat.stdout.toString()).toBe('port = 80\n');
    const dump = await asNobody(['dump', database]);
    expectExit(dump, 0);
    expect(dump.stdout.subarray(0, 5).toString()).toBe('PGDMP');
    expect(await fs.readdir(path.join(repo.repo, 'locks')).catch(() => [])).toEqual([]);
  });

  it('restores and verifies a database', async () => {
    const env = { PGPASSWORD: cluster.password };
    const restored = await asNobody(
      ['restore', database, '--to', cluster.url('app_copy', { tcp: true })],
      env,
    );
    expectExit(restored, 0);
    expect(restored.stderr).toMatch(LOCK_REFUSED);
    expect(await cluster.psql('select count(*) from items', 'app_copy')).toBe('500\n');
    const verified = await asNobody(
      ['verify', database, '--to', cluster.url('app_copy', { tcp: true })],
      env,
    );
    expectExit(verified, 0);
    expect(verified.stderr).toMatch(LOCK_REFUSED);
  });

  it('restores files and checks from a read-only mount (EROFS), as root', async () => {
    const mount = path.join(repo.dir, 'mounted');
    const target = path.join(repo.dir, 'target-erofs');
    await fs.mkdir(mount);
    // A private mount namespace: the read-only bind mount is seen by this command alone.
    const script = [
      'mount --bind "$REPO" "$MOUNT"',
      'mount -o remount,bind,ro "$MOUNT"',
      '"$NODE" "$CLI" restore files "$SNAPSHOT" --target "$TARGET" && "$NODE" "$CLI" check',
    ].join(' && ');
    const result = await new Promise<RunResult>((resolve, reject) => {
      const child = spawn('unshare', ['-m', 'sh', '-c', script], {
        env: {
          ...cleanEnv(),
          ...repo.env,
          STRONGBOX_REPO: mount,
          REPO: repo.repo,
          MOUNT: mount,
          NODE: process.execPath,
          CLI,
          SNAPSHOT: files,
          TARGET: target,
        },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
      child.on('error', reject);
      child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.alloc(0), stderr }));
    });
    expectExit(result, 0);
    expect(result.stderr.match(/: EROFS; reading without a lock/g)).toHaveLength(2);
    expect(await fs.readFile(path.join(target, sourceDir(), 'app.conf'), 'utf8')).toBe('port = 80\n');
  });

  it('takes no lock and says nothing of it with --no-lock', async () => {
    const checked = await asNobody(['--no-lock', 'check']);
    expectExit(checked, 0);
    expect(checked.stderr).not.toContain('warning');
  });

  it('still fails a backup, which must write (exit 6)', async () => {
    const backup = await asNobody(['backup', 'files', sourceDir()]);
    expectExit(backup, 6);
    expect(backup.stderr).toContain('EACCES');
  });
});

describe('an S3 repository opened with a key that may only read', () => {
  let server: S3Server;
  let repo: TempRepo;
  let snapshot: string;
  let location: string;

  beforeAll(async () => {
    server = await startS3Server();
    repo = await tempRepo();
    location = `s3://${server.bucket}/ro?endpoint=${encodeURIComponent(server.endpoint)}&path-style=true`;
    const env = {
      ...repo.env,
      STRONGBOX_REPO: location,
      S3_ACCESS_KEY: S3RVER_ACCESS_KEY,
      S3_SECRET_KEY: 'x',
    };
    expectExit(await runCli(['init'], { env }), 0);
    const saved = await runCli(['backup', 'stdin', '--name', 'data.bin', '--json'], {
      env,
      input: 'some data',
    });
    expectExit(saved, 0);
    snapshot = (JSON.parse(saved.stdout.toString()) as { snapshot: string }).snapshot;
  });
  afterAll(async () => {
    await server?.close();
    await repo?.cleanup();
  });

  it('restores files and checks, saying it reads without a lock', async () => {
    const env = {
      ...repo.env,
      STRONGBOX_REPO: location,
      S3_ACCESS_KEY: READ_ONLY_ACCESS_KEY,
      S3_SECRET_KEY: 'x',
    };
    const target = path.join(repo.dir, 'target');
    const restored = await runCli(['restore', 'files', snapshot, '--target', target], { env });
    expectExit(restored, 0);
    expect(restored.stderr).toMatch(LOCK_REFUSED);
    expect(await fs.readFile(path.join(target, 'data.bin'), 'utf8')).toBe('some data');
    const checked = await runCli(['check', '--read-data'], { env });
    expectExit(checked, 0);
    expect(checked.stderr).toMatch(LOCK_REFUSED);
    const writing = await runCli(['backup', 'stdin', '--name', 'more.bin'], { env, input: 'more' });
    expectExit(writing, 6);
  });
});

/** chmod -R go+rX: directories 0755, files 0644. */
async function runChmod(dir: string): Promise<void> {
  await fs.chmod(dir, 0o755);
  for (const entry of await fs.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) await runChmod(full);
    else await fs.chmod(full, 0o644);
  }
}
