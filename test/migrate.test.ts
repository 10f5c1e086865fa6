import { createHash } from 'node:crypto';
import { cp, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectExit, runCli, tempRepo, type TempRepo } from './helpers/cli.ts';

/** A repository written by strongbox before format 2 (two snapshots, a full and a write-only key). */
const FIXTURE = fileURLToPath(new URL('./fixtures/format-1/repo', import.meta.url));

async function packHashes(repo: string): Promise<string[]> {
  const hashes: string[] = [];
  const data = path.join(repo, 'data');
  for (const fan of await readdir(data))
    for (const pack of await readdir(path.join(data, fan)))
      hashes.push(
        createHash('sha256')
          .update(await readFile(path.join(data, fan, pack)))
          .digest('hex'),
      );
  return hashes.sort();
}

describe('strongbox migrate', () => {
  let repo: TempRepo;
  const cli = (args: string[], env: Record<string, string | undefined> = {}) =>
    runCli(args, { env: { ...repo.env, ...env } });

  beforeAll(async () => {
    repo = await tempRepo('format one password');
    await cp(FIXTURE, repo.repo, { recursive: true });
  });
  afterAll(() => repo?.cleanup());

  it('is what opening a format-1 repository asks for (exit 3)', async () => {
    const listed = await cli(['snapshots']);
    expectExit(listed, 3);
    expect(listed.stderr).toMatch(/is of format version 1/);
    expect(listed.stderr).toMatch(/strongbox migrate/);
  });

  it('needs a full key', async () => {
    const writer = path.join(repo.dir, 'writer');
    await writeFile(writer, 'writer password\n');
    const refused = await cli(['migrate'], { STRONGBOX_PASSWORD_FILE: writer });
    expectExit(refused, 5);
    expect(refused.stderr).toMatch(/needs a full key/);
  });

  it('rewrites metadata only: every snapshot reads back, every pack is untouched, check passes', async () => {
    const packsBefore = await packHashes(repo.repo);
    const migrated = await cli(['migrate', '--json']);
    expectExit(migrated, 0);
    expect(JSON.parse(migrated.stdout.toString())).toMatchObject({
      snapshots: 2,
      indexFiles: 2,
      skipped: [],
    });
    expect(await packHashes(repo.repo)).toEqual(packsBefore);
    // Its audit record, signed by the key in its new form.
    const log = await cli(['log', '--json']);
    expectExit(log, 0);
    expect(JSON.parse(log.stdout.toString())).toMatchObject([
      { status: 'verified', key: { kind: 'full' }, record: { operation: 'migrate', result: 'success' } },
    ]);

    const listed = await cli(['snapshots', '--json']);
    expectExit(listed, 0);
    const snapshots = JSON.parse(listed.stdout.toString()) as { id: string; writer: { current: boolean } }[];
    expect(snapshots).toHaveLength(2);
    expect(snapshots.every((snapshot) => !snapshot.writer.current)).toBe(true);
    const texts = [];
    for (const { id } of snapshots) {
      const read = await cli(['cat', id]);
      expectExit(read, 0);
      texts.push(read.stdout.toString());
    }
    expect(texts).toEqual(['first backup\n', 'second backup, written by the write-only key\n']);
    expectExit(await cli(['check', '--read-data']), 0);

    // Format-1 keys are gone: the write-only one must be issued again.
    const writer = path.join(repo.dir, 'writer');
    expectExit(await cli(['snapshots'], { STRONGBOX_PASSWORD_FILE: writer }), 5);
    expectExit(await cli(['key', 'add', '--write-only'], { STRONGBOX_NEW_PASSWORD_FILE: writer }), 0);
    const backedUp = await runCli(['backup', 'stdin', '--name', 'notes.txt'], {
      env: { ...repo.env, STRONGBOX_PASSWORD_FILE: writer },
      input: 'third backup\n',
    });
    expectExit(backedUp, 0);
    const latest = await cli(['cat', 'latest']);
    expectExit(latest, 0);
    expect(latest.stdout.toString()).toBe('third backup\n');

    const again = await cli(['migrate']);
    expectExit(again, 3);
    expect(again.stderr).toMatch(/is of format version 2 already/);
  });
});
