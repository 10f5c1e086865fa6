import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConnection } from '../src/postgres/connection.ts';
import { BackupSession } from '../src/postgres/physical/backup-session.ts';
import { startCluster, type TestCluster } from './helpers/postgres.ts';

/**
 * The proof that the data directory read is the server's own: pg_control as the server reads it,
 * compared byte for byte with the file, after the backup's checkpoint. A copy of the cluster's
 * files (a standby, a clone at the same path on another host) holds the same system identifier,
 * and is refused all the same.
 */
describe('a backup that reads the files', () => {
  let cluster: TestCluster;
  let copy: string;

  beforeAll(async () => {
    cluster = await startCluster();
    // The same cluster's pg_control as it was before the backup began: what a copy would hold.
    copy = await mkdtemp(path.join(os.tmpdir(), 'strongbox-copy-'));
    await mkdir(path.join(copy, 'global'));
    await copyFile(
      path.join(cluster.dataDir, 'global', 'pg_control'),
      path.join(copy, 'global', 'pg_control'),
    );
  });
  afterAll(async () => {
    await cluster?.stop();
    if (copy) await rm(copy, { recursive: true, force: true });
  });

  it("takes the server's own directory and refuses a copy of it", async () => {
    const session = await BackupSession.start(
      resolveConnection(cluster.url('postgres')),
      cluster.binDir,
      'test cluster',
    );
    try {
      expect(await session.readsSameControlFile(cluster.dataDir)).toBe(true);
      expect(await session.readsSameControlFile(copy)).toBe(false);
    } finally {
      await session.close();
    }
  });
});
