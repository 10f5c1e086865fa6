import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, cleanEnv, runCli, tempRepo, type TempRepo } from './helpers/cli.ts';

describe('progress off a terminal', () => {
  let repo: TempRepo;

  beforeAll(async () => {
    repo = await tempRepo();
    expect((await runCli(['init'], { env: repo.env })).code).toBe(0);
  });
  afterAll(() => repo.cleanup());

  it('repeats the latest status every interval while the source is quiet, so a log shows the run alive', async () => {
    const child = spawn(process.execPath, [CLI, 'backup', 'stdin', '--name', 'slow.bin'], {
      env: { ...cleanEnv(), ...repo.env, STRONGBOX_PROGRESS_INTERVAL: '0.05' },
      stdio: ['pipe', 'ignore', 'pipe'],
    });
    let stderr = '';
    const lines = () => stderr.split('\n').filter((line) => line.startsWith('backup: '));
    const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
    // Some data, and then a source that says nothing until the test has seen the repeated lines.
    child.stdin.write(Buffer.alloc(50_000, 1));
    const repeated = await new Promise<string>((resolve) =>
      child.stderr.on('data', (data: Buffer) => {
        stderr += data.toString();
        const shown = lines();
        if (shown.length >= 3 && shown.at(-1) === shown.at(-2)) resolve(shown.at(-1)!);
      }),
    );
    expect(repeated).toMatch(/^backup: 48.8 KiB read, [\d.]+ [KM]?i?B new$/);
    child.stdin.end();
    expect(await exited).toBe(0);
    expect(stderr).toMatch(/snapshot \w{8} saved/);
    // The phase ended: no status line after the summary.
    expect(stderr.slice(stderr.indexOf('snapshot '))).not.toContain('backup: ');
  });
});

describe('help', () => {
  it('advertises only what exists', async () => {
    const help = await runCli(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout.toString()).toContain('Backups of PostgreSQL and files');
    expect(help.stdout.toString()).not.toMatch(/redis/i);
  });
});
