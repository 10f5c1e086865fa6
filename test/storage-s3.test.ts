import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import {
  CreateMultipartUploadCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsCommand,
  S3Client,
  UploadPartCommand,
} from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConfigError, StorageError } from '../src/errors.ts';
import { ObjectNotFoundError, type StorageBackend } from '../src/storage/backend.ts';
import { openS3Backend, parseS3Location } from '../src/storage/s3.ts';
import { describeBackendConformance } from './helpers/backend-conformance.ts';
import { runCli, startCli, tempRepo, type RunResult, type TempRepo } from './helpers/cli.ts';
import { seededBytes } from './helpers/data.ts';
import { startFaultProxy, type Faults } from './helpers/fault-proxy.ts';
import {
  S3RVER_ACCESS_KEY,
  S3RVER_SECRET_KEY,
  startS3Server,
  type RecordedRequest,
  type S3Server,
} from './helpers/s3-server.ts';

/**
 * s3rver accepts any secret key for its access key (see startS3Server), which lets the tests use
 * a secret of their own and check that it is never printed.
 */
const SECRET_KEY = 'never-printed-Secret-7f3a';
const credentials = { S3_ACCESS_KEY: S3RVER_ACCESS_KEY, S3_SECRET_KEY: SECRET_KEY };

let server: S3Server;
beforeAll(async () => {
  server = await startS3Server();
});
afterAll(() => server?.close());

function newPrefix(): string {
  return `repo-${randomBytes(4).toString('hex')}`;
}

/** An s3:// location on the test server (or on `endpoint`, a proxy in front of it). */
function locationOf(prefix: string, options = '', endpoint = server.endpoint): string {
  return `s3://${server.bucket}/${prefix}?endpoint=${encodeURIComponent(endpoint)}&path-style=true${options}`;
}

function openAt(prefix: string, options = '', endpoint?: string): Promise<StorageBackend> {
  return openS3Backend(new URL(locationOf(prefix, options, endpoint)), credentials);
}

/** A client of our own, to look at the bucket behind the backend's back. */
function inspector(): S3Client {
  return new S3Client({
    region: 'us-east-1',
    endpoint: server.endpoint,
    forcePathStyle: true,
    credentials: { accessKeyId: S3RVER_ACCESS_KEY, secretAccessKey: S3RVER_SECRET_KEY },
  });
}

async function keysUnder(prefix: string): Promise<Map<string, number>> {
  const client = inspector();
  try {
    const keys = new Map<string, number>();
    let marker: string | undefined;
    do {
      const page = await client.send(
        new ListObjectsCommand({ Bucket: server.bucket, Prefix: `${prefix}/`, Marker: marker }),
      );
      for (const object of page.Contents ?? []) keys.set(object.Key!.slice(prefix.length + 1), object.Size!);
      marker = page.IsTruncated ? page.Contents?.at(-1)?.Key : undefined;
    } while (marker);
    return keys;
  } finally {
    client.destroy();
  }
}

async function openUploadsUnder(prefix: string): Promise<string[]> {
  const client = inspector();
  try {
    const listed = await client.send(
      new ListMultipartUploadsCommand({ Bucket: server.bucket, Prefix: prefix }),
    );
    return (listed.Uploads ?? []).map((upload) => upload.Key!);
  } finally {
    client.destroy();
  }
}

/** Requests received since `from` (an index into server.requests) whose path starts with `pathPrefix`. */
function requestsSince(from: number, pathPrefix: string): RecordedRequest[] {
  return server.requests.slice(from).filter((request) => request.path.startsWith(pathPrefix));
}

describe('s3:// locations', () => {
  it('read the bucket and prefix from the URL, or from S3_BUCKET and S3_PREFIX', () => {
    expect(parseS3Location(new URL('s3://my-bucket/backups/db1/'), {})).toMatchObject({
      bucket: 'my-bucket',
      prefix: 'backups/db1/',
      region: undefined,
      endpoint: undefined,
      forcePathStyle: false,
      concurrency: 4,
      checksums: 'WHEN_SUPPORTED',
      partSize: 16 * 1024 * 1024,
    });
    expect(parseS3Location(new URL('s3://my-bucket'), { S3_PREFIX: 'ignored' }).prefix).toBe('');
    expect(
      parseS3Location(new URL('s3:///from-url'), { S3_BUCKET: 'env-bucket', S3_PREFIX: 'x' }),
    ).toMatchObject({
      bucket: 'env-bucket',
      prefix: 'from-url/',
    });
    expect(parseS3Location(new URL('s3://'), { S3_BUCKET: 'env-bucket', S3_PREFIX: '/a/b/' })).toMatchObject({
      bucket: 'env-bucket',
      prefix: 'a/b/',
    });
    expect(() => parseS3Location(new URL('s3:///prefix'), {})).toThrow(ConfigError);
  });

  it('take the region and endpoint from the query, then from the environment', () => {
    const env = { S3_REGION: 'eu-west-3', S3_ENDPOINT: 'minio.internal:9000', AWS_REGION: 'us-west-2' };
    expect(parseS3Location(new URL('s3://b/p'), env)).toMatchObject({
      region: 'eu-west-3',
      endpoint: 'https://minio.internal:9000',
      forcePathStyle: true,
    });
    expect(parseS3Location(new URL('s3://b/p'), { AWS_REGION: 'us-west-2' }).region).toBe('us-west-2');
    const query = parseS3Location(
      new URL('s3://b/p?region=ap-south-1&endpoint=http%3A%2F%2F127.0.0.1%3A9000&path-style=false'),
      env,
    );
    expect(query).toMatchObject({
      region: 'ap-south-1',
      endpoint: 'http://127.0.0.1:9000',
      forcePathStyle: false,
    });
    expect(parseS3Location(new URL('s3://b/p?endpoint=https%3A%2F%2Fs3.example.com'), {}).region).toBe(
      'us-east-1',
    );
  });

  it('read storage class, encryption, checksums, concurrency and timeout', () => {
    expect(
      parseS3Location(
        new URL(
          's3://b/p?storage-class=standard_ia&sse=AES256&checksums=when-required&concurrency=8&timeout=5&part-size=5',
        ),
        {},
      ),
    ).toMatchObject({
      dataStorageClass: 'STANDARD_IA',
      encryption: { ServerSideEncryption: 'AES256' },
      checksums: 'WHEN_REQUIRED',
      concurrency: 8,
      timeoutMs: 5000,
      partSize: 5 * 1024 * 1024,
    });
    expect(parseS3Location(new URL('s3://b/p?sse=aws:kms'), {}).encryption).toEqual({
      ServerSideEncryption: 'aws:kms',
    });
    expect(parseS3Location(new URL('s3://b/p?kms-key-id=alias%2Fbackups'), {}).encryption).toEqual({
      ServerSideEncryption: 'aws:kms',
      SSEKMSKeyId: 'alias/backups',
    });
  });

  it('refuse unknown or malformed options and credentials in the URL', () => {
    for (const bad of [
      's3://b/p?regoin=x',
      's3://b/p?sse=aes',
      's3://b/p?sse=AES256&kms-key-id=k',
      's3://b/p?concurrency=0',
      's3://b/p?part-size=4',
      's3://b/p%zz',
      's3://b/p?path-style=yes',
      's3://b/p?checksums=never',
      's3://b/p?storage-class=a-b',
      's3://b/p?endpoint=ftp%3A%2F%2Fhost',
    ]) {
      expect(() => parseS3Location(new URL(bad), {}), bad).toThrow(ConfigError);
    }
    expect(() => parseS3Location(new URL('s3://'), { S3_BUCKET: 'b', S3_PREFIX: 'a/../b' })).toThrow(
      ConfigError,
    );
    let message = '';
    try {
      parseS3Location(new URL('s3://AKIDEXAMPLE:hunter2secret@b/p'), {});
    } catch (error) {
      message = `${(error as ConfigError).message} ${(error as ConfigError).hint}`;
    }
    expect(message).toContain('must not contain credentials');
    expect(message).not.toContain('hunter2secret');
  });

  it('need both S3 keys or neither', async () => {
    await expect(openS3Backend(new URL('s3://b/p?region=x'), { S3_ACCESS_KEY: 'a' })).rejects.toThrow(
      /S3_SECRET_KEY is not set/,
    );
  });
});

describeBackendConformance('s3 (s3rver)', () => openAt(newPrefix()));

describe('s3 backend on s3rver', () => {
  it('names its location without secrets and takes its concurrency from the query', async () => {
    const prefix = newPrefix();
    const store = await openAt(prefix, '&concurrency=7');
    try {
      expect(store.location).toBe(`s3://${server.bucket}/${prefix}`);
      expect(store.concurrency).toBe(7);
    } finally {
      await store.close();
    }
  });

  it('sends the storage class for packs only, encryption for everything, and a checksum', async () => {
    const prefix = newPrefix();
    const store = await openAt(prefix, '&storage-class=STANDARD_IA&sse=AES256');
    const from = server.requests.length;
    try {
      await store.put('data/ab/pack', Buffer.from('pack bytes'));
      await store.put('index/one', Buffer.from('index bytes'));
    } finally {
      await store.close();
    }
    const puts = requestsSince(from, `${server.bucket}/${prefix}/`).filter((r) => r.method === 'PUT');
    const pack = puts.find((r) => r.path.endsWith('/data/ab/pack'))!;
    const index = puts.find((r) => r.path.endsWith('/index/one'))!;
    expect(pack.headers['x-amz-storage-class']).toBe('STANDARD_IA');
    expect(index.headers['x-amz-storage-class']).toBeUndefined();
    for (const request of [pack, index]) {
      expect(request.headers['x-amz-server-side-encryption']).toBe('AES256');
      expect(request.headers['content-md5']).toMatch(/^[A-Za-z0-9+/]{22}==$/);
      expect(request.headers['x-amz-checksum-crc32']).toBeDefined();
    }
    // s3rver keeps the storage class, so it shows on HeadObject; it keeps no encryption setting,
    // so encryption can only be checked in the requests above.
    const client = inspector();
    try {
      const head = (name: string) =>
        client.send(new HeadObjectCommand({ Bucket: server.bucket, Key: `${prefix}/${name}` }));
      expect((await head('data/ab/pack')).StorageClass).toBe('STANDARD_IA');
      expect((await head('index/one')).StorageClass).toBeUndefined();
    } finally {
      client.destroy();
    }
  });

  it('sends SSE-KMS with its key id, and only Content-MD5 with checksums=when-required', async () => {
    const prefix = newPrefix();
    const store = await openAt(prefix, '&sse=aws:kms&kms-key-id=alias%2Fbackups&checksums=when-required');
    const from = server.requests.length;
    try {
      await store.put('keys/k', Buffer.from('key slot'));
    } finally {
      await store.close();
    }
    const put = requestsSince(from, `${server.bucket}/${prefix}/keys/k`).find((r) => r.method === 'PUT')!;
    expect(put.headers['x-amz-server-side-encryption']).toBe('aws:kms');
    expect(put.headers['x-amz-server-side-encryption-aws-kms-key-id']).toBe('alias/backups');
    expect(put.headers['content-md5']).toBeDefined();
    expect(Object.keys(put.headers).filter((name) => name.startsWith('x-amz-checksum-'))).toEqual([]);
  });

  it('uploads big objects in parts, with the storage class on the multipart upload', async () => {
    const prefix = newPrefix();
    const store = await openAt(prefix, '&storage-class=STANDARD_IA&sse=AES256&part-size=8');
    const big = randomBytes(17 * 1024 * 1024 + 5);
    const from = server.requests.length;
    try {
      await store.put('data/cd/big', big);
      expect((await store.get('data/cd/big')).equals(big)).toBe(true);
    } finally {
      await store.close();
    }
    const requests = requestsSince(from, `${server.bucket}/${prefix}/data/cd/big`);
    const create = requests.find((r) => r.method === 'POST' && r.query.has('uploads'))!;
    expect(create.headers['x-amz-storage-class']).toBe('STANDARD_IA');
    expect(create.headers['x-amz-server-side-encryption']).toBe('AES256');
    expect(requests.filter((r) => r.method === 'PUT' && r.query.has('partNumber'))).toHaveLength(3);
    expect(await openUploadsUnder(`${prefix}/`)).toEqual([]);
  });

  it('aborts a multipart upload that fails', async () => {
    const prefix = newPrefix();
    // s3rver accepts any storage class when the upload starts and refuses this one at completion.
    const store = await openAt(prefix, '&storage-class=NO_SUCH_CLASS');
    const from = server.requests.length;
    try {
      const failure = store.put('data/ef/big', randomBytes(17 * 1024 * 1024));
      await expect(failure).rejects.toBeInstanceOf(StorageError);
      await expect(failure).rejects.toThrow(/InvalidStorageClass/);
    } finally {
      await store.close();
    }
    const requests = requestsSince(from, `${server.bucket}/${prefix}/`);
    expect(requests.some((r) => r.method === 'DELETE' && r.query.has('uploadId'))).toBe(true);
    expect(await openUploadsUnder(`${prefix}/`)).toEqual([]);
    expect([...(await keysUnder(prefix)).keys()]).toEqual([]);
  });

  it('removes incomplete multipart uploads begun before a time, under its prefix only', async () => {
    const prefix = newPrefix();
    const elsewhere = newPrefix();
    const client = inspector();
    const store = await openAt(prefix);
    try {
      for (const key of [`${prefix}/data/12/abandoned`, `${elsewhere}/data/12/not-ours`]) {
        const { UploadId } = await client.send(
          new CreateMultipartUploadCommand({ Bucket: server.bucket, Key: key }),
        );
        await client.send(
          new UploadPartCommand({
            Bucket: server.bucket,
            Key: key,
            UploadId,
            PartNumber: 1,
            Body: randomBytes(1000),
          }),
        );
      }
      expect(await store.removeIncompleteUploads(new Date(Date.now() - 60 * 60 * 1000))).toBe(0);
      expect(await openUploadsUnder(`${prefix}/`)).toEqual([`${prefix}/data/12/abandoned`]);
      expect(await store.removeIncompleteUploads(new Date(Date.now() + 60 * 1000))).toBe(1);
      expect(await openUploadsUnder(`${prefix}/`)).toEqual([]);
      expect(await openUploadsUnder(`${elsewhere}/`)).toEqual([`${elsewhere}/data/12/not-ours`]);
    } finally {
      await store.close();
      client.destroy();
    }
  });

  it('fails at once, with a hint, on a missing bucket or an unknown access key', async () => {
    const missing = await openS3Backend(
      new URL(`s3://no-such-bucket/p?endpoint=${encodeURIComponent(server.endpoint)}`),
      credentials,
    );
    const from = server.requests.length;
    try {
      const error = await missing.get('config').then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(StorageError);
      expect(error).not.toBeInstanceOf(ObjectNotFoundError);
      expect((error as StorageError).exitCode).toBe(6);
      expect((error as StorageError).message).toBe(
        'cannot read config in s3://no-such-bucket/p: NoSuchBucket (HTTP 404)',
      );
      expect((error as StorageError).hint).toMatch(/^Bucket no-such-bucket does not exist/);
    } finally {
      await missing.close();
    }
    // No retry of a permanent error, by the SDK or by us.
    expect(requestsSince(from, 'no-such-bucket/')).toHaveLength(1);

    const prefix = newPrefix();
    const stranger = await openS3Backend(new URL(locationOf(prefix)), {
      S3_ACCESS_KEY: 'NOT-A-KEY',
      S3_SECRET_KEY: SECRET_KEY,
    });
    const before = server.requests.length;
    try {
      const error = await stranger.put('config', Buffer.from('x')).then(
        () => undefined,
        (caught: unknown) => caught,
      );
      expect(error).toBeInstanceOf(StorageError);
      expect((error as StorageError).message).toContain('InvalidAccessKeyId (HTTP 403)');
      expect((error as StorageError).hint).toContain('S3_ACCESS_KEY and S3_SECRET_KEY');
    } finally {
      await stranger.close();
    }
    expect(requestsSince(before, `${server.bucket}/${prefix}/`)).toHaveLength(1);
  });

  it('retries server errors, throttling, cut transfers and stalled connections', async () => {
    const proxy = await startFaultProxy({ host: server.host, port: server.port }, {}, 7);
    const prefix = newPrefix();
    const data = randomBytes(3 * 1024 * 1024);
    // Faults strike new connections only: each step opens a new backend, whose client has none yet.
    const step = async <T>(faults: Faults, action: (store: StorageBackend) => Promise<T>): Promise<T> => {
      const store = await openAt(prefix, '&timeout=1', `http://${proxy.host}:${proxy.port}`);
      try {
        proxy.setFaults(faults);
        return await action(store);
      } finally {
        await store.close();
      }
    };
    try {
      await step({ httpError: 1, httpErrorStatus: 503, firstConnections: 4 }, (store) =>
        store.put('data/aa/one', data),
      );
      const whole = await step({ httpError: 1, httpErrorStatus: 429, firstConnections: 4 }, (store) =>
        store.get('data/aa/one'),
      );
      expect(whole.equals(data)).toBe(true);
      const range = await step(
        { cutMidTransfer: 1, cutDirection: 'downstream', cutAfterMaxBytes: 100_000, firstConnections: 4 },
        (store) => store.getRange('data/aa/one', 1000, 2_000_000),
      );
      expect(range.equals(data.subarray(1000, 2_001_000))).toBe(true);
      const info = await step({ stall: 1, firstConnections: 1 }, (store) => store.stat('data/aa/one'));
      expect(info).toEqual({ name: 'data/aa/one', size: data.length });
      expect(proxy.stats.byKind).toMatchObject({ httpError: 8, cut: 4, stall: 1 });
    } finally {
      await proxy.close();
    }
  });
});

/** Runs the binary against `repo` with the S3 credentials. */
function cli(repo: TempRepo, args: string[], options: { input?: Buffer | string } = {}): Promise<RunResult> {
  return runCli(args, { ...options, env: { ...repo.env, ...credentials } });
}

function expectExit(result: RunResult, code: number): void {
  expect({ code: result.code, stderr: result.stderr }).toMatchObject({ code });
}

async function writeSourceTree(root: string): Promise<Map<string, Buffer>> {
  const files = new Map<string, Buffer>([
    ['big.bin', seededBytes('s3/big', 2_500_000)],
    ['nested/app.conf', Buffer.from('listen = 8080\n')],
    ['empty', Buffer.alloc(0)],
  ]);
  for (const [name, content] of files) {
    await fs.mkdir(path.dirname(path.join(root, name)), { recursive: true });
    await fs.writeFile(path.join(root, name), content);
  }
  return files;
}

describe('the CLI on s3rver', () => {
  let repo: TempRepo;
  const outputs: RunResult[] = [];
  beforeAll(async () => {
    repo = await tempRepo();
  });
  afterAll(() => repo?.cleanup());

  it('initialises, backs up files and stdin, restores them byte for byte and checks every pack', async () => {
    const prefix = newPrefix();
    repo.env.STRONGBOX_REPO = locationOf(prefix);
    const run = async (args: string[], input?: Buffer) => {
      const result = await cli(repo, args, input ? { input } : {});
      outputs.push(result);
      expectExit(result, 0);
      return result;
    };
    const init = await run(['init', '--pack-size', '1']);
    expect(init.stderr).toContain(`at s3://${server.bucket}/${prefix}\n`);

    const source = path.join(repo.dir, 'source');
    const files = await writeSourceTree(source);
    await run(['backup', 'files', source]);
    const dump = seededBytes('s3/stdin', 1_500_000);
    await run(['backup', 'stdin', '--name', 'dump.bin'], dump);
    const snapshots = JSON.parse((await run(['snapshots', '--json'])).stdout.toString()) as {
      kind: string;
    }[];
    expect(snapshots.map((snapshot) => snapshot.kind)).toEqual(['files', 'stdin']);

    const target = path.join(repo.dir, 'restored');
    await run(['restore', 'files', 'latest', '--kind', 'files', '--target', target]);
    for (const [name, content] of files) {
      expect((await fs.readFile(path.join(target, source, name))).equals(content), name).toBe(true);
    }
    expect((await run(['cat', 'latest'])).stdout.equals(dump)).toBe(true);
    expect((await run(['check', '--read-data'])).stderr).toContain('no errors were found');

    const folders = new Set([...(await keysUnder(prefix)).keys()].map((key) => key.split('/')[0]));
    expect([...folders].sort()).toEqual(['audit', 'config', 'data', 'index', 'keys', 'results', 'snapshots']);
    for (const result of outputs) {
      expect(result.stderr + result.stdout.toString('latin1')).not.toContain(SECRET_KEY);
    }
  });

  it('completes backups through resets, cuts, delays, stalls and server errors', async () => {
    const proxy = await startFaultProxy({ host: server.host, port: server.port }, {}, 42);
    try {
      const prefix = newPrefix();
      const clean = locationOf(prefix);
      const faulty = locationOf(prefix, '&timeout=1', `http://${proxy.host}:${proxy.port}`);
      repo.env.STRONGBOX_REPO = clean;
      expectExit(await cli(repo, ['init', '--pack-size', '1']), 0);

      repo.env.STRONGBOX_REPO = faulty;
      const first = seededBytes('s3/faults/1', 4_000_000);
      proxy.setFaults({
        resetOnConnect: 0.2,
        cutMidTransfer: 0.3,
        delayMs: 1,
        httpError: 0.2,
        httpErrorStatus: 503,
      });
      expectExit(await cli(repo, ['backup', 'stdin', '--name', 'first.bin'], { input: first }), 0);
      const second = seededBytes('s3/faults/2', 3_000_000);
      proxy.setFaults({ stall: 0.1, resetOnConnect: 0.2, httpError: 0.3, httpErrorStatus: 429 });
      expectExit(await cli(repo, ['backup', 'stdin', '--name', 'second.bin'], { input: second }), 0);
      // The draws are seeded, but which connections they strike moves with every request the
      // commands make: each kind of fault also strikes the first connections of a backup of its own.
      const third = seededBytes('s3/faults/3', 1_500_000);
      for (const faults of [
        { resetOnConnect: 1 },
        { cutMidTransfer: 1, cutAfterMaxBytes: 4096 },
        { httpError: 1, httpErrorStatus: 503 },
      ]) {
        proxy.setFaults({ ...faults, firstConnections: 2 });
        expectExit(await cli(repo, ['backup', 'stdin', '--name', 'third.bin'], { input: third }), 0);
      }
      expect(proxy.stats.faultsInjected).toBeGreaterThan(0);
      expect(proxy.stats.byKind.reset).toBeGreaterThan(0);
      expect(proxy.stats.byKind.cut).toBeGreaterThan(0);
      expect(proxy.stats.byKind.httpError).toBeGreaterThan(0);

      repo.env.STRONGBOX_REPO = clean;
      const checked = await cli(repo, ['check', '--read-data']);
      expectExit(checked, 0);
      expect(checked.stderr).toContain('no errors were found');
      const ids = JSON.parse((await cli(repo, ['snapshots', '--json'])).stdout.toString()) as {
        id: string;
      }[];
      expect(ids).toHaveLength(5);
      expect((await cli(repo, ['cat', ids[0]!.id])).stdout.equals(first)).toBe(true);
      expect((await cli(repo, ['cat', ids[1]!.id])).stdout.equals(second)).toBe(true);
      for (const { id } of ids.slice(2))
        expect((await cli(repo, ['cat', id])).stdout.equals(third)).toBe(true);
    } finally {
      await proxy.close();
    }
  });

  it('exits 6 at once on a missing bucket or an unknown access key', async () => {
    const missingBucket = await runCli(['snapshots'], {
      env: {
        ...repo.env,
        ...credentials,
        STRONGBOX_REPO: `s3://no-such-bucket/x?endpoint=${encodeURIComponent(server.endpoint)}`,
      },
    });
    expectExit(missingBucket, 6);
    expect(missingBucket.stderr).toMatch(
      /^strongbox: cannot read config in s3:\/\/no-such-bucket\/x: NoSuchBucket \(HTTP 404\)\n {2}Bucket no-such-bucket does not exist/,
    );

    const prefix = newPrefix();
    const from = server.requests.length;
    const unknownKey = await runCli(['init'], {
      env: {
        ...repo.env,
        S3_ACCESS_KEY: 'NOT-A-KEY',
        S3_SECRET_KEY: SECRET_KEY,
        STRONGBOX_REPO: locationOf(prefix),
      },
    });
    expectExit(unknownKey, 6);
    // init starts with a HEAD request, whose refusal carries no error code.
    expect(unknownKey.stderr).toMatch(/^strongbox: cannot stat config in s3:\/\/\S+: HTTP 403\n/);
    expect(unknownKey.stderr).toContain('S3_ACCESS_KEY and S3_SECRET_KEY');
    expect(unknownKey.stderr).not.toContain(SECRET_KEY);
    expect(unknownKey.stderr.trimEnd().split('\n')).toHaveLength(2);
    expect(requestsSince(from, `${server.bucket}/${prefix}`)).toHaveLength(1);
  });

  it('exits 3 when no region is set for AWS itself', async () => {
    const result = await runCli(['snapshots'], {
      env: {
        ...repo.env,
        ...credentials,
        STRONGBOX_REPO: 's3://some-bucket/backups',
        // Nothing from this machine's AWS setup may supply a region.
        HOME: repo.dir,
        AWS_REGION: undefined,
        AWS_DEFAULT_REGION: undefined,
        AWS_PROFILE: undefined,
        AWS_CONFIG_FILE: path.join(repo.dir, 'no-aws-config'),
      },
    });
    expectExit(result, 3);
    expect(result.stderr).toBe(
      'strongbox: no region is set for s3://some-bucket/backups\n' +
        '  Add ?region=… to the location, or set S3_REGION or AWS_REGION.\n',
    );
  });

  it('leaves no snapshot and no visible partial object when killed mid-upload; unlock removes the rest', async () => {
    // The proxy only slows transfers down, so that the kill lands while a pack is in flight.
    const proxy = await startFaultProxy({ host: server.host, port: server.port }, { delayMs: 2 });
    try {
      const prefix = newPrefix();
      repo.env.STRONGBOX_REPO = locationOf(prefix);
      // Packs of 6 MiB go up in 5 MiB parts: the kill leaves a multipart upload open.
      expectExit(await cli(repo, ['init', '--pack-size', '6']), 0);
      expectExit(await cli(repo, ['backup', 'stdin', '--name', 'kept.bin'], { input: 'kept\n' }), 0);

      const from = server.requests.length;
      const source = path.join(repo.dir, 'incompressible.bin');
      // Every packing thread (one per CPU) must fill a whole pack.
      await fs.writeFile(source, randomBytes((os.availableParallelism() + 1) * 9 * 1024 * 1024));
      const child = startCli(['backup', 'files', source], {
        env: {
          ...repo.env,
          ...credentials,
          STRONGBOX_REPO: locationOf(prefix, '&part-size=5', `http://${proxy.host}:${proxy.port}`),
        },
      });
      let stderr = '';
      child.stderr!.on('data', (data: Buffer) => (stderr += data.toString()));
      const exited = new Promise((resolve) => child.once('close', resolve));
      while (
        !requestsSince(from, `${server.bucket}/${prefix}/data/`).some((r) => r.query.has('partNumber'))
      ) {
        if (child.exitCode !== null) throw new Error(`the backup ended before it uploaded a part: ${stderr}`);
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      process.kill(-child.pid!, 'SIGKILL');
      await exited;

      const listed = JSON.parse((await cli(repo, ['snapshots', '--json'])).stdout.toString()) as {
        name: string;
      }[];
      expect(listed.map((snapshot) => snapshot.name)).toEqual(['kept.bin']);
      // Whatever the killed process had begun is either complete in the listing or absent from it.
      const keys = await keysUnder(prefix);
      for (const request of requestsSince(from, `${server.bucket}/${prefix}/`)) {
        const name = request.path.slice(`${server.bucket}/${prefix}/`.length);
        if (request.method === 'PUT' && !request.query.has('partNumber') && keys.has(name)) {
          expect(keys.get(name), name).toBe(Number(request.headers['content-length']));
        }
      }
      expect((await openUploadsUnder(`${prefix}/`)).length).toBeGreaterThan(0);

      const unlocked = await cli(repo, ['unlock', '--json']);
      expectExit(unlocked, 0);
      expect(JSON.parse(unlocked.stdout.toString()).incompleteUploads).toBeGreaterThan(0);
      expect(await openUploadsUnder(`${prefix}/`)).toEqual([]);
      const checked = await cli(repo, ['check', '--read-data']);
      expectExit(checked, 0);
      expect(checked.stderr).toContain('no errors were found');
    } finally {
      await proxy.close();
    }
    // 27 MiB through a slowed proxy: 8 s alone, 23 s on two cores busy elsewhere, past a minute beside
    // a benchmark writing to the same disk.
  }, 180_000);
});
