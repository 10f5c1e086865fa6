import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../src/errors.ts';
import { AccessDeniedError, ObjectLockedError, type StorageBackend } from '../src/storage/backend.ts';
import { openBackend } from '../src/storage/open.ts';
import { parseS3Location } from '../src/storage/s3.ts';
import { AZURITE_ACCOUNT, AZURITE_KEY, startAzurite, type Azurite } from './helpers/azurite.ts';
import { expectExit, runCli, tempRepo, type TempRepo } from './helpers/cli.ts';
import { startHttpProxy, type HttpProxy, type ProxiedRequest } from './helpers/http-proxy.ts';
import { S3RVER_ACCESS_KEY, S3RVER_SECRET_KEY, startS3Server, type S3Server } from './helpers/s3-server.ts';

/*
 * No local server enforces S3 Object Lock or Azure immutability policies: s3rver and Azurite
 * accept the headers and ignore them. These tests therefore check, through a recording proxy in
 * front of the real servers, what strongbox sends, and make the proxy answer as S3 and Azure
 * answer for locked objects. docs/CLI.md ("Immutable backups") gives the check to run against a
 * real bucket.
 */

const DAY_MS = 24 * 60 * 60 * 1000;
const MINUTE_MS = 60 * 1000;
const S3_CREDENTIALS = { S3_ACCESS_KEY: S3RVER_ACCESS_KEY, S3_SECRET_KEY: S3RVER_SECRET_KEY };
const AZURE_CREDENTIALS = {
  AZURE_STORAGE_CONNECTION_STRING: undefined,
  AZURE_STORAGE_ACCOUNT: undefined,
  AZURE_STORAGE_SAS_TOKEN: undefined,
  AZURE_STORAGE_KEY: AZURITE_KEY,
};

let s3: S3Server;
let s3Proxy: HttpProxy;
let azurite: Azurite;
let azureProxy: HttpProxy;
beforeAll(async () => {
  [s3, azurite] = await Promise.all([startS3Server(), startAzurite()]);
  [s3Proxy, azureProxy] = await Promise.all([startHttpProxy(s3), startHttpProxy(azurite)]);
});
afterAll(async () => {
  await Promise.all([s3Proxy?.close(), azureProxy?.close()]);
  await Promise.all([s3?.close(), azurite?.stop()]);
});

function newPrefix(): string {
  return `repo-${randomBytes(4).toString('hex')}`;
}

/** An s3:// location on s3rver behind the proxy. */
function s3Location(prefix: string, options = ''): string {
  return `s3://${s3.bucket}/${prefix}?endpoint=${encodeURIComponent(s3Proxy.endpoint)}&path-style=true${options}`;
}

/** Requests the proxy received since `from` whose object path starts with `pathPrefix`. */
function proxiedSince(proxy: HttpProxy, from: number, pathPrefix: string): ProxiedRequest[] {
  return proxy.requests.slice(from).filter((request) => request.path.startsWith(pathPrefix));
}

/** Runs `use` with a backend that is closed afterwards. */
async function withBackend<T>(
  location: string,
  env: NodeJS.ProcessEnv,
  use: (store: StorageBackend) => Promise<T>,
): Promise<T> {
  const store = await openBackend(location, env);
  try {
    return await use(store);
  } finally {
    await store.close();
  }
}

/** Expects `date` (a header's text) to be `days` from now, give or take a minute. */
function expectDaysAhead(date: string | string[] | undefined, days: number): void {
  expect(typeof date).toBe('string');
  const distance = new Date(date as string).getTime() - (Date.now() + days * DAY_MS);
  expect(Math.abs(distance)).toBeLessThan(MINUTE_MS);
}

function headerNames(request: ProxiedRequest, prefix: string): string[] {
  return Object.keys(request.headers).filter((name) => name.startsWith(prefix));
}

function hasIntegrityHeader(request: ProxiedRequest): boolean {
  return request.headers['content-md5'] !== undefined || headerNames(request, 'x-amz-checksum-').length > 0;
}

async function caught(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    () => undefined,
    (error: unknown) => error,
  );
}

describe('object-lock in s3:// locations', () => {
  it('reads a mode and a number of days, both or neither', () => {
    expect(parseS3Location(new URL('s3://b/p'), {}).objectLock).toBeUndefined();
    expect(
      parseS3Location(new URL('s3://b/p?object-lock=governance&object-lock-days=30'), {}).objectLock,
    ).toEqual({ mode: 'governance', days: 30 });
    expect(
      parseS3Location(new URL('s3://b/p?object-lock-days=36500&object-lock=compliance'), {}).objectLock,
    ).toEqual({ mode: 'compliance', days: 36500 });
    for (const bad of [
      's3://b/p?object-lock=forever&object-lock-days=30',
      's3://b/p?object-lock=GOVERNANCE&object-lock-days=30',
      's3://b/p?object-lock=governance',
      's3://b/p?object-lock-days=30',
      's3://b/p?object-lock=governance&object-lock-days=0',
      's3://b/p?object-lock=governance&object-lock-days=36501',
      's3://b/p?object-lock=governance&object-lock-days=1.5',
      's3://b/p?object-lock=governance&object-lock-days=1e3',
      's3://b/p?object-lock=governance&object-lock-days=',
      's3://b/p?object-lock=governance&object-lock=compliance&object-lock-days=30',
    ]) {
      expect(() => parseS3Location(new URL(bad), {}), bad).toThrow(ConfigError);
    }
  });

  it('are refused with exit 3 by the CLI, saying what to add', async () => {
    const repo: TempRepo = await tempRepo();
    try {
      const run = (location: string) =>
        runCli(['init'], { env: { ...repo.env, ...S3_CREDENTIALS, STRONGBOX_REPO: location } });
      const forever = await run(s3Location(newPrefix(), '&object-lock=forever&object-lock-days=30'));
      expectExit(forever, 3);
      expect(forever.stderr).toContain(
        'object-lock=forever in the s3:// location must be governance or compliance',
      );
      const noDays = await run(s3Location(newPrefix(), '&object-lock=compliance'));
      expectExit(noDays, 3);
      expect(noDays.stderr).toContain('Add &object-lock-days=N');
      const noMode = await run(s3Location(newPrefix(), '&object-lock-days=30'));
      expectExit(noMode, 3);
      expect(noMode.stderr).toContain('Add &object-lock=governance');
      const tooLong = await run(s3Location(newPrefix(), '&object-lock=compliance&object-lock-days=40000'));
      expectExit(tooLong, 3);
      expect(tooLong.stderr).toContain('from 1 to 36500');
    } finally {
      await repo.cleanup();
    }
  });
});

describe('s3 backend with Object Lock', () => {
  it('locks puts with retain, with an integrity header, and nothing else', async () => {
    const prefix = newPrefix();
    const from = s3Proxy.requests.length;
    await withBackend(
      s3Location(prefix, '&object-lock=compliance&object-lock-days=30'),
      S3_CREDENTIALS,
      async (store) => {
        await store.put('data/ab/pack', Buffer.from('pack bytes'), { retain: true, deferSync: true });
        await store.put('locks/one', Buffer.from('lock'));
        await store.put('config', Buffer.from('config'), {});
      },
    );
    const puts = proxiedSince(s3Proxy, from, `${s3.bucket}/${prefix}/`).filter((r) => r.method === 'PUT');
    const pack = puts.find((r) => r.path.endsWith('/data/ab/pack'))!;
    expect(pack.headers['x-amz-object-lock-mode']).toBe('COMPLIANCE');
    expectDaysAhead(pack.headers['x-amz-object-lock-retain-until-date'], 30);
    expect(pack.headers['content-md5']).toBeDefined();
    for (const unlocked of puts.filter((r) => r !== pack)) {
      expect(headerNames(unlocked, 'x-amz-object-lock-'), unlocked.path).toEqual([]);
    }
    expect(puts).toHaveLength(3);
  });

  it('locks multipart uploads when they start, with a checksum on every part even with checksums=when-required', async () => {
    for (const checksums of ['when-supported', 'when-required']) {
      const prefix = newPrefix();
      const from = s3Proxy.requests.length;
      const big = randomBytes(11 * 1024 * 1024);
      await withBackend(
        s3Location(prefix, `&object-lock=governance&object-lock-days=7&part-size=5&checksums=${checksums}`),
        S3_CREDENTIALS,
        async (store) => {
          await store.put('data/cd/big', big, { retain: true });
          expect((await store.get('data/cd/big')).equals(big)).toBe(true);
          await store.put('index/unlocked-big', big);
        },
      );
      const requests = proxiedSince(s3Proxy, from, `${s3.bucket}/${prefix}/`);
      const lockedCreate = requests.find((r) => r.query.has('uploads') && r.path.endsWith('/data/cd/big'))!;
      expect(lockedCreate.headers['x-amz-object-lock-mode'], checksums).toBe('GOVERNANCE');
      expectDaysAhead(lockedCreate.headers['x-amz-object-lock-retain-until-date'], 7);
      const lockedParts = requests.filter(
        (r) => r.query.has('partNumber') && r.path.endsWith('/data/cd/big'),
      );
      expect(lockedParts).toHaveLength(3);
      for (const part of lockedParts) expect(hasIntegrityHeader(part), checksums).toBe(true);

      const unlocked = requests.filter((r) => r.path.endsWith('/index/unlocked-big'));
      expect(unlocked.some((r) => r.query.has('uploads'))).toBe(true);
      for (const request of unlocked) expect(headerNames(request, 'x-amz-object-lock-')).toEqual([]);
    }
  });

  it('leaves an object whose retention runs and sends no DELETE; deletes it once past', async () => {
    const prefix = newPrefix();
    const objectPath = `${s3.bucket}/${prefix}/data/ef/pack`;
    const until = new Date(Date.now() + 3 * DAY_MS);
    await withBackend(
      s3Location(prefix, '&object-lock=governance&object-lock-days=3'),
      S3_CREDENTIALS,
      async (store) => {
        await store.put('data/ef/pack', Buffer.from('locked'), { retain: true });

        // s3rver keeps no retention: the proxy adds it to its answers, as S3 gives it on HeadObject.
        s3Proxy.setRule((request) =>
          request.method === 'HEAD' && request.path === objectPath
            ? {
                addHeaders: {
                  'x-amz-object-lock-mode': 'GOVERNANCE',
                  'x-amz-object-lock-retain-until-date': until.toISOString(),
                },
              }
            : undefined,
        );
        let from = s3Proxy.requests.length;
        const error = await caught(store.delete('data/ef/pack'));
        expect(error).toBeInstanceOf(ObjectLockedError);
        expect((error as ObjectLockedError).objectName).toBe('data/ef/pack');
        expect((error as ObjectLockedError).retainUntil?.toISOString()).toBe(until.toISOString());
        expect((error as ObjectLockedError).exitCode).toBe(6);
        expect(proxiedSince(s3Proxy, from, objectPath).map((r) => r.method)).toEqual(['HEAD']);
        expect(await store.stat('data/ef/pack')).toEqual({ name: 'data/ef/pack', size: 6 });

        const past = new Date(Date.now() - MINUTE_MS);
        s3Proxy.setRule((request) =>
          request.method === 'HEAD' && request.path === objectPath
            ? {
                addHeaders: {
                  'x-amz-object-lock-mode': 'GOVERNANCE',
                  'x-amz-object-lock-retain-until-date': past.toISOString(),
                },
              }
            : undefined,
        );
        from = s3Proxy.requests.length;
        await store.delete('data/ef/pack');
        expect(proxiedSince(s3Proxy, from, objectPath).map((r) => r.method)).toEqual(['HEAD', 'DELETE']);
        s3Proxy.setRule(undefined);
        expect(await store.stat('data/ef/pack')).toBeUndefined();
        // A missing object needs no DELETE either.
        from = s3Proxy.requests.length;
        await store.delete('data/ef/pack');
        expect(proxiedSince(s3Proxy, from, objectPath).map((r) => r.method)).toEqual(['HEAD']);
      },
    );
  });

  it("takes S3's AccessDenied for a locked object as ObjectLockedError, and other refusals as they are", async () => {
    const prefix = newPrefix();
    const objectPath = `${s3.bucket}/${prefix}/snapshots/one`;
    const refusal = (message: string) => ({
      answer: {
        status: 403,
        headers: { 'Content-Type': 'application/xml' },
        body: `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>${message}</Message></Error>`,
      },
    });
    await withBackend(
      s3Location(prefix, '&object-lock=compliance&object-lock-days=1'),
      S3_CREDENTIALS,
      async (store) => {
        await store.put('snapshots/one', Buffer.from('snapshot'), { retain: true });
        s3Proxy.setRule((request) =>
          request.method === 'DELETE' && request.path === objectPath
            ? refusal('Access Denied because object protected by object lock.')
            : undefined,
        );
        const locked = await caught(store.delete('snapshots/one'));
        expect(locked).toBeInstanceOf(ObjectLockedError);
        expect((locked as ObjectLockedError).retainUntil).toBeUndefined();

        s3Proxy.setRule((request) =>
          request.method === 'DELETE' && request.path === objectPath ? refusal('Access Denied') : undefined,
        );
        const denied = await caught(store.delete('snapshots/one'));
        expect(denied).toBeInstanceOf(AccessDeniedError);
        expect(denied).not.toBeInstanceOf(ObjectLockedError);
        s3Proxy.setRule(undefined);
      },
    );
  });

  it('sends no lock headers and no HEAD before a delete without object-lock', async () => {
    const prefix = newPrefix();
    const from = s3Proxy.requests.length;
    await withBackend(s3Location(prefix), S3_CREDENTIALS, async (store) => {
      await store.put('data/01/pack', Buffer.from('pack'), { retain: true });
      await store.delete('data/01/pack');
    });
    const requests = proxiedSince(s3Proxy, from, `${s3.bucket}/${prefix}/`);
    for (const request of requests) expect(headerNames(request, 'x-amz-object-lock-')).toEqual([]);
    expect(requests.map((r) => r.method)).toEqual(['PUT', 'HEAD', 'DELETE']);
  });
});

describe('the CLI on s3:// with object-lock', () => {
  it('locks packs, index files, snapshots and audit records, and leaves config, key slots and locks changeable', async () => {
    const repo = await tempRepo();
    try {
      const prefix = newPrefix();
      const env = {
        ...repo.env,
        ...S3_CREDENTIALS,
        STRONGBOX_REPO: s3Location(prefix, '&object-lock=governance&object-lock-days=45'),
      };
      const from = s3Proxy.requests.length;
      expectExit(await runCli(['init'], { env }), 0);
      expectExit(await runCli(['backup', 'stdin', '--name', 'dump.sql'], { env, input: 'select 1;\n' }), 0);
      const puts = proxiedSince(s3Proxy, from, `${s3.bucket}/${prefix}/`).filter((r) => r.method === 'PUT');
      const folder = (request: ProxiedRequest) =>
        request.path.slice(`${s3.bucket}/${prefix}/`.length).split('/')[0]!;
      const lockedFolders = new Set(puts.filter((r) => r.headers['x-amz-object-lock-mode']).map(folder));
      const unlockedFolders = new Set(puts.filter((r) => !r.headers['x-amz-object-lock-mode']).map(folder));
      expect([...lockedFolders].sort()).toEqual(['audit', 'data', 'index', 'snapshots']);
      expect([...unlockedFolders].sort()).toEqual(['config', 'keys', 'locks']);
      for (const put of puts.filter((r) => r.headers['x-amz-object-lock-mode'])) {
        expect(put.headers['x-amz-object-lock-mode']).toBe('GOVERNANCE');
        expectDaysAhead(put.headers['x-amz-object-lock-retain-until-date'], 45);
        expect(hasIntegrityHeader(put)).toBe(true);
      }
    } finally {
      await repo.cleanup();
    }
  });
});

describe('azure backend with immutability', () => {
  let container: string;
  beforeAll(async () => {
    container = await azurite.createContainer();
  });

  function azureLocation(prefix: string, extra: Record<string, string> = {}): string {
    const endpoint = `${azureProxy.endpoint}/${AZURITE_ACCOUNT}`;
    const query = new URLSearchParams({ account: AZURITE_ACCOUNT, endpoint, ...extra });
    return `azure://${container}/${prefix}?${query}`;
  }

  it('reads a mode and a number of days, both or neither', async () => {
    const refused: Record<string, string>[] = [
      { immutability: 'forever', 'immutability-days': '30' },
      { immutability: 'locked' },
      { 'immutability-days': '30' },
      { immutability: 'unlocked', 'immutability-days': '0' },
    ];
    for (const bad of refused) {
      await expect(
        openBackend(azureLocation('p', bad), AZURE_CREDENTIALS),
        JSON.stringify(bad),
      ).rejects.toThrow(ConfigError);
    }
  });

  it('puts blobs with retain under a version-level policy, small and in blocks, and others without', async () => {
    const prefix = newPrefix();
    const from = azureProxy.requests.length;
    await withBackend(
      azureLocation(prefix, { immutability: 'unlocked', 'immutability-days': '10' }),
      AZURE_CREDENTIALS,
      async (store) => {
        await store.put('index/small', Buffer.from('index'), { retain: true });
        await store.put('data/ab/big', randomBytes(9 * 1024 * 1024), { retain: true });
        await store.put('locks/one', Buffer.from('lock'));
        await store.put('keys/slot', randomBytes(9 * 1024 * 1024));
      },
    );
    const writes = proxiedSince(azureProxy, from, `${AZURITE_ACCOUNT}/${container}/${prefix}/`).filter(
      (r) => r.method === 'PUT' && r.query.get('comp') !== 'block',
    );
    const policy = (request: ProxiedRequest) => ({
      mode: request.headers['x-ms-immutability-policy-mode'],
      until: request.headers['x-ms-immutability-policy-until-date'],
    });
    const written = (name: string) => writes.filter((r) => r.path.endsWith(`/${name}`));
    for (const name of ['index/small', 'data/ab/big']) {
      expect(written(name), name).toHaveLength(1);
      expect(policy(written(name)[0]!).mode, name).toBe('Unlocked');
      expectDaysAhead(policy(written(name)[0]!).until, 10);
    }
    expect(written('data/ab/big')[0]!.query.get('comp')).toBe('blocklist');
    for (const name of ['locks/one', 'keys/slot']) {
      expect(written(name), name).toHaveLength(1);
      expect(headerNames(written(name)[0]!, 'x-ms-immutability-'), name).toEqual([]);
    }
  });

  it("takes Azure's BlobImmutableDueToPolicy refusal of a delete as ObjectLockedError", async () => {
    const prefix = newPrefix();
    const blobPath = `${AZURITE_ACCOUNT}/${container}/${prefix}/snapshots/one`;
    const until = new Date(Math.floor((Date.now() + 5 * DAY_MS) / 1000) * 1000);
    await withBackend(
      azureLocation(prefix, { immutability: 'locked', 'immutability-days': '5' }),
      AZURE_CREDENTIALS,
      async (store) => {
        await store.put('snapshots/one', Buffer.from('snapshot'), { retain: true });
        // Azurite keeps no policy: the proxy answers as the service does for an immutable blob.
        azureProxy.setRule((request) => {
          if (request.path !== blobPath) return undefined;
          if (request.method === 'DELETE') {
            return {
              answer: {
                status: 409,
                headers: { 'Content-Type': 'application/xml', 'x-ms-error-code': 'BlobImmutableDueToPolicy' },
                body:
                  '<?xml version="1.0" encoding="utf-8"?><Error><Code>BlobImmutableDueToPolicy</Code>' +
                  '<Message>This operation is not permitted as the blob is immutable due to a policy.</Message></Error>',
              },
            };
          }
          if (request.method === 'HEAD') {
            return {
              addHeaders: {
                'x-ms-immutability-policy-until-date': until.toUTCString(),
                'x-ms-immutability-policy-mode': 'locked',
              },
            };
          }
          return undefined;
        });
        const error = await caught(store.delete('snapshots/one'));
        azureProxy.setRule(undefined);
        expect(error).toBeInstanceOf(ObjectLockedError);
        expect((error as ObjectLockedError).objectName).toBe('snapshots/one');
        expect((error as ObjectLockedError).retainUntil?.toISOString()).toBe(until.toISOString());
        expect(await store.stat('snapshots/one')).toEqual({ name: 'snapshots/one', size: 8 });
        await store.delete('snapshots/one');
        expect(await store.stat('snapshots/one')).toBeUndefined();
      },
    );
  });
});
