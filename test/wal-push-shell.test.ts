import { execFile, spawn } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { waitUntil } from './helpers/prune-repo.ts';

const run = promisify(execFile);
const SCRIPT = path.resolve(import.meta.dirname, '../bin/strongbox-wal-push');
const SEGMENT = '000000010000000000000042';

/**
 * bin/strongbox-wal-push, the archive_command that answers from the WAL daemon's acknowledgement
 * directory: against a directory laid out as the daemon lays it (acknowledgements.ts), with a
 * stand-in for `strongbox` that records being called, so that each test knows whether Node would
 * have started.
 */
describe('strongbox-wal-push', () => {
  let dir: string;
  let marks: string;
  let called: string;
  let env: NodeJS.ProcessEnv;

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'strongbox-wal-push-'));
    marks = path.join(dir, 'marks');
    await run('mkdir', ['-m', '700', marks]);
    called = path.join(dir, 'called');
    const cli = path.join(dir, 'fake-strongbox');
    await writeFile(cli, `#!/bin/sh\necho "$@" > ${called}\nexit 3\n`);
    await chmod(cli, 0o755);
    env = { PATH: process.env.PATH, STRONGBOX_CLI: cli };
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const push = () =>
    run(SCRIPT, [marks, `pg_wal/${SEGMENT}`], { env }).then(
      () => 0,
      (error: { code: number }) => error.code,
    );
  const wasCalled = () =>
    readFile(called, 'utf8').then(
      (text) => text.trim(),
      () => undefined,
    );
  /**
   * The script run while this process stands for a living daemon pushing the file: resolved once
   * it waits in its loop (it has started a `sleep` between two looks), with its exit code to come.
   */
  const waitingPush = async (): Promise<{ exited: Promise<number | null> }> => {
    await writeFile(path.join(marks, 'daemon.pid'), `${process.pid}\n`);
    await writeFile(path.join(marks, `${SEGMENT}.pushing`), '');
    const child = spawn(SCRIPT, [marks, `pg_wal/${SEGMENT}`], { env, stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    await waitUntil('the script waits for the mark', async () => {
      const { stdout } = await run('pgrep', ['-P', String(child.pid), 'sleep']).catch(() => ({ stdout: '' }));
      return stdout.trim() !== '';
    });
    return { exited };
  };

  it('answers from a mark, removing it, without starting strongbox', async () => {
    await writeFile(path.join(marks, SEGMENT), '');
    expect(await push()).toBe(0);
    expect(await wasCalled()).toBeUndefined();
    // The mark is spent: the same file again goes to strongbox.
    expect(await push()).toBe(3);
    expect(await wasCalled()).toBe(`wal push pg_wal/${SEGMENT}`);
  });

  it('waits while the living daemon pushes the file ahead, and answers from its mark', async () => {
    const { exited } = await waitingPush();
    // The daemon's order: the mark, then the running marker removed.
    await writeFile(path.join(marks, SEGMENT), '');
    await rm(path.join(marks, `${SEGMENT}.pushing`));
    expect(await exited).toBe(0);
    expect(await wasCalled()).toBeUndefined();
  });

  it('goes on to strongbox when the push ahead ended without a mark', async () => {
    const { exited } = await waitingPush();
    // The push failed: the daemon removes the running marker and leaves no mark.
    await rm(path.join(marks, `${SEGMENT}.pushing`));
    expect(await exited).toBe(3);
    expect(await wasCalled()).toBe(`wal push pg_wal/${SEGMENT}`);
  });

  it('does not wait for a daemon that is gone, nor for a file nobody pushes', async () => {
    // A process that has exited: its id names no one (or, reused, no daemon of ours).
    const gone = spawn('true');
    await new Promise((resolve) => gone.once('exit', resolve));
    await writeFile(path.join(marks, 'daemon.pid'), `${gone.pid}\n`);
    await writeFile(path.join(marks, `${SEGMENT}.pushing`), '');
    expect(await push()).toBe(3);
    expect(await wasCalled()).toBe(`wal push pg_wal/${SEGMENT}`);

    await rm(called);
    await rm(path.join(marks, `${SEGMENT}.pushing`));
    await writeFile(path.join(marks, 'daemon.pid'), `${process.pid}\n`);
    expect(await push()).toBe(3);
    expect(await wasCalled()).toBe(`wal push pg_wal/${SEGMENT}`);
  });
});
