import { spawn } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLI, cleanEnv, runCli, tempRepo, type TempRepo } from './helpers/cli.ts';

/** A producer of random, incompressible data, about 16 MB/s for four seconds. */
const PRODUCER = [
  process.execPath,
  '-e',
  `const c=require('crypto');const t=setInterval(()=>process.stdout.write(c.randomBytes(16384)),1);setTimeout(()=>clearInterval(t),4000)`,
];

async function countFiles(dir: string): Promise<number> {
  try {
    return (await readdir(dir, { recursive: true, withFileTypes: true })).filter((entry) => entry.isFile())
      .length;
  } catch {
    return 0;
  }
}

describe('a backup killed with SIGKILL', () => {
  let repo: TempRepo;
  beforeAll(async () => {
    repo = await tempRepo();
    // Small packs, so that kills land while packs and index files are being written.
    expect((await runCli(['init', '--pack-size', '1'], { env: repo.env })).code).toBe(0);
  });
  afterAll(() => repo.cleanup());

  it('leaves no snapshot and no damage, whenever it dies', async () => {
    const baseline = await runCli(['backup', 'stdin', '--name', 'ok.bin'], {
      env: repo.env,
      input: 'kept\n',
    });
    expect(baseline.code).toBe(0);
    const count = (folder: string) => countFiles(path.join(repo.repo, folder));
    // Each round is killed at a state it waits for, never after a fixed delay.
    const moments: [string, (packs: number, indexes: number) => Promise<boolean>][] = [
      ['its lock is taken', async () => (await count('locks')) > 0],
      ['its first pack is written', async (packs) => (await count('data')) > packs],
      ['three packs are written', async (packs) => (await count('data')) >= packs + 3],
      ['its first index file is written', async (_, indexes) => (await count('index')) > indexes],
      ['ten packs are written', async (packs) => (await count('data')) >= packs + 10],
      ['its second index file is written', async (_, indexes) => (await count('index')) >= indexes + 2],
    ];
    for (const [moment, reached] of moments) {
      const packs = await count('data');
      const indexes = await count('index');
      const child = spawn(
        process.execPath,
        [CLI, 'backup', 'stdin', '--name', 'killed.bin', '--stdin-from-command', '--', ...PRODUCER],
        {
          env: { ...cleanEnv(), ...repo.env },
          stdio: 'ignore',
        },
      );
      const closed = new Promise((resolve) => child.once('close', resolve));
      const deadline = Date.now() + 30_000;
      while (!(await reached(packs, indexes))) {
        if (Date.now() > deadline) throw new Error(`the backup never got to where ${moment}`);
        await sleep(5);
      }
      child.kill('SIGKILL');
      await closed;

      const listed = await runCli(['snapshots', '--json'], { env: repo.env });
      expect(listed.code).toBe(0);
      expect(JSON.parse(listed.stdout.toString()).map((snapshot: { name: string }) => snapshot.name)).toEqual(
        ['ok.bin'],
      );
      const checked = await runCli(['check', '--read-data'], { env: repo.env });
      expect(checked.stderr, `killed when ${moment}`).toMatch(/no errors were found/);
      expect(checked.code).toBe(0);
    }
    // Packs were written by the killed runs: the kills did land mid-backup.
    expect(await countFiles(path.join(repo.repo, 'data'))).toBeGreaterThan(1);
    // The dead processes' locks are stale: the next backup proceeds and the original data is intact.
    const next = await runCli(['backup', 'stdin', '--name', 'after.bin'], {
      env: repo.env,
      input: 'after\n',
    });
    expect(next.code).toBe(0);
    expect((await runCli(['cat', 'latest'], { env: repo.env })).stdout.toString()).toBe('after\n');
    const unlocked = await runCli(['unlock', '--json'], { env: repo.env });
    expect(JSON.parse(unlocked.stdout.toString()).removed).toBeGreaterThan(0);
    expect(await countFiles(path.join(repo.repo, 'locks'))).toBe(0);
  });
});
