import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StorageError } from '../src/errors.ts';
import { check } from '../src/ops/check.ts';
import { prune, type PruneResult } from '../src/ops/prune.ts';
import { Repository } from '../src/repository/repository.ts';
import { openBackend } from '../src/storage/open.ts';
import { AZURITE_ACCOUNT, AZURITE_KEY, startAzurite } from './helpers/azurite.ts';
import { seededBytes } from './helpers/data.ts';
import { startFaultProxy, type FaultProxy, type Faults } from './helpers/fault-proxy.ts';
import { backupBuffer, PASSWORD, readAll } from './helpers/repo.ts';
import { S3RVER_ACCESS_KEY, S3RVER_SECRET_KEY, startS3Server } from './helpers/s3-server.ts';
import { knownHostsLine, startSshd } from './helpers/sshd.ts';

/**
 * Prune on each remote backend, its server real and on loopback, with a fault proxy in front of
 * it: the repository is built straight on the server, then prune runs through the proxy while
 * it resets, cuts, delays, stalls and fails requests (seeded, so the same faults strike every
 * run). Prune either succeeds through its retries or fails loudly, and then a second one
 * finishes; either way every kept snapshot reads back exactly, `check --read-data` finds
 * nothing, and the packs only forgotten snapshots used are gone from the storage.
 */

/** A test server of one backend. */
interface Remote {
  /** Where the fault proxy forwards to. */
  target: { host: string; port: number };
  /** The URL of a new repository named `name`: straight to the server, and through `proxy`. */
  urls(name: string, proxy: FaultProxy): Promise<{ direct: string; faulty: string }>;
  /** Credentials and settings the backend reads. */
  env: NodeJS.ProcessEnv;
  /** Faults that strike while prune runs: each must be one our retries cure. */
  faults: Faults;
  stop(): Promise<void>;
}

async function s3Remote(): Promise<Remote> {
  const server = await startS3Server();
  const at = (name: string, endpoint: string, options = '') =>
    `s3://${server.bucket}/${name}?endpoint=${encodeURIComponent(endpoint)}&path-style=true${options}`;
  return {
    target: { host: server.host, port: server.port },
    urls: (name, proxy) =>
      Promise.resolve({
        direct: at(name, server.endpoint),
        // s3rver answers from this test's own thread: when a busy machine holds that thread up for
        // a second, every request in flight would miss a one-second timeout at once, and retry
        // after retry ran the test past its limit. A stall still costs only these few seconds.
        faulty: at(name, `http://${proxy.host}:${proxy.port}`, '&timeout=5'),
      }),
    env: { S3_ACCESS_KEY: S3RVER_ACCESS_KEY, S3_SECRET_KEY: S3RVER_SECRET_KEY },
    faults: {
      resetOnConnect: 0.2,
      stall: 0.15,
      httpError: 0.3,
      httpErrorStatus: 503,
      cutMidTransfer: 1,
      cutAfterMaxBytes: 512 * 1024,
      delayMs: 1,
      firstConnections: 6,
    },
    stop: () => server.close(),
  };
}

async function azureRemote(): Promise<Remote> {
  const azurite = await startAzurite();
  try {
    const container = await azurite.createContainer();
    const at = (name: string, port: number, extra: Record<string, string> = {}) => {
      const endpoint = `http://127.0.0.1:${port}/${AZURITE_ACCOUNT}`;
      return `azure://${container}/${name}?${new URLSearchParams({ account: AZURITE_ACCOUNT, endpoint, ...extra })}`;
    };
    return {
      target: { host: azurite.host, port: azurite.port },
      urls: (name, proxy) =>
        Promise.resolve({ direct: at(name, azurite.port), faulty: at(name, proxy.port, { timeout: '2' }) }),
      // Variables of the machine running the tests would change which credentials are used.
      env: {
        AZURE_STORAGE_CONNECTION_STRING: undefined,
        AZURE_STORAGE_ACCOUNT: undefined,
        AZURE_STORAGE_SAS_TOKEN: undefined,
        AZURE_STORAGE_KEY: AZURITE_KEY,
      },
      faults: {
        resetOnConnect: 0.2,
        stall: 0.15,
        httpError: 0.3,
        httpErrorStatus: 429,
        cutMidTransfer: 1,
        cutAfterMaxBytes: 512 * 1024,
        delayMs: 1,
        firstConnections: 6,
      },
      stop: () => azurite.stop(),
    };
  } catch (error) {
    await azurite.stop();
    throw error;
  }
}

async function sftpRemote(): Promise<Remote> {
  const sshd = await startSshd();
  return {
    target: { host: sshd.host, port: sshd.port },
    async urls(name, proxy) {
      // known_hosts names the server by the port the client dials: the proxy's.
      const knownHosts = path.join(sshd.dir, `known_hosts_${proxy.port}`);
      await writeFile(knownHosts, knownHostsLine('127.0.0.1', proxy.port, sshd.hostKey.publicKey));
      const remotePath = `${sshd.dir}/${name}`;
      return {
        direct: sshd.url(remotePath),
        faulty: `sftp://${sshd.user}@127.0.0.1:${proxy.port}/${remotePath.replace(/^\/+/, '')}?${new URLSearchParams(
          { timeout: '1', 'known-hosts': knownHosts },
        )}`,
      };
    },
    env: { SSH_AUTH_SOCK: undefined, ...sshd.env() },
    // One connection carries every request: each fault ends it, and the backend connects again.
    faults: {
      resetOnConnect: 0.3,
      stall: 0.2,
      cutMidTransfer: 1,
      cutAfterMaxBytes: 1024 * 1024,
      delayMs: 1,
      firstConnections: 5,
    },
    stop: () => sshd.stop(),
  };
}

const backends: [name: string, start: () => Promise<Remote>][] = [
  ['S3 (s3rver)', s3Remote],
  ['Azure Blob storage (Azurite)', azureRemote],
  ['SFTP (sshd)', sftpRemote],
];

/** Small chunks and 1 MiB packs, as in prune.test.ts: a few megabytes make many packs. */
const SMALL = { chunker: { min: 4096, avg: 16384, max: 65536 }, packSize: 1024 * 1024 };

/** Expects `actual` to be exactly `expected`, without printing megabytes when it is not. */
function expectSameBytes(actual: Buffer, expected: Buffer): void {
  expect({ length: actual.length, equal: actual.equals(expected) }).toEqual({
    length: expected.length,
    equal: true,
  });
}

describe.each(backends)('prune on %s through the fault proxy', (_backend, start) => {
  let remote: Remote;
  let proxy: FaultProxy;
  let stateDirectory: string;

  beforeAll(async () => {
    remote = await start();
    proxy = await startFaultProxy(remote.target, {}, 20260613);
    stateDirectory = await mkdtemp(path.join(os.tmpdir(), 'strongbox-prune-remote-'));
  });

  afterAll(async () => {
    await proxy?.close();
    await remote?.stop();
    if (stateDirectory) await rm(stateDirectory, { recursive: true, force: true });
  });

  async function open(url: string): Promise<Repository> {
    const backend = await openBackend(url, remote.env);
    try {
      return await Repository.open(backend, { passphrase: PASSWORD }, { stateDirectory });
    } catch (error) {
      await backend.close();
      throw error;
    }
  }

  /** Runs `use` on the repository at `url`, closed however `use` ends. */
  async function withRepository<T>(url: string, use: (repository: Repository) => Promise<T>): Promise<T> {
    const repository = await open(url);
    try {
      return await use(repository);
    } finally {
      await repository.close();
    }
  }

  /** The packs stored, as the backend lists them. */
  async function storedPacks(repository: Repository): Promise<Set<string>> {
    const names = new Set<string>();
    for await (const object of repository.backend.list('data/')) names.add(object.name);
    return names;
  }

  it('deletes and repacks through resets, cuts, delays, stalls and server errors; what is kept reads back exactly', async () => {
    const { direct, faulty } = await remote.urls(`prune-${randomBytes(4).toString('hex')}`, proxy);
    const kept = new Map<string, Buffer>();
    const forgotten: string[] = [];
    /**
     * Packs written by the backups of forgotten snapshots: with maxUnused 0 every one goes, deleted
     * or, when a kept snapshot shares some of its blobs, repacked.
     */
    const forgottenPacks = new Set<string>();
    const backupInto = async (repository: Repository, data: Buffer, name: string, keep: boolean) => {
      const before = await storedPacks(repository);
      const { snapshot } = await backupBuffer(repository, data, name);
      if (keep) return kept.set(snapshot, data);
      forgotten.push(snapshot);
      for (const pack of await storedPacks(repository)) if (!before.has(pack)) forgottenPacks.add(pack);
    };

    const backend = await openBackend(direct, remote.env);
    const repository = await Repository.init(backend, PASSWORD, SMALL, { stateDirectory });
    try {
      // `both` holds `a` and `b` in the same packs; `a` alone is kept and deduplicates onto them,
      // so forgetting `both` leaves packs partly used: they are repacked.
      const a = seededBytes('prune-remote a', 400_000);
      const b = seededBytes('prune-remote b', 400_000);
      await backupInto(repository, Buffer.concat([a, b]), 'both', false);
      await backupInto(repository, a, 'a', true);
      for (let i = 0; i < 3; i++) {
        await backupInto(repository, seededBytes(`prune-remote ${i}`, 700_000), `unique-${i}`, i === 1);
      }
      await repository.removeSnapshots(forgotten, 'forget');
    } finally {
      await repository.close();
    }

    const pruneThroughProxy = () =>
      withRepository(faulty, (faultyRepository) => prune(faultyRepository, { maxUnused: 0 }));
    const before = { ...proxy.stats.byKind };
    proxy.setFaults(remote.faults);
    let result: PruneResult;
    try {
      result = await pruneThroughProxy();
    } catch (error) {
      // A fault no retry cured must fail loudly, as a storage error, and leave its plan (or
      // nothing done yet): the next prune finishes it.
      expect(error).toBeInstanceOf(StorageError);
      proxy.setFaults({});
      result = await pruneThroughProxy();
    } finally {
      proxy.setFaults({});
    }
    expect(result.outcome).toBe('done');
    // Seeded draws: connections that were reset, cut, stalled or refused, not only delayed.
    const { byKind } = proxy.stats;
    const broken = (kinds: typeof byKind) => kinds.reset + kinds.cut + kinds.stall + kinds.httpError;
    expect(broken(byKind) - broken(before)).toBeGreaterThan(1);

    await withRepository(direct, async (fresh) => {
      for (const [snapshot, data] of kept) expectSameBytes(await readAll(fresh, snapshot), data);
      const checked = await check(fresh, { readData: 1 });
      expect(checked.problems).toEqual([]);
      expect(checked.unreferencedPacks).toBe(0);
      expect(checked.snapshots).toBe(kept.size);
      const after = await storedPacks(fresh);
      expect(forgottenPacks.size).toBeGreaterThan(0);
      expect([...forgottenPacks].filter((pack) => after.has(pack))).toEqual([]);
      expect(checked.packs).toBe(after.size);
      // Nothing more to do: the faulty run left nothing behind.
      const again = await prune(fresh, { maxUnused: 0 });
      expect(again.packs.deleted + again.packs.orphansDeleted + again.resumedPlans).toBe(0);
    });
    // Two cores shared with servers that encrypt (sshd) or parse XML: slower when the machine is busy.
    // Half the connections fail one way or another: one request can meet a stall (the timeout,
    // 5 s) on each of the SDK's 3 tries, in each of the backend's 8 attempts, with their backoff
    // (up to 20 s) between. Usually done in 10 s; an unlucky draw of connections takes minutes.
  }, 360_000);
});
