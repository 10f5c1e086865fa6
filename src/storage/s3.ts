import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsCommand,
  PutObjectCommand,
  S3Client,
  type GetObjectCommandOutput,
  type HeadObjectCommandOutput,
  type PutObjectCommandInput,
  type StorageClass,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { ConfigError, StorageError, StrongboxError } from '../errors.ts';
import {
  AccessDeniedError,
  ObjectLockedError,
  ObjectNotFoundError,
  type ObjectInfo,
  type PutOptions,
  type StorageBackend,
} from './backend.ts';
import { retainUntil, retentionOption, type Retention } from './retention.ts';
import { isTransientHttpStatus, isTransientNetworkError, withRetries } from './retry.ts';
import { DEFAULT_CONCURRENCY, MAX_CONCURRENCY, wholeNumberOption } from './url-options.ts';

const MIB = 1024 * 1024;
/** Objects larger than one part go up in parts, so that a failed part is resent alone. */
const DEFAULT_PART_SIZE_MIB = 16;
/** S3 refuses parts smaller than 5 MiB (the last one excepted). */
const MIN_PART_SIZE_MIB = 5;
/** S3's largest part: 5 GiB. */
const MAX_PART_SIZE_MIB = 5120;
const PARTS_IN_FLIGHT = 2;
/** Attempts the SDK makes for each HTTP request before our own, slower retries take over. */
const SDK_ATTEMPTS = 3;
const DEFAULT_TIMEOUT_SECONDS = 60;
const MAX_TIMEOUT_SECONDS = 3600;
const CONNECT_TIMEOUT_MS = 10_000;
/** Region signed for when a custom endpoint is given and nothing names one: what most S3-compatible services expect. */
const FALLBACK_REGION = 'us-east-1';

const QUERY_OPTIONS = [
  'region',
  'endpoint',
  'path-style',
  'storage-class',
  'sse',
  'kms-key-id',
  'checksums',
  'concurrency',
  'timeout',
  'part-size',
  'object-lock',
  'object-lock-days',
] as const;

const OBJECT_LOCK_MODES = ['governance', 'compliance'] as const;
type ObjectLockMode = (typeof OBJECT_LOCK_MODES)[number];

type Encryption =
  { ServerSideEncryption: 'AES256' } | { ServerSideEncryption: 'aws:kms'; SSEKMSKeyId?: string } | undefined;

/** Everything an `s3://` location says, from its URL and the environment; holds no secret. */
export interface S3Settings {
  bucket: string;
  /** Empty, or ends with `/`. */
  prefix: string;
  region: string | undefined;
  endpoint: string | undefined;
  forcePathStyle: boolean;
  /** For objects under `data/` (packs) only; everything else stays STANDARD. */
  dataStorageClass: StorageClass | undefined;
  encryption: Encryption;
  checksums: 'WHEN_SUPPORTED' | 'WHEN_REQUIRED';
  concurrency: number;
  timeoutMs: number;
  /** Objects larger than this are uploaded in parts of this size. */
  partSize: number;
  /** The Object Lock retention of objects put with `retain`; undefined: nothing is locked. */
  objectLock: Retention<ObjectLockMode> | undefined;
}

/**
 * Reads `s3://bucket/prefix?options`. A URL without a bucket (`s3://` or `s3:///prefix`) takes
 * the bucket from S3_BUCKET and, when it has no path either, the prefix from S3_PREFIX.
 */
export function parseS3Location(url: URL, env: NodeJS.ProcessEnv): S3Settings {
  if (url.username || url.password) {
    throw new ConfigError('an s3:// location must not contain credentials', {
      hint: 'Set S3_ACCESS_KEY and S3_SECRET_KEY (or AWS_ACCESS_KEY_ID, AWS_PROFILE…) in the environment.',
    });
  }
  const query = url.searchParams;
  for (const key of query.keys()) {
    if (!(QUERY_OPTIONS as readonly string[]).includes(key)) {
      throw new ConfigError(`unknown option ${key} in the s3:// location`, {
        hint: `Known options: ${QUERY_OPTIONS.join(', ')}.`,
      });
    }
  }
  const option = (key: (typeof QUERY_OPTIONS)[number]): string | undefined => query.get(key) || undefined;

  const urlBucket = decodeOrRefuse(url.hostname, url);
  const urlPath = decodeOrRefuse(url.pathname, url).replace(/^\/+|\/+$/g, '');
  const bucket = urlBucket || env.S3_BUCKET;
  if (!bucket) {
    throw new ConfigError('the s3:// location names no bucket', {
      hint: 'Use s3://BUCKET/PREFIX, or set S3_BUCKET.',
    });
  }
  const rawPrefix = urlBucket || urlPath ? urlPath : (env.S3_PREFIX ?? '').replace(/^\/+|\/+$/g, '');
  if (rawPrefix.split('/').some((segment) => segment === '.' || segment === '..')) {
    throw new ConfigError(`the s3:// prefix ${rawPrefix} contains . or .. segments`);
  }
  const prefix = rawPrefix ? `${rawPrefix}/` : '';

  const endpoint = parseEndpoint(option('endpoint') ?? (env.S3_ENDPOINT || undefined));
  const region = option('region') ?? (env.S3_REGION || env.AWS_REGION || undefined);
  const pathStyle = option('path-style');
  if (pathStyle !== undefined && pathStyle !== 'true' && pathStyle !== 'false') {
    throw new ConfigError(`path-style=${pathStyle} must be true or false`);
  }
  const checksums = option('checksums') ?? 'when-supported';
  if (checksums !== 'when-supported' && checksums !== 'when-required') {
    throw new ConfigError(`checksums=${checksums} must be when-supported or when-required`);
  }
  return {
    bucket,
    prefix,
    region: region ?? (endpoint ? FALLBACK_REGION : undefined),
    endpoint,
    // S3-compatible services are reached reliably by path; AWS itself by virtual host.
    forcePathStyle: pathStyle === undefined ? endpoint !== undefined : pathStyle === 'true',
    dataStorageClass: parseStorageClass(option('storage-class')),
    encryption: parseEncryption(option('sse'), option('kms-key-id')),
    checksums: checksums === 'when-required' ? 'WHEN_REQUIRED' : 'WHEN_SUPPORTED',
    concurrency: wholeNumberOption('s3', 'concurrency', option('concurrency'), {
      fallback: DEFAULT_CONCURRENCY,
      min: 1,
      max: MAX_CONCURRENCY,
    }),
    timeoutMs:
      1000 *
      wholeNumberOption('s3', 'timeout', option('timeout'), {
        fallback: DEFAULT_TIMEOUT_SECONDS,
        min: 1,
        max: MAX_TIMEOUT_SECONDS,
      }),
    partSize:
      MIB *
      wholeNumberOption('s3', 'part-size', option('part-size'), {
        fallback: DEFAULT_PART_SIZE_MIB,
        min: MIN_PART_SIZE_MIB,
        max: MAX_PART_SIZE_MIB,
      }),
    objectLock: retentionOption(
      's3',
      query,
      { mode: 'object-lock', days: 'object-lock-days' },
      OBJECT_LOCK_MODES,
    ),
  };
}

function decodeOrRefuse(text: string, url: URL): string {
  try {
    return decodeURIComponent(text);
  } catch (error) {
    throw new ConfigError(`the s3:// location s3://${url.host}${url.pathname} has a malformed %-escape`, {
      cause: error,
    });
  }
}

function parseEndpoint(value: string | undefined): string | undefined {
  if (!value) return undefined;
  let endpoint: URL;
  try {
    endpoint = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `https://${value}`);
  } catch {
    // Not echoed: a malformed endpoint may still hold a credential.
    throw new ConfigError('the S3 endpoint is not a URL', {
      hint: 'Give it as https://host[:port] (URL-encoded inside the location: endpoint=https%3A%2F%2Fhost).',
    });
  }
  if (endpoint.protocol !== 'http:' && endpoint.protocol !== 'https:') {
    throw new ConfigError(
      `the S3 endpoint must be an http:// or https:// URL, not ${endpoint.protocol}// (${endpoint.host})`,
    );
  }
  if (endpoint.username || endpoint.password) {
    throw new ConfigError('the S3 endpoint must not contain credentials', {
      hint: 'Set S3_ACCESS_KEY and S3_SECRET_KEY in the environment.',
    });
  }
  return endpoint.pathname === '/' ? endpoint.origin : endpoint.href;
}

function parseStorageClass(value: string | undefined): StorageClass | undefined {
  if (value === undefined) return undefined;
  const storageClass = value.toUpperCase();
  if (!/^[A-Z][A-Z0-9_]*$/.test(storageClass)) {
    throw new ConfigError(`storage-class=${value} is not a storage class`, {
      hint: 'For example storage-class=STANDARD_IA, ONEZONE_IA, INTELLIGENT_TIERING or GLACIER_IR.',
    });
  }
  return storageClass as StorageClass;
}

function parseEncryption(sse: string | undefined, kmsKeyId: string | undefined): Encryption {
  if (sse === undefined && kmsKeyId === undefined) return undefined;
  if (sse === 'AES256') {
    if (kmsKeyId !== undefined) {
      throw new ConfigError('kms-key-id needs sse=aws:kms, not sse=AES256');
    }
    return { ServerSideEncryption: 'AES256' };
  }
  if (sse === undefined || sse === 'aws:kms') {
    return kmsKeyId === undefined
      ? { ServerSideEncryption: 'aws:kms' }
      : { ServerSideEncryption: 'aws:kms', SSEKMSKeyId: kmsKeyId };
  }
  throw new ConfigError(`sse=${sse} must be AES256 or aws:kms`);
}

/** Static keys from S3_ACCESS_KEY / S3_SECRET_KEY, or undefined for the SDK's own chain. */
function explicitCredentials(
  env: NodeJS.ProcessEnv,
): { accessKeyId: string; secretAccessKey: string } | undefined {
  const accessKeyId = env.S3_ACCESS_KEY;
  const secretAccessKey = env.S3_SECRET_KEY;
  if (!accessKeyId && !secretAccessKey) return undefined;
  if (!accessKeyId || !secretAccessKey) {
    throw new ConfigError(`S3_${accessKeyId ? 'SECRET_KEY' : 'ACCESS_KEY'} is not set`, {
      hint: 'Set both S3_ACCESS_KEY and S3_SECRET_KEY, or neither to use the AWS credential chain.',
    });
  }
  return { accessKeyId, secretAccessKey };
}

/**
 * Opens the repository at `s3://bucket/prefix`. Credentials come from S3_ACCESS_KEY and
 * S3_SECRET_KEY, or else the AWS SDK's chain (AWS_ACCESS_KEY_ID…, AWS_PROFILE, SSO, instance roles).
 */
export async function openS3Backend(url: URL, env: NodeJS.ProcessEnv): Promise<StorageBackend> {
  const settings = parseS3Location(url, env);
  // The SDK warns on Node 20 about its own future releases; strongbox pins its version, and
  // the warning would only clutter every command's output.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const client = new S3Client({
    region: settings.region,
    endpoint: settings.endpoint,
    forcePathStyle: settings.forcePathStyle,
    credentials: explicitCredentials(env),
    maxAttempts: SDK_ATTEMPTS,
    requestChecksumCalculation: settings.checksums,
    responseChecksumValidation: settings.checksums,
    requestHandler: { connectionTimeout: CONNECT_TIMEOUT_MS, socketTimeout: settings.timeoutMs },
  });
  const backend = new S3Backend(client, settings);
  try {
    await client.config.region();
  } catch (error) {
    client.destroy();
    throw new ConfigError(`no region is set for ${backend.location}`, {
      hint: 'Add ?region=… to the location, or set S3_REGION or AWS_REGION.',
      cause: error,
    });
  }
  return backend;
}

/** Fewer or more bytes arrived or were stored than were sent or announced: a retry may cure it. */
class IncompleteTransferError extends Error {
  override readonly name = 'IncompleteTransferError';
}

/** Error codes S3 and compatible services use for conditions that pass. */
const TRANSIENT_CODES = new Set([
  'TimeoutError',
  'RequestTimeout',
  'RequestTimeoutException',
  'SlowDown',
  'Throttling',
  'ThrottlingException',
  'ThrottledException',
  'RequestThrottled',
  'RequestThrottledException',
  'TooManyRequestsException',
  'InternalError',
  'ServiceUnavailable',
  'IncompleteTransferError',
]);

function errorCode(error: unknown): string | undefined {
  const name = (error as { name?: unknown } | undefined)?.name;
  return typeof name === 'string' ? name : undefined;
}

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | undefined)?.$metadata?.httpStatusCode;
}

function isTransientS3Error(error: unknown): boolean {
  if (error instanceof StrongboxError) return false;
  if (isTransientNetworkError(error)) return true;
  const code = errorCode(error);
  if (code !== undefined && TRANSIENT_CODES.has(code)) return true;
  const status = httpStatus(error);
  // 501 is a missing feature of the service, not a passing failure.
  return status !== 501 && isTransientHttpStatus(status);
}

function isNotFound(error: unknown): boolean {
  const code = errorCode(error);
  return (
    code === 'NoSuchKey' || code === 'NotFound' || (code !== 'NoSuchBucket' && httpStatus(error) === 404)
  );
}

/**
 * A delete the service refused because of Object Lock. S3 answers it with AccessDenied, the code
 * of every missing permission too, so only its message tells them apart ("Access Denied because
 * object protected by object lock"); S3-compatible services answer InvalidRequest or AccessDenied
 * with "Object is WORM protected" and the like.
 */
function isObjectLockRefusal(error: unknown): boolean {
  const code = errorCode(error);
  if (code !== 'AccessDenied' && code !== 'InvalidRequest') return false;
  const message = (error as { message?: unknown }).message;
  return typeof message === 'string' && /object lock|retention|worm/i.test(message);
}

/** A repository under a prefix of an S3 (or S3-compatible) bucket. */
export class S3Backend implements StorageBackend {
  readonly location: string;
  readonly concurrency: number;

  constructor(
    private readonly client: S3Client,
    private readonly settings: S3Settings,
  ) {
    this.location = `s3://${settings.bucket}/${settings.prefix}`.replace(/\/$/, '');
    this.concurrency = settings.concurrency;
  }

  async put(name: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    const key = this.keyOf(name);
    // A view, not a copy: packs are up to ~16 MiB and several are in flight.
    const body = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    const params: PutObjectCommandInput = {
      Bucket: this.settings.bucket,
      Key: key,
      Body: body,
      ContentLength: body.length,
      ...(name.startsWith('data/') && this.settings.dataStorageClass
        ? { StorageClass: this.settings.dataStorageClass }
        : {}),
      ...this.settings.encryption,
    };
    const multipart = body.length > this.settings.partSize;
    // Content-MD5 is checked by every S3-compatible service, whatever the checksums setting; S3
    // also requires it (or a checksum header) on every put with Object Lock.
    const md5 = multipart ? undefined : createHash('md5').update(body).digest('base64');
    const lock = options.retain ? this.settings.objectLock : undefined;
    await this.retrying(`write ${name}`, async () => {
      // Counted from each attempt, so that a retried upload is kept its whole retention.
      const locked = lock ? this.lockParameters(lock, multipart) : {};
      if (multipart) {
        // On failure Upload aborts the multipart upload, so no part outlives the attempt.
        await new Upload({
          client: this.client,
          params: { ...params, ...locked },
          partSize: this.settings.partSize,
          queueSize: PARTS_IN_FLIGHT,
        }).done();
      } else {
        await this.client.send(new PutObjectCommand({ ...params, ...locked, ContentMD5: md5 }));
      }
      const stored = await this.client.send(
        new HeadObjectCommand({ Bucket: this.settings.bucket, Key: key }),
      );
      if (stored.ContentLength !== body.length) {
        throw new IncompleteTransferError(
          `${name} was stored with ${stored.ContentLength} bytes instead of ${body.length}`,
        );
      }
    });
  }

  /**
   * What a put with Object Lock adds: the mode and the retain-until date (on CreateMultipartUpload
   * for parts). Parts cannot carry a Content-MD5 through Upload, so they carry a CRC32 checksum,
   * which the SDK then sends even with checksums=when-required: S3 refuses locked uploads without
   * an integrity header.
   */
  private lockParameters(
    lock: Retention<ObjectLockMode>,
    multipart: boolean,
  ): Pick<PutObjectCommandInput, 'ObjectLockMode' | 'ObjectLockRetainUntilDate' | 'ChecksumAlgorithm'> {
    return {
      ObjectLockMode: lock.mode === 'governance' ? 'GOVERNANCE' : 'COMPLIANCE',
      ObjectLockRetainUntilDate: retainUntil(lock),
      ...(multipart ? { ChecksumAlgorithm: 'CRC32' as const } : {}),
    };
  }

  /** Every put is durable once S3 acknowledged it. */
  async syncDeferred(): Promise<void> {}

  async get(name: string): Promise<Buffer> {
    return this.retrying(
      `read ${name}`,
      async () => {
        const response = await this.client.send(
          new GetObjectCommand({ Bucket: this.settings.bucket, Key: this.keyOf(name) }),
        );
        return readBody(response, response.ContentLength ?? 0);
      },
      name,
    );
  }

  async getRange(name: string, offset: number, length: number): Promise<Buffer> {
    if (length === 0) {
      const info = await this.stat(name);
      if (!info) throw new ObjectNotFoundError(name, this.location);
      if (offset > info.size) throw this.shortObject(name, offset, length);
      return Buffer.alloc(0);
    }
    return this.retrying(
      `read ${name}`,
      async () => {
        let response: GetObjectCommandOutput;
        try {
          response = await this.client.send(
            new GetObjectCommand({
              Bucket: this.settings.bucket,
              Key: this.keyOf(name),
              Range: `bytes=${offset}-${offset + length - 1}`,
            }),
          );
        } catch (error) {
          if (errorCode(error) === 'InvalidRange' || httpStatus(error) === 416) {
            throw this.shortObject(name, offset, length);
          }
          throw error;
        }
        // S3 answers a range that runs past the end with the bytes it has: the object is short.
        if (response.ContentLength !== length) {
          (response.Body as Readable | undefined)?.destroy();
          throw this.shortObject(name, offset, length);
        }
        return readBody(response, length);
      },
      name,
    );
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    // Version 1 listing, paged by the last key seen: every S3-compatible service has it.
    let marker: string | undefined;
    do {
      const page = await this.retrying(`list ${prefix || 'the repository'}`, () =>
        this.client.send(
          new ListObjectsCommand({
            Bucket: this.settings.bucket,
            Prefix: this.settings.prefix + prefix,
            Marker: marker,
          }),
        ),
      );
      const contents = page.Contents ?? [];
      for (const object of contents) {
        const name = object.Key?.slice(this.settings.prefix.length);
        // Keys ending in / are the folder markers of consoles, not objects of ours.
        if (!name || name.endsWith('/')) continue;
        yield { name, size: object.Size ?? 0 };
      }
      marker = page.IsTruncated ? (page.NextMarker ?? contents.at(-1)?.Key) : undefined;
    } while (marker);
  }

  async stat(name: string): Promise<ObjectInfo | undefined> {
    try {
      const head = await this.retrying(
        `stat ${name}`,
        () =>
          this.client.send(new HeadObjectCommand({ Bucket: this.settings.bucket, Key: this.keyOf(name) })),
        name,
      );
      return { name, size: head.ContentLength ?? 0 };
    } catch (error) {
      if (error instanceof ObjectNotFoundError) return undefined;
      throw error;
    }
  }

  /**
   * With Object Lock, asks for the object's retention first: on a versioned bucket S3 answers a
   * delete of a locked object by hiding it behind a delete marker, which frees nothing, so the
   * object is left in place and reported locked until its retain-until date has passed.
   */
  async delete(name: string): Promise<void> {
    if (this.settings.objectLock) {
      let head: HeadObjectCommandOutput;
      try {
        head = await this.retrying(
          `stat ${name}`,
          () =>
            this.client.send(new HeadObjectCommand({ Bucket: this.settings.bucket, Key: this.keyOf(name) })),
          name,
        );
      } catch (error) {
        if (error instanceof ObjectNotFoundError) return;
        throw error;
      }
      const until = head.ObjectLockRetainUntilDate;
      const retained = until !== undefined && until.getTime() > Date.now();
      if (retained || head.ObjectLockLegalHoldStatus === 'ON') {
        throw new ObjectLockedError(name, this.location, retained ? until : undefined);
      }
    }
    await this.retrying(`delete ${name}`, async () => {
      try {
        await this.client.send(
          new DeleteObjectCommand({ Bucket: this.settings.bucket, Key: this.keyOf(name) }),
        );
      } catch (error) {
        if (isObjectLockRefusal(error)) throw new ObjectLockedError(name, this.location, undefined, error);
        throw error;
      }
    });
  }

  async removeIncompleteUploads(startedBefore: Date): Promise<number> {
    let removed = 0;
    let keyMarker: string | undefined;
    let uploadIdMarker: string | undefined;
    do {
      const page = await this.retrying('list incomplete uploads', async () => {
        try {
          return await this.client.send(
            new ListMultipartUploadsCommand({
              Bucket: this.settings.bucket,
              Prefix: this.settings.prefix,
              KeyMarker: keyMarker,
              UploadIdMarker: uploadIdMarker,
            }),
          );
        } catch (error) {
          // A service without multipart listing leaves nothing we could find to remove.
          if (errorCode(error) === 'NotImplemented' || httpStatus(error) === 501) return undefined;
          throw error;
        }
      });
      if (!page) return removed;
      for (const upload of page.Uploads ?? []) {
        if (!upload.Key || !upload.UploadId || !upload.Initiated) continue;
        if (upload.Initiated.getTime() >= startedBefore.getTime()) continue;
        const { Key, UploadId } = upload;
        await this.retrying('remove an incomplete upload', async () => {
          try {
            await this.client.send(
              new AbortMultipartUploadCommand({ Bucket: this.settings.bucket, Key, UploadId }),
            );
          } catch (error) {
            // Another process removed it first.
            if (errorCode(error) !== 'NoSuchUpload') throw error;
          }
        });
        removed++;
      }
      keyMarker = page.IsTruncated ? page.NextKeyMarker : undefined;
      uploadIdMarker = page.IsTruncated ? page.NextUploadIdMarker : undefined;
    } while (keyMarker);
    return removed;
  }

  async close(): Promise<void> {
    this.client.destroy();
  }

  private keyOf(name: string): string {
    if (!name || name.startsWith('/') || name.split('/').some((part) => part === '.' || part === '..')) {
      throw new StorageError(`invalid object name ${JSON.stringify(name)}`);
    }
    return this.settings.prefix + name;
  }

  private shortObject(name: string, offset: number, length: number): StorageError {
    return new StorageError(`${name} is shorter than expected (wanted bytes ${offset}..${offset + length})`, {
      hint: 'The object was truncated; run `strongbox check --read-data`.',
    });
  }

  /**
   * Runs one operation with our retries around the SDK's: the SDK retries each HTTP request a
   * few times quickly, these retry the whole operation (a new request, or a new multipart
   * upload) over a longer span. Errors come out as StorageError, never as SDK errors.
   */
  private async retrying<T>(action: string, operation: () => Promise<T>, objectName?: string): Promise<T> {
    try {
      return await withRetries(operation, isTransientS3Error);
    } catch (error) {
      throw this.wrap(error, action, objectName);
    }
  }

  private wrap(error: unknown, action: string, objectName?: string): StrongboxError {
    if (error instanceof StrongboxError) return error;
    if (objectName !== undefined && isNotFound(error))
      return new ObjectNotFoundError(objectName, this.location);
    const code = errorCode(error);
    const status = httpStatus(error);
    // Answers to HEAD requests have no body, hence no error code: the status is all there is.
    const named = code !== undefined && code !== 'Unknown' && code !== String(status);
    const detail =
      status === undefined
        ? (networkCode(error) ?? code ?? String(error))
        : named
          ? `${code} (HTTP ${status})`
          : `HTTP ${status}`;
    // 403 once the repository was read: credentials that may read but not write (or delete).
    const Failure = status === 403 ? AccessDeniedError : StorageError;
    return new Failure(`cannot ${action} in ${this.location}: ${detail}`, {
      hint: this.hintFor(error),
      cause: error,
    });
  }

  private hintFor(error: unknown): string | undefined {
    const code = errorCode(error) ?? '';
    const status = httpStatus(error);
    const bucket = this.settings.bucket;
    if (
      [
        'InvalidAccessKeyId',
        'SignatureDoesNotMatch',
        'CredentialsProviderError',
        'InvalidToken',
        'ExpiredToken',
        'TokenRefreshRequired',
      ].includes(code)
    ) {
      return 'Check the credentials: S3_ACCESS_KEY and S3_SECRET_KEY, or the AWS chain (AWS_ACCESS_KEY_ID, AWS_PROFILE…).';
    }
    if (code === 'NoSuchBucket') {
      return `Bucket ${bucket} does not exist: create it, or check the bucket name, ?endpoint= and ?region=.`;
    }
    if (code === 'PermanentRedirect' || code === 'AuthorizationHeaderMalformed' || status === 301) {
      return `Bucket ${bucket} is in another region: set ?region= (or S3_REGION).`;
    }
    if (code.startsWith('KMS.')) return 'Check ?kms-key-id= and that the credentials may use that key.';
    if (code === 'InvalidStorageClass') return 'The service does not offer that ?storage-class=.';
    if (code === 'AccessDenied') {
      return `The credentials lack a permission on bucket ${bucket}: they need s3:ListBucket, GetObject, PutObject, DeleteObject, ListBucketMultipartUploads and AbortMultipartUpload.`;
    }
    if (status === 403) {
      return `The service refused the request: check S3_ACCESS_KEY and S3_SECRET_KEY (or the AWS chain), and that they may use bucket ${bucket}.`;
    }
    if (networkCode(error) === 'ENOTFOUND')
      return 'The endpoint host is unknown: check ?endpoint= (or S3_ENDPOINT).';
    if (isTransientS3Error(error)) {
      return 'The service kept failing: check the network and the endpoint, then run the command again.';
    }
    return undefined;
  }
}

/** The first Node.js system error code in the cause chain (ECONNREFUSED, ENOTFOUND…). */
function networkCode(error: unknown): string | undefined {
  for (let current = error, depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && /^E[A-Z]+$/.test(code)) return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Reads a response body into one buffer of the announced size, failing if it ends early. */
async function readBody(response: GetObjectCommandOutput, expected: number): Promise<Buffer> {
  const body = response.Body as Readable | undefined;
  const buffer = Buffer.allocUnsafe(expected);
  let filled = 0;
  if (body) {
    try {
      for await (const chunk of body as AsyncIterable<Uint8Array>) {
        if (filled + chunk.length > expected) {
          throw new IncompleteTransferError(`the response ran past its announced ${expected} bytes`);
        }
        buffer.set(chunk, filled);
        filled += chunk.length;
      }
    } finally {
      body.destroy();
    }
  }
  if (filled !== expected) {
    throw new IncompleteTransferError(`the response ended after ${filled} of ${expected} bytes`);
  }
  return buffer;
}
