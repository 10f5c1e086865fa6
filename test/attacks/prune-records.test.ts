import { rm } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRepository } from '../../src/index.ts';
import { forget } from '../../src/ops/forget.ts';
import { prune } from '../../src/ops/prune.ts';
import { objectName } from '../../src/repository/layout.ts';
import { seededBytes } from '../helpers/data.ts';
import { expectExit, runCli } from '../helpers/cli.ts';
import { backupBuffer, createTestRepo, PASSWORD, readAll, type TestRepo } from '../helpers/repo.ts';

/**
 * A database host holds a write-only key and, being compromised, also writes the storage. It must
 * not be able to delete backups through strongbox: `forget`, `prune` and `tag` refuse it, a removal
 * record it signs does not hide the deletion of a snapshot from clients that saw it, and a prune
 * plan it signs neither makes a prune delete nor is honoured by writers.
 */

const WRITER_PASSWORD = 'write only host password';
let repo: TestRepo;
let kept: string;
let keptData: Buffer;

beforeAll(async () => {
  repo = await createTestRepo({ packSize: 1024 * 1024 });
  await repo.repository.addKey(WRITER_PASSWORD, 'write-only');
  keptData = seededBytes('kept by the owner', 1_200_000);
  kept = (await backupBuffer(repo.repository, keptData, 'db.dump')).snapshot;
});

afterAll(async () => {
  await repo.repository.close();
  await repo.cleanup();
});

function env(password: string, stateDir = path.join(repo.dir, 'cli-state')) {
  return { STRONGBOX_REPO: repo.location, STRONGBOX_PASSWORD: password, STRONGBOX_STATE_DIR: stateDir };
}

describe('a write-only key cannot delete backups through strongbox', () => {
  it('forget, prune and tag exit 5', async () => {
    for (const args of [
      ['forget', '--keep-last', '1'],
      ['forget', kept],
      ['prune'],
      ['tag', kept, '--remove', 'x'],
    ]) {
      const result = await runCli(args, { env: env(WRITER_PASSWORD) });
      expectExit(result, 5);
      expect(result.stderr).toMatch(/write-only key cannot/);
    }
    expectExit(await runCli(['snapshots'], { env: env(PASSWORD) }), 0);
  });

  it('a removal record it signs does not hide a deletion from a client that saw the snapshot', async () => {
    const owner = path.join(repo.dir, 'owner-state');
    const listed = await runCli(['snapshots', '--json'], { env: env(PASSWORD, owner) });
    expectExit(listed, 0);
    const victim = (await backupBuffer(repo.repository, seededBytes('victim', 300_000), 'victim')).snapshot;
    expectExit(await runCli(['snapshots'], { env: env(PASSWORD, owner) }), 0);
    const host = await openRepository({
      repo: repo.location,
      passphrase: WRITER_PASSWORD,
      stateDirectory: path.join(repo.dir, 'host-state'),
    });
    try {
      await host.records.writeRemoval({
        version: 1,
        created: new Date().toISOString(),
        reason: 'forget',
        snapshots: [victim],
      });
    } finally {
      await host.close();
    }
    await rm(path.join(repo.location, objectName('snapshot', victim)));
    const after = await runCli(['snapshots'], { env: env(PASSWORD, owner) });
    expectExit(after, 0);
    expect(after.stdout + after.stderr).toMatch(new RegExp(`${victim.slice(0, 8)}\\s+disappeared`));
    expect(after.stderr).toMatch(/ignored removal record .*write-only key/);
    expectExit(await runCli(['check'], { env: env(PASSWORD, owner) }), 7);
  });

  it('a removal record it signs naming WAL files makes neither prune nor forget delete them', async () => {
    const names = ['000000010000000000000001', '000000010000000000000002'];
    for (const name of names) await repo.repository.wal.push(name, Buffer.from(`WAL ${name}`));
    const host = await openRepository({
      repo: repo.location,
      passphrase: WRITER_PASSWORD,
      stateDirectory: path.join(repo.dir, 'host-state'),
    });
    try {
      await host.records.writeRemoval({
        version: 1,
        created: new Date().toISOString(),
        reason: 'forget',
        snapshots: [],
        wal: names,
      });
    } finally {
      await host.close();
    }
    const owner = await repo.reopen();
    try {
      const warnings: string[] = [];
      owner.onWarning = (message) => warnings.push(message);
      await prune(owner);
      expect(warnings.join('\n')).toMatch(/ignored removal record .*write-only key/);
      const forgotten = await forget(owner, { policy: { last: 100 } });
      expect(forgotten.wal.expired.count).toBe(0);
      expect((await owner.wal.list()).map((file) => file.name)).toEqual(names);
      expect(await owner.wal.fetch(names[0]!)).toEqual(Buffer.from(`WAL ${names[0]}`));
    } finally {
      await owner.close();
    }
  });

  it('a prune plan it signs deletes nothing and is not honoured by writers', async () => {
    const host = await openRepository({
      repo: repo.location,
      passphrase: WRITER_PASSWORD,
      stateDirectory: path.join(repo.dir, 'host-state'),
    });
    const owner = await repo.reopen();
    try {
      await owner.loadIndex();
      const packs = [...owner.index.packIdList()];
      await host.records.writePrunePlan({
        version: 1,
        created: new Date().toISOString(),
        host: 'db1',
        snapshots: [],
        delete: packs,
        repack: [],
        orphans: [],
        waitFor: [],
      });
      const warnings: string[] = [];
      owner.onWarning = (message) => warnings.push(message);
      await owner.honourPrunePlans();
      expect(warnings.join('\n')).toMatch(/ignored prune plan .*write-only key/);
      // Not honoured: the owner's session may still deduplicate onto every pack.
      const [firstBlob] = [...owner.index.entries()][0]!;
      expect(owner.hasReadableCopy(firstBlob)).toBe(true);
      const result = await prune(owner);
      expect(result.resumedPlans).toBe(0);
      expect((await readAll(owner, kept)).equals(keptData)).toBe(true);
    } finally {
      await host.close();
      await owner.close();
    }
  });
});
