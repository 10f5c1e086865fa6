import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, cleanEnv, runCli, tempRepo, type RunResult, type TempRepo } from './helpers/cli.ts';
import { startCluster, type TestCluster, socketUrl } from './helpers/postgres.ts';

function expectExit(result: RunResult, code: number): void {
  expect({ code: result.code, stderr: result.stderr }).toMatchObject({ code });
}

/** Snapshot ids in a repository holding backups of two databases and of files. */
describe('snapshots named by id', () => {
  let cluster: TestCluster;
  let repo: TempRepo;
  let app: string;
  let files: string;
  const to = (database: string) => socketUrl(cluster, database);
  const backup = async (args: string[], env: Record<string, string> = {}) => {
    const result = await runCli([...args, '--json'], { env: { ...repo.env, ...env } });
    expectExit(result, 0);
    return (JSON.parse(result.stdout.toString()) as { snapshot: string }).snapshot;
  };

  beforeAll(async () => {
    cluster = await startCluster();
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
    for (const database of ['app', 'shop']) {
      await cluster.createDatabase(database);
      await cluster.psql(
        `create table items (id int primary key, name text);
         insert into items select g, repeat('x', 200) || g from generate_series(1, 20000) g`,
        database,
      );
    }
    app = await backup(['backup', 'postgres', to('app')]);
    await backup(['backup', 'postgres', to('shop')]);
    const dir = path.join(repo.dir, 'etc');
    await fs.mkdir(dir);
    await fs.writeFile(path.join(dir, 'app.conf'), 'port = 80\n');
    files = await backup(['backup', 'files', dir]);
  });
  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
  });

  it('restores and verifies the database an id names, whatever other databases are backed up', async () => {
    const restored = await runCli(['restore', app.slice(0, 8), '--to', to('app_copy')], { env: repo.env });
    expectExit(restored, 0);
    expect(restored.stderr).toContain(`restored snapshot ${app.slice(0, 8)} into`);
    expect(await cluster.psql('select count(*) from items', 'app_copy')).toBe('20000\n');
    expectExit(await runCli(['verify', app, '--to', to('app_copy')], { env: repo.env }), 0);
    // Without an id, the choice among databases is still asked for.
    const latest = await runCli(['restore', 'latest', '--to', to('other')], { env: repo.env });
    expectExit(latest, 3);
    expect(latest.stderr).toContain(
      'snapshots of several databases match (app, shop)\n  Choose one with --name DATABASE.\n',
    );
  });

  it('says what a files snapshot is, and which command restores it', async () => {
    const id = files.slice(0, 8);
    const restored = await runCli(['restore', id, '--to', to('from_files')], { env: repo.env });
    expectExit(restored, 3);
    expect(restored.stderr).toBe(
      `strongbox: snapshot ${id} is a files snapshot (${path.join(repo.dir, 'etc')}), not a postgres one\n` +
        `  Restore it with: strongbox restore files ${id} --target DIR.\n`,
    );
    const dumped = await runCli(['dump', id], { env: repo.env });
    expectExit(dumped, 3);
    expect(dumped.stderr).toContain(`Restore it with: strongbox restore files ${id} --target DIR.`);
  });

  it('says what a postgres snapshot is when `restore files` is given one', async () => {
    const id = app.slice(0, 8);
    const target = path.join(repo.dir, 'restored');
    const restored = await runCli(['restore', 'files', id, '--target', target], { env: repo.env });
    expectExit(restored, 3);
    expect(restored.stderr).toBe(
      `strongbox: snapshot ${id} is a postgres snapshot (app), not a files one\n` +
        `  Restore it with: strongbox restore ${id} --to postgres://…/DATABASE (or write its archive: strongbox dump ${id} > FILE).\n`,
    );
    await expect(fs.readdir(target)).rejects.toThrow();
  });

  it('shows byte progress on a terminal while restoring a database', async () => {
    // script(1) runs the command on a pseudo-terminal and copies what it prints.
    const command = [process.execPath, CLI, 'restore', app, '--to', to('app_tty')]
      .map((arg) => `'${arg.replaceAll("'", "'\\''")}'`)
      .join(' ');
    const { stdout } = await promisify(execFile)('script', ['-qefc', command, '/dev/null'], {
      env: { ...cleanEnv(), ...repo.env },
    });
    // Redrawn in place: a carriage return and an erase-line sequence before each status.
    expect(stdout).toContain('\r\u001b[Krestore: ');
    expect(stdout).toMatch(/restore: [\d.]+ [KM]?i?B of [\d.]+ MiB restored/);
    expect(stdout).toContain(`restored snapshot ${app.slice(0, 8)} into`);
  });
});
