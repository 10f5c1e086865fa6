import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AccountSASPermissions,
  AccountSASResourceTypes,
  AccountSASServices,
  generateAccountSASQueryParameters,
  StorageSharedKeyCredential,
} from '@azure/storage-blob';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, StorageError } from '../src/errors.ts';
import { ObjectNotFoundError, type StorageBackend } from '../src/storage/backend.ts';
import { openBackend } from '../src/storage/open.ts';
import { AZURITE_ACCOUNT, AZURITE_KEY, startAzurite, type Azurite } from './helpers/azurite.ts';
import { describeBackendConformance } from './helpers/backend-conformance.ts';
import { runCli, startCli, tempRepo, type RunResult, type TempRepo } from './helpers/cli.ts';
import { seededBytes } from './helpers/data.ts';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.ts';

/** Variables of the machine running the tests that would change which credentials are used. */
const NO_AZURE_ENV = {
  AZURE_STORAGE_CONNECTION_STRING: undefined,
  AZURE_STORAGE_ACCOUNT: undefined,
  AZURE_STORAGE_KEY: undefined,
  AZURE_STORAGE_SAS_TOKEN: undefined,
};
const KEY_ENV = { ...NO_AZURE_ENV, AZURE_STORAGE_KEY: AZURITE_KEY };

let azurite: Azurite;
beforeAll(async () => {
  azurite = await startAzurite();
});
afterAll(() => azurite?.stop());

/** An azure:// URL on Azurite (or on a proxy in front of it) with the development account. */
function azureUrl(
  container: string,
  prefix: string,
  options: { port?: number; extra?: Record<string, string> } = {},
): string {
  const endpoint = `http://127.0.0.1:${options.port ?? azurite.port}/${AZURITE_ACCOUNT}`;
  const query = new URLSearchParams({ account: AZURITE_ACCOUNT, endpoint, ...options.extra });
  return `azure://${container}/${prefix}?${query}`;
}

function open(url: string, env: NodeJS.ProcessEnv = KEY_ENV): Promise<StorageBackend> {
  return openBackend(url, env);
}

let conformanceContainer: string | undefined;
let conformanceRuns = 0;
describeBackendConformance('azure', async () => {
  conformanceContainer ??= await azurite.createContainer();
  return open(azureUrl(conformanceContainer, `conformance/run-${++conformanceRuns}`));
});

async function listNames(store: StorageBackend, prefix: string): Promise<string[]> {
  const names = [];
  for await (const object of store.list(prefix)) names.push(object.name);
  return names.sort();
}

describe('azure backend', () => {
  let container: string;
  beforeAll(async () => {
    container = await azurite.createContainer();
  });

  it('authenticates with a connection string, an account key or a SAS token', async () => {
    const sasToken = generateAccountSASQueryParameters(
      {
        permissions: AccountSASPermissions.parse('racwdl'),
        services: AccountSASServices.parse('b').toString(),
        resourceTypes: AccountSASResourceTypes.parse('sco').toString(),
        expiresOn: new Date(Date.now() + 60 * 60 * 1000),
      },
      new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY),
    ).toString();
    const ways: Array<[string, string, NodeJS.ProcessEnv]> = [
      [
        'connection string',
        `azure://${container}/auth/connection-string`,
        {
          ...NO_AZURE_ENV,
          AZURE_STORAGE_CONNECTION_STRING: `DefaultEndpointsProtocol=http;AccountName=${AZURITE_ACCOUNT};AccountKey=${AZURITE_KEY};BlobEndpoint=${azurite.endpoint};`,
        },
      ],
      [
        'account and key from the environment',
        `azure://${container}/auth/key?endpoint=${encodeURIComponent(azurite.endpoint)}`,
        { ...KEY_ENV, AZURE_STORAGE_ACCOUNT: AZURITE_ACCOUNT },
      ],
      [
        'SAS token',
        `azure://${container}/auth/sas?endpoint=${encodeURIComponent(azurite.endpoint)}`,
        { ...NO_AZURE_ENV, AZURE_STORAGE_SAS_TOKEN: `?${sasToken}` },
      ],
    ];
    for (const [way, url, env] of ways) {
      const store = await open(url, env);
      try {
        await store.put('data/one', Buffer.from(way));
        expect((await store.get('data/one')).toString(), way).toBe(way);
        expect(await listNames(store, 'data/'), way).toEqual(['data/one']);
        expect(store.location, way).toBe(url.split('?')[0]);
      } finally {
        await store.close();
      }
    }
  });

  it('uploads large objects in blocks, each checked, visible only once committed', async () => {
    const store = await open(azureUrl(container, 'blocks'));
    try {
      const big = randomBytes(9 * 1024 * 1024 + 5);
      await store.put('data/big', big);
      const blob = azurite.service.getContainerClient(container).getBlockBlobClient('blocks/data/big');
      const blocks = await blob.getBlockList('all');
      expect(blocks.committedBlocks?.map((block) => block.size)).toEqual([4194304, 4194304, 1048581]);
      expect(Buffer.from((await blob.getProperties()).contentMD5!)).toEqual(
        createHash('md5').update(big).digest(),
      );

      // What a writer killed before its commit leaves: staged blocks, under a name no one can see.
      const partial = azurite.service.getContainerClient(container).getBlockBlobClient('blocks/data/partial');
      await partial.stageBlock(Buffer.from('block-0').toString('base64'), Buffer.from('half'), 4);
      expect(await listNames(store, 'data/')).toEqual(['data/big']);
      expect(await store.stat('data/partial')).toBeUndefined();
      await expect(store.get('data/partial')).rejects.toBeInstanceOf(ObjectNotFoundError);
      expect(await store.removeIncompleteUploads(new Date())).toBe(0);
    } finally {
      await store.close();
    }
  });

  it('takes concurrency and timeout from the URL', async () => {
    const tuned = await open(azureUrl(container, 'tuned', { extra: { concurrency: '7', timeout: '5' } }));
    expect(tuned.concurrency).toBe(7);
    const plain = await open(azureUrl(container, 'plain'));
    expect(plain.concurrency).toBe(4);
    expect(plain.location).toBe(`azure://${container}/plain`);
    await Promise.all([tuned.close(), plain.close()]);
  });

  it('refuses incomplete or ambiguous settings as configuration errors, quoting no secret', async () => {
    const endpoint = encodeURIComponent(azurite.endpoint);
    const cases: Array<[string, NodeJS.ProcessEnv, RegExp]> = [
      [`azure://${container}/x?endpoint=${endpoint}`, NO_AZURE_ENV, /no Azure credentials/],
      [`azure://${container}/x`, KEY_ENV, /no Azure storage account/],
      [`azure://Bad_Name/x?account=${AZURITE_ACCOUNT}`, KEY_ENV, /not a valid Azure container name/],
      [`azure://${container}/x?account=${AZURITE_ACCOUNT}&region=west`, KEY_ENV, /unknown option "region"/],
      [`azure://${container}/x?account=${AZURITE_ACCOUNT}&concurrency=0`, KEY_ENV, /concurrency=0/],
      [`azure://${container}/x?account=${AZURITE_ACCOUNT}&endpoint=ftp%3A%2F%2Fhost`, KEY_ENV, /plain http/],
      [
        `azure://${container}/x?endpoint=${endpoint}`,
        { ...NO_AZURE_ENV, AZURE_STORAGE_CONNECTION_STRING: `AccountName=a;AccountKey=${AZURITE_KEY}` },
        /already names the account/,
      ],
      [
        `azure://${container}/x`,
        { ...NO_AZURE_ENV, AZURE_STORAGE_CONNECTION_STRING: `AccountKey=${AZURITE_KEY};nonsense` },
        /not a valid Azure Storage connection string/,
      ],
    ];
    for (const [url, env, message] of cases) {
      const failure = await open(url, env).then(
        () => undefined,
        (error: unknown) => error,
      );
      expect(failure, url).toBeInstanceOf(ConfigError);
      expect((failure as Error).message, url).toMatch(message);
      expect(`${(failure as Error).message} ${(failure as ConfigError).hint}`).not.toContain(AZURITE_KEY);
    }
  });

  it('fails at once, without retrying, on a wrong key or a missing container', async () => {
    const wrongKey = randomBytes(64).toString('base64');
    const denied = await open(azureUrl(container, 'denied'), {
      ...NO_AZURE_ENV,
      AZURE_STORAGE_KEY: wrongKey,
    });
    const deniedError = await denied.put('config', Buffer.from('x')).catch((error: unknown) => error);
    expect(deniedError).toBeInstanceOf(StorageError);
    expect((deniedError as StorageError).message).toMatch(
      /Azure refused access to azure:\/\/test-\w+\/denied/,
    );
    // Retried errors say how many attempts failed; this one was never retried.
    expect((deniedError as StorageError).message).not.toMatch(/attempts/);
    expect(`${(deniedError as StorageError).message} ${(deniedError as StorageError).hint}`).not.toContain(
      wrongKey,
    );

    const missing = await open(azureUrl('no-such-container', 'repo'));
    const missingError = await missing.get('config').catch((error: unknown) => error);
    expect(missingError).toBeInstanceOf(StorageError);
    expect(missingError).not.toBeInstanceOf(ObjectNotFoundError);
    expect((missingError as StorageError).message).toMatch(/container no-such-container does not exist/);
    await Promise.all([denied.close(), missing.close()]);
  });

  it('retries server errors, throttling, stalled connections and answers cut short', async () => {
    const data = randomBytes(6 * 1024 * 1024);
    const faults = [
      { httpError: 1, httpErrorStatus: 503, firstConnections: 2 },
      { httpError: 1, httpErrorStatus: 429, firstConnections: 2 },
      { stall: 1, firstConnections: 1 },
      // Cut within the first 3 MB that come back: the read of the 6 MB object breaks off mid-body.
      {
        cutMidTransfer: 1,
        cutDirection: 'downstream' as const,
        cutAfterMaxBytes: 3 * 1024 * 1024,
        firstConnections: 2,
      },
    ];
    for (const [index, fault] of faults.entries()) {
      // A proxy of its own for each: the SDK keeps connections alive across backends in a process.
      const proxy = await startFaultProxy({ host: azurite.host, port: azurite.port }, fault);
      const store = await open(azureUrl(container, 'retried', { port: proxy.port, extra: { timeout: '1' } }));
      try {
        // A small object first: an attempt that uploads megabytes is given a minute more to answer.
        await store.put(`small/${index}`, Buffer.from('small'));
        await store.put(`data/${index}`, data);
        expect((await store.get(`data/${index}`)).equals(data)).toBe(true);
        expect(proxy.stats.faultsInjected, JSON.stringify(fault)).toBe(fault.firstConnections);
      } finally {
        await store.close();
        await proxy.close();
      }
    }
    const store = await open(azureUrl(container, 'retried'));
    expect(await listNames(store, 'data/')).toEqual(['data/0', 'data/1', 'data/2', 'data/3']);
    await store.close();
  });
});

function expectExit(result: RunResult, code: number): void {
  expect({ code: result.code, stderr: result.stderr }).toMatchObject({ code });
}

interface SnapshotRow {
  id: string;
  name: string;
}

async function sha256Tree(root: string): Promise<Record<string, string>> {
  const hashes: Record<string, string> = {};
  for (const entry of await fs.readdir(root, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const full = path.join(entry.parentPath, entry.name);
    hashes[path.relative(root, full)] = createHash('sha256')
      .update(await fs.readFile(full))
      .digest('hex');
  }
  return hashes;
}

/** A few files of incompressible data, about `megabytes` in all, so that a backup writes several packs. */
async function writeSource(dir: string, megabytes: number): Promise<string> {
  const source = path.join(dir, 'source');
  await fs.mkdir(path.join(source, 'nested'), { recursive: true });
  await fs.writeFile(path.join(source, 'big.bin'), seededBytes(`big-${dir}`, megabytes * 1024 * 1024));
  await fs.writeFile(path.join(source, 'nested', 'small.txt'), 'small and plain\n');
  await fs.writeFile(path.join(source, 'nested', 'medium.bin'), seededBytes(`medium-${dir}`, 300_000));
  return source;
}

describe('strongbox on Azure Blob storage, through the built binary', () => {
  let repo: TempRepo;
  beforeAll(async () => {
    repo = await tempRepo();
  });
  afterAll(() => repo.cleanup());

  function cli(url: string, args: string[], options: { input?: Buffer; env?: NodeJS.ProcessEnv } = {}) {
    return runCli(args, {
      input: options.input,
      env: { ...repo.env, ...KEY_ENV, STRONGBOX_REPO: url, ...options.env },
    });
  }

  async function expectRestoredExactly(
    url: string,
    source: string,
    stdinName: string,
    stdinData: Buffer,
    env: NodeJS.ProcessEnv = {},
  ) {
    const snapshots = JSON.parse(
      (await cli(url, ['snapshots', '--json'], { env })).stdout.toString(),
    ) as SnapshotRow[];
    const filesSnapshot = snapshots.find((snapshot) => snapshot.name === source)!;
    const stdinSnapshot = snapshots.find((snapshot) => snapshot.name === stdinName)!;
    const target = await fs.mkdtemp(path.join(repo.dir, 'restored-'));
    expectExit(await cli(url, ['restore', 'files', filesSnapshot.id, '--target', target], { env }), 0);
    expect(await sha256Tree(path.join(target, source))).toEqual(await sha256Tree(source));
    const cat = await cli(url, ['cat', stdinSnapshot.id], { env });
    expectExit(cat, 0);
    expect(cat.stdout.equals(stdinData)).toBe(true);
  }

  it('initialises, backs up files and a stream, restores them exactly and checks every pack', async () => {
    const container = await azurite.createContainer();
    const url = `azure://${container}/backups/main?endpoint=${encodeURIComponent(azurite.endpoint)}`;
    const env = { AZURE_STORAGE_ACCOUNT: AZURITE_ACCOUNT };
    expectExit(await cli(url, ['init', '--pack-size', '1'], { env }), 0);
    const source = await writeSource(await fs.mkdtemp(path.join(repo.dir, 'round-trip-')), 2);
    expectExit(await cli(url, ['backup', 'files', source], { env }), 0);
    const stdinData = seededBytes('stdin round trip', 1_500_000);
    expectExit(await cli(url, ['backup', 'stdin', '--name', 'dump.bin'], { env, input: stdinData }), 0);

    const snapshots = JSON.parse(
      (await cli(url, ['snapshots', '--json'], { env })).stdout.toString(),
    ) as SnapshotRow[];
    expect(snapshots.map((snapshot) => snapshot.name).sort()).toEqual(['dump.bin', source].sort());
    await expectRestoredExactly(url, source, 'dump.bin', stdinData, env);
    const checked = await cli(url, ['check', '--read-data'], { env });
    expectExit(checked, 0);
    expect(checked.stderr).toMatch(/no errors were found/);

    const packs = [];
    for await (const blob of azurite.service
      .getContainerClient(container)
      .listBlobsFlat({ prefix: 'backups/main/data/' })) {
      packs.push(blob.name);
    }
    expect(packs.length).toBeGreaterThan(3);
  });

  it('backs up through resets, cuts, delays, server errors and stalls, then checks and restores exactly', async () => {
    const container = await azurite.createContainer();
    let proxy: FaultProxy | undefined;
    try {
      proxy = await startFaultProxy({ host: azurite.host, port: azurite.port }, {}, 20261121);
      const url = azureUrl(container, 'faulty', { port: proxy.port, extra: { timeout: '2' } });
      expectExit(await cli(url, ['init', '--pack-size', '1']), 0);
      const source = await writeSource(await fs.mkdtemp(path.join(repo.dir, 'faults-')), 3);

      // Faults only in the first connections: fewer than the attempts our retry policy makes, so a
      // backup must succeed whichever requests they hit.
      proxy.setFaults({ resetOnConnect: 0.4, cutMidTransfer: 0.9, delayMs: 1, firstConnections: 6 });
      expectExit(await cli(url, ['backup', 'files', source]), 0);
      const stdinData = seededBytes('stdin through faults', 2_500_000);
      proxy.setFaults({ httpError: 1, httpErrorStatus: 503, firstConnections: 4 });
      expectExit(await cli(url, ['backup', 'stdin', '--name', 'faulty.bin'], { input: stdinData }), 0);
      proxy.setFaults({ stall: 1, firstConnections: 1 });
      expectExit(
        await cli(url, ['backup', 'stdin', '--name', 'stalled.bin'], { input: Buffer.from('x\n') }),
        0,
      );

      const { byKind } = proxy.stats;
      expect(byKind.reset + byKind.cut).toBeGreaterThan(0);
      expect(byKind.httpError).toBe(4);
      expect(byKind.stall).toBe(1);

      proxy.setFaults({});
      const checked = await cli(url, ['check', '--read-data']);
      expectExit(checked, 0);
      expect(checked.stderr).toMatch(/no errors were found/);
      await expectRestoredExactly(url, source, 'faulty.bin', stdinData);
    } finally {
      await proxy?.close();
    }
  });

  it('exits 6 with a clear message on a wrong key or a missing container', async () => {
    const container = await azurite.createContainer();
    const url = azureUrl(container, 'denied');
    const wrongKey = randomBytes(64).toString('base64');
    const denied = await cli(url, ['init'], { env: { AZURE_STORAGE_KEY: wrongKey } });
    expectExit(denied, 6);
    expect(denied.stderr).toMatch(
      /Azure refused access to azure:\/\/test-\w+\/denied \(AuthorizationFailure\)/,
    );
    expect(denied.stderr).toMatch(/AZURE_STORAGE_KEY/);
    expect(denied.stderr).not.toMatch(/attempts/);
    expect(denied.stderr).not.toContain(wrongKey);

    const missing = await cli(azureUrl('missing-container', 'repo'), ['init']);
    expectExit(missing, 6);
    expect(missing.stderr).toMatch(/container missing-container does not exist/);
    expect(missing.stderr).toMatch(/az storage container create/);
  });

  it('leaves no snapshot and nothing half-visible after a backup killed mid-upload', async () => {
    const container = await azurite.createContainer();
    const url = azureUrl(container, 'killed');
    // Packs of 8 MiB go up as two staged blocks each, then a commit.
    expectExit(await cli(url, ['init', '--pack-size', '8']), 0);
    expectExit(
      await cli(url, ['backup', 'stdin', '--name', 'kept.bin'], { input: Buffer.from('kept\n') }),
      0,
    );

    const producer = `const c=require('crypto');const t=setInterval(()=>process.stdout.write(c.randomBytes(65536)),2);setTimeout(()=>clearInterval(t),8000)`;
    const child = startCli(
      [
        'backup',
        'stdin',
        '--name',
        'killed.bin',
        '--stdin-from-command',
        '--',
        process.execPath,
        '-e',
        producer,
      ],
      { env: { ...repo.env, ...KEY_ENV, STRONGBOX_REPO: url } },
    );
    const exited = new Promise((resolve) => child.once('close', resolve));
    let stillRunning = true;
    void exited.then(() => (stillRunning = false));
    const containerClient = azurite.service.getContainerClient(container);
    const blobNames = async (prefix: string, includeUncommitedBlobs: boolean): Promise<Set<string>> => {
      const names = new Set<string>();
      for await (const blob of containerClient.listBlobsFlat({ prefix, includeUncommitedBlobs })) {
        names.add(blob.name.slice('killed/'.length));
      }
      return names;
    };
    const stagedOnly = async (): Promise<string[]> => {
      const committed = await blobNames('killed/data/', false);
      return [...(await blobNames('killed/data/', true))].filter((name) => !committed.has(name));
    };
    // Killed as soon as a pack has blocks staged but not committed: in the middle of its upload.
    while (stillRunning && (await stagedOnly()).length === 0) await sleep(10);
    expect(stillRunning, 'the backup ended before any pack upload was seen').toBe(true);
    process.kill(-child.pid!, 'SIGKILL');
    await exited;

    const store = await open(url);
    try {
      const snapshots = JSON.parse(
        (await cli(url, ['snapshots', '--json'])).stdout.toString(),
      ) as SnapshotRow[];
      expect(snapshots.map((snapshot) => snapshot.name)).toEqual(['kept.bin']);
      // Every object the repository lists is whole: the size and MD5 it was committed with.
      for await (const object of store.list('')) {
        const data = await store.get(object.name);
        const properties = await containerClient.getBlockBlobClient(`killed/${object.name}`).getProperties();
        expect(data.length).toBe(object.size);
        expect(Buffer.from(properties.contentMD5!)).toEqual(createHash('md5').update(data).digest());
      }
      // The dead writer's staged blocks exist for Azure, but not for the repository.
      const abandoned = await stagedOnly();
      expect(abandoned.length).toBeGreaterThan(0);
      const listed = [];
      for await (const object of store.list('data/')) listed.push(object.name);
      for (const name of abandoned) {
        expect(listed).not.toContain(name);
        expect(await store.stat(name)).toBeUndefined();
      }
    } finally {
      await store.close();
    }
    expectExit(await cli(url, ['unlock']), 0);
    const checked = await cli(url, ['check', '--read-data']);
    expectExit(checked, 0);
    expect(checked.stderr).toMatch(/no errors were found/);
  });
});
