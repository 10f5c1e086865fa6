import { createHash, randomBytes } from 'node:crypto';
import { setMaxListeners } from 'node:events';
import {
  AnonymousCredential,
  BlobServiceClient,
  StorageSharedKeyCredential,
  type BlobImmutabilityPolicy,
  type BlobServiceClientOptions,
  type BlockBlobClient,
  type ContainerClient,
} from '@azure/storage-blob';
import { ConfigError, StorageError } from '../errors.ts';
import { PROGRAM } from '../version.ts';
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

/** Blocks of a staged upload; objects up to this size go up in one request. */
const BLOCK_SIZE = 4 * 1024 * 1024;
const DEFAULT_TIMEOUT_SECONDS = 30;
const MAX_TIMEOUT_SECONDS = 3600;
/** The slowest uplink we wait for: an attempt that sends N bytes may take N / this seconds longer. */
const SLOWEST_UPLOAD_BYTES_PER_SECOND = 64 * 1024;
const LIST_PAGE_SIZE = 5000;
const QUERY_OPTIONS = new Set([
  'account',
  'endpoint',
  'concurrency',
  'timeout',
  'immutability',
  'immutability-days',
]);
const IMMUTABILITY_MODES = ['unlocked', 'locked'] as const;
type ImmutabilityMode = (typeof IMMUTABILITY_MODES)[number];
/** Azure's rules: accounts have 3 to 24 lowercase letters and digits; containers 3 to 63, with single hyphens inside. */
const ACCOUNT_NAME = /^[a-z0-9]{3,24}$/;
const CONTAINER_NAME = /^(?=.{3,63}$)[a-z0-9]+(-[a-z0-9]+)*$/;

const CREDENTIALS_HINT =
  'Set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT and AZURE_STORAGE_KEY, or AZURE_STORAGE_SAS_TOKEN (see docs/CLI.md).';

interface AzureSettings {
  container: string;
  /** Blob name prefix of the repository, without slashes at either end; '' for the container's root. */
  prefix: string;
  concurrency: number;
  /** How long an attempt may wait for the service, beyond the time its upload needs. */
  timeoutMs: number;
  service: BlobServiceClient;
  /** Host of the blob endpoint, for messages about an unreachable service. */
  endpointHost: string;
  /** The version-level immutability policy of blobs put with `retain`; undefined: none. */
  immutability: Retention<ImmutabilityMode> | undefined;
}

/**
 * Opens `azure://container/prefix`. Credentials come only from `env`; the query string carries
 * `account`, `endpoint`, `concurrency` and `timeout` (docs/CLI.md). Nothing is sent until the
 * first operation, so a wrong key or a missing container shows up there, as a StorageError.
 */
export function openAzureBackend(url: URL, env: NodeJS.ProcessEnv): Promise<StorageBackend> {
  try {
    return Promise.resolve(new AzureBackend(parseSettings(url, env)));
  } catch (error) {
    return Promise.reject(error as Error);
  }
}

function parseSettings(url: URL, env: NodeJS.ProcessEnv): AzureSettings {
  const container = url.hostname;
  if (!CONTAINER_NAME.test(container)) {
    throw new ConfigError(`${JSON.stringify(container)} is not a valid Azure container name`, {
      hint: 'Use azure://container/prefix, with a container name of 3 to 63 lowercase letters, digits and hyphens.',
    });
  }
  if (url.username || url.password || url.port) {
    throw new ConfigError('an azure:// URL takes no user, password or port', {
      hint: `Give the account with ?account= or AZURE_STORAGE_ACCOUNT, and secrets in the environment: ${CREDENTIALS_HINT}`,
    });
  }
  for (const key of url.searchParams.keys()) {
    if (!QUERY_OPTIONS.has(key)) {
      throw new ConfigError(`unknown option ${JSON.stringify(key)} in the azure:// URL`, {
        hint: `Known options: ${[...QUERY_OPTIONS].join(', ')}.`,
      });
    }
  }
  const prefix = decodedPrefix(url);
  const concurrency = wholeNumberOption('azure', 'concurrency', url.searchParams.get('concurrency'), {
    fallback: DEFAULT_CONCURRENCY,
    min: 1,
    max: MAX_CONCURRENCY,
  });
  const timeoutMs =
    1000 *
    wholeNumberOption('azure', 'timeout', url.searchParams.get('timeout'), {
      fallback: DEFAULT_TIMEOUT_SECONDS,
      min: 1,
      max: MAX_TIMEOUT_SECONDS,
    });
  const immutability = retentionOption(
    'azure',
    url.searchParams,
    { mode: 'immutability', days: 'immutability-days' },
    IMMUTABILITY_MODES,
  );
  const { service, endpointHost } = createServiceClient(url, env);
  return { container, prefix, concurrency, timeoutMs, service, endpointHost, immutability };
}

function decodedPrefix(url: URL): string {
  try {
    return decodeURIComponent(url.pathname).replace(/^\/+|\/+$/g, '');
  } catch {
    throw new ConfigError(`the path of azure://${url.hostname}${url.pathname} is not validly %-encoded`);
  }
}

/**
 * The SDK's own retries are off (one try): ours retry more kinds of failure (429, resets mid-body,
 * stalls), with jitter, per block rather than per object, and with the same policy as every other
 * backend. Leaving both on would multiply the attempts.
 */
const CLIENT_OPTIONS: BlobServiceClientOptions = {
  retryOptions: { maxTries: 1 },
  userAgentOptions: { userAgentPrefix: PROGRAM.replace(' ', '/') },
};

function createServiceClient(
  url: URL,
  env: NodeJS.ProcessEnv,
): { service: BlobServiceClient; endpointHost: string } {
  const connectionString = env.AZURE_STORAGE_CONNECTION_STRING;
  const accountOption = url.searchParams.get('account');
  const endpointOption = url.searchParams.get('endpoint');
  if (connectionString) {
    if (accountOption !== null || endpointOption !== null) {
      throw new ConfigError(
        'AZURE_STORAGE_CONNECTION_STRING already names the account and endpoint: remove ?account= and ?endpoint= from the URL',
        {
          hint: 'Or unset AZURE_STORAGE_CONNECTION_STRING and use AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN.',
        },
      );
    }
    let service: BlobServiceClient;
    try {
      service = BlobServiceClient.fromConnectionString(connectionString, CLIENT_OPTIONS);
    } catch {
      // The SDK's message may quote the string, key included: say only which variable is wrong.
      throw new ConfigError(
        'AZURE_STORAGE_CONNECTION_STRING is not a valid Azure Storage connection string',
        {
          hint: 'Copy it from the storage account\'s "Access keys" page, or use UseDevelopmentStorage=true for Azurite.',
        },
      );
    }
    return { service, endpointHost: new URL(service.url).host };
  }

  const account = accountOption ?? env.AZURE_STORAGE_ACCOUNT;
  if (account && !ACCOUNT_NAME.test(account)) {
    throw new ConfigError(`${JSON.stringify(account)} is not a valid Azure storage account name`, {
      hint: 'An account name has 3 to 24 lowercase letters and digits.',
    });
  }
  if (!account && !endpointOption) {
    throw new ConfigError('no Azure storage account for the azure:// repository', {
      hint: `Add ?account=NAME to the URL or set AZURE_STORAGE_ACCOUNT. ${CREDENTIALS_HINT}`,
    });
  }
  const endpoint = parseEndpoint(endpointOption ?? `https://${account}.blob.core.windows.net`);
  const key = env.AZURE_STORAGE_KEY;
  if (key) {
    if (!account) {
      throw new ConfigError('AZURE_STORAGE_KEY needs the account name', {
        hint: 'Add ?account=NAME to the URL or set AZURE_STORAGE_ACCOUNT.',
      });
    }
    const credential = new StorageSharedKeyCredential(account, key);
    return {
      service: new BlobServiceClient(endpoint.href, credential, CLIENT_OPTIONS),
      endpointHost: endpoint.host,
    };
  }
  const sasToken = env.AZURE_STORAGE_SAS_TOKEN?.replace(/^\?/, '');
  if (sasToken) {
    const withToken = `${endpoint.href}?${sasToken}`;
    return {
      service: new BlobServiceClient(withToken, new AnonymousCredential(), CLIENT_OPTIONS),
      endpointHost: endpoint.host,
    };
  }
  throw new ConfigError('no Azure credentials in the environment', { hint: CREDENTIALS_HINT });
}

function parseEndpoint(text: string): URL {
  let endpoint: URL;
  try {
    endpoint = new URL(text);
  } catch {
    throw new ConfigError(`endpoint ${JSON.stringify(text)} is not a URL`, {
      hint: 'Use ?endpoint=https://ACCOUNT.blob.core.windows.net, or http://127.0.0.1:10000/devstoreaccount1 for Azurite.',
    });
  }
  if (
    (endpoint.protocol !== 'https:' && endpoint.protocol !== 'http:') ||
    endpoint.username ||
    endpoint.password ||
    endpoint.search ||
    endpoint.hash
  ) {
    throw new ConfigError(
      `endpoint ${endpoint.origin} must be a plain http(s) URL, without credentials or query`,
      {
        hint: `Secrets go in the environment: ${CREDENTIALS_HINT}`,
      },
    );
  }
  endpoint.pathname = endpoint.pathname.replace(/\/+$/, '');
  return endpoint;
}

/** Our own verdict that an attempt failed in a way another attempt may cure. */
class RetryableTransferError extends Error {}

function isTransientAzureError(error: unknown): boolean {
  if (error instanceof RetryableTransferError) return true;
  if (error instanceof StorageError) return false;
  if (isTransientNetworkError(error)) return true;
  const { code, statusCode } = error as { code?: unknown; statusCode?: unknown };
  // REQUEST_SEND_ERROR: the socket failed without a code; PARSE_ERROR: an XML answer cut short;
  // Md5Mismatch: bytes damaged on the way, which the service caught.
  if (code === 'REQUEST_SEND_ERROR' || code === 'PARSE_ERROR' || code === 'Md5Mismatch') return true;
  return typeof statusCode === 'number' && isTransientHttpStatus(statusCode);
}

/** What the service answers (409) to a delete of a blob whose immutability policy is in effect. */
const IMMUTABLE_BLOB = 'BlobImmutableDueToPolicy';

/** The service's error code (the x-ms-error-code header, also on HEAD answers, which have no body). */
function azureErrorCode(error: unknown): string | undefined {
  const { code, details } = error as { code?: unknown; details?: { errorCode?: unknown } };
  if (typeof details?.errorCode === 'string') return details.errorCode;
  return typeof code === 'string' ? code : undefined;
}

function httpStatus(error: unknown): number | undefined {
  const { statusCode } = error as { statusCode?: unknown };
  return typeof statusCode === 'number' ? statusCode : undefined;
}

/**
 * An attempt's abort signal. It fires when the service has kept us waiting too long (a stalled
 * connection: the attempt is then retried), or when the backend closes. The first wait may be
 * longer, by the time the attempt's upload needs; each piece of an answer that arrives restarts it.
 * Upload progress cannot restart it: the kernel accepts megabytes long before they reach the service.
 */
class AttemptDeadline {
  readonly signal: AbortSignal;
  timedOut = false;
  private readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private readonly onClose = (): void => this.controller.abort();

  constructor(
    private readonly timeoutMs: number,
    uploadMs: number,
    private readonly closing: AbortSignal,
  ) {
    this.signal = this.controller.signal;
    if (closing.aborted) this.controller.abort();
    else closing.addEventListener('abort', this.onClose);
    this.arm(timeoutMs + uploadMs);
  }

  /** Marks bytes received. */
  readonly received = (): void => this.arm(this.timeoutMs);

  private arm(ms: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timedOut = true;
      this.controller.abort();
    }, ms);
  }

  dispose(): void {
    clearTimeout(this.timer);
    this.closing.removeEventListener('abort', this.onClose);
  }
}

function md5(data: Uint8Array): Buffer {
  return createHash('md5').update(data).digest();
}

/**
 * A repository under a prefix of an Azure Blob container. Every put is a block blob that becomes
 * visible whole when it is committed: staged blocks are invisible to reads and listings, and Azure
 * discards uncommitted blocks after a week, which is why `removeIncompleteUploads` has nothing to do.
 */
class AzureBackend implements StorageBackend {
  readonly location: string;
  readonly concurrency: number;
  private readonly container: ContainerClient;
  private readonly closing = new AbortController();

  constructor(private readonly settings: AzureSettings) {
    this.location = `azure://${settings.container}${settings.prefix ? `/${settings.prefix}` : ''}`;
    this.concurrency = settings.concurrency;
    this.container = settings.service.getContainerClient(settings.container);
    // Every request in flight listens to it: as many as the writer keeps busy, which is not a leak.
    setMaxListeners(Infinity, this.closing.signal);
  }

  async put(name: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    const blob = this.blob(name);
    const digest = md5(data);
    const action = `write ${name}`;
    const retention = options.retain ? this.settings.immutability : undefined;
    // Counted from each attempt, so that a retried upload is kept its whole retention.
    const immutabilityPolicy = (): BlobImmutabilityPolicy | undefined =>
      retention && {
        expiriesOn: retainUntil(retention),
        policyMode: retention.mode === 'locked' ? 'Locked' : 'Unlocked',
      };
    if (data.length > BLOCK_SIZE) {
      await this.uploadInBlocks(blob, action, data, digest, immutabilityPolicy);
      await this.verifyStored(name, blob, data.length, digest);
      return;
    }
    // One request; the service checks the bytes against x-ms-blob-content-md5 before storing them,
    // and answers with the MD5 of what it stored.
    const response = await this.attempt(
      action,
      undefined,
      (signal) =>
        blob.upload(data, data.length, {
          abortSignal: signal,
          blobHTTPHeaders: { blobContentMD5: digest },
          immutabilityPolicy: immutabilityPolicy(),
        }),
      data.length,
    );
    if (!response.contentMD5) await this.verifyStored(name, blob, data.length, digest);
    else if (!digest.equals(response.contentMD5)) throw this.notWhatWasWritten(name);
  }

  /**
   * Stages the blocks one after the other (each checked by the service against its MD5, each
   * retried on its own), then commits them in one request: until then nothing is visible. Block ids
   * carry a random upload id so that two writers of the same name never mix their blocks.
   */
  private async uploadInBlocks(
    blob: BlockBlobClient,
    action: string,
    data: Uint8Array,
    digest: Buffer,
    immutabilityPolicy: () => BlobImmutabilityPolicy | undefined,
  ) {
    const uploadId = randomBytes(8).toString('hex');
    const blockIds: string[] = [];
    for (let offset = 0; offset < data.length; offset += BLOCK_SIZE) {
      const block = data.subarray(offset, offset + BLOCK_SIZE);
      const blockId = Buffer.from(`${uploadId}-${String(blockIds.length).padStart(6, '0')}`).toString(
        'base64',
      );
      const blockDigest = md5(block);
      await this.attempt(
        action,
        undefined,
        (signal) =>
          blob.stageBlock(blockId, block, block.length, {
            abortSignal: signal,
            transactionalContentMD5: blockDigest,
          }),
        block.length,
      );
      blockIds.push(blockId);
    }
    // Committing again after a lost answer is harmless: the same list gives the same blob.
    await this.attempt(action, undefined, (signal) =>
      blob.commitBlockList(blockIds, {
        abortSignal: signal,
        blobHTTPHeaders: { blobContentMD5: digest },
        immutabilityPolicy: immutabilityPolicy(),
      }),
    );
  }

  /** Asks what the service now serves under `name`: our size and our MD5, or the put fails. */
  private async verifyStored(
    name: string,
    blob: BlockBlobClient,
    size: number,
    digest: Buffer,
  ): Promise<void> {
    const stored = await this.attempt(`check ${name}`, undefined, (signal) =>
      blob.getProperties({ abortSignal: signal }),
    );
    if (stored.contentLength !== size || !stored.contentMD5 || !digest.equals(stored.contentMD5)) {
      throw this.notWhatWasWritten(name);
    }
  }

  private notWhatWasWritten(name: string): StorageError {
    return new StorageError(`${name} in ${this.location} does not hold what was just written to it`, {
      hint: 'Another process may be writing to the same repository; run `strongbox check --read-data`.',
    });
  }

  /** Every put is durable once the service answered it. */
  async syncDeferred(): Promise<void> {}

  async get(name: string): Promise<Buffer> {
    const blob = this.blob(name);
    return this.attempt(`read ${name}`, name, async (signal, received) => {
      const response = await blob.download(0, undefined, { abortSignal: signal, maxRetryRequests: 0 });
      const data = await readBody(response.readableStreamBody, response.contentLength, received);
      // Azure returns the stored MD5 with whole-blob reads: bytes damaged on the way are read again.
      if (response.contentMD5 && !Buffer.from(response.contentMD5).equals(md5(data))) {
        throw new RetryableTransferError(`the MD5 of ${name} as read does not match the stored one`);
      }
      return data;
    });
  }

  async getRange(name: string, offset: number, length: number): Promise<Buffer> {
    const blob = this.blob(name);
    if (length === 0) {
      // Azure reads a zero count as "to the end"; this only needs to know the object is there.
      if (!(await this.stat(name))) throw new ObjectNotFoundError(name, this.location);
      return Buffer.alloc(0);
    }
    return this.attempt(`read ${name}`, name, async (signal, received) => {
      let response;
      try {
        response = await blob.download(offset, length, { abortSignal: signal, maxRetryRequests: 0 });
      } catch (error) {
        if (httpStatus(error) === 416) throw this.shorterThanExpected(name, offset, length);
        throw error;
      }
      const data = await readBody(response.readableStreamBody, response.contentLength, received);
      if (data.length < length) throw this.shorterThanExpected(name, offset, length);
      return data;
    });
  }

  private shorterThanExpected(name: string, offset: number, length: number): StorageError {
    return new StorageError(
      `${name} in ${this.location} is shorter than expected (wanted bytes ${offset}..${offset + length})`,
      { hint: 'The object was truncated or replaced; run `strongbox check --read-data`.' },
    );
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const root = this.settings.prefix ? `${this.settings.prefix}/` : '';
    let continuationToken: string | undefined;
    do {
      // One page per attempt, so that a failure repeats only the page that failed.
      const page = await this.attempt(`list ${prefix}`, undefined, (signal) =>
        this.container
          .listBlobsFlat({ prefix: root + prefix, abortSignal: signal })
          .byPage({ continuationToken, maxPageSize: LIST_PAGE_SIZE })
          .next(),
      );
      if (page.done) return;
      for (const item of page.value.segment.blobItems) {
        yield { name: item.name.slice(root.length), size: item.properties.contentLength ?? 0 };
      }
      continuationToken = page.value.continuationToken || undefined;
    } while (continuationToken);
  }

  async stat(name: string): Promise<ObjectInfo | undefined> {
    const blob = this.blob(name);
    try {
      const properties = await this.attempt(`stat ${name}`, name, (signal) =>
        blob.getProperties({ abortSignal: signal }),
      );
      return { name, size: properties.contentLength ?? 0 };
    } catch (error) {
      if (error instanceof ObjectNotFoundError) return undefined;
      throw error;
    }
  }

  async delete(name: string): Promise<void> {
    const blob = this.blob(name);
    try {
      await this.attempt(`delete ${name}`, name, (signal) => blob.delete({ abortSignal: signal }));
    } catch (error) {
      // Also what a retry sees when the first attempt's answer was lost.
      if (error instanceof ObjectNotFoundError) return;
      if (azureErrorCode(error instanceof StorageError ? error.cause : error) === IMMUTABLE_BLOB) {
        throw new ObjectLockedError(name, this.location, await this.immutableUntil(name), error);
      }
      throw error;
    }
  }

  /** Until when the service keeps `name` immutable, if it says so. */
  private async immutableUntil(name: string): Promise<Date | undefined> {
    const blob = this.blob(name);
    try {
      const properties = await this.attempt(`stat ${name}`, name, (signal) =>
        blob.getProperties({ abortSignal: signal }),
      );
      return properties.immutabilityPolicyExpiresOn;
    } catch {
      // The refusal is what matters; its date only helps the message.
      return undefined;
    }
  }

  /**
   * Always 0. A crashed writer leaves only uncommitted blocks, which no read or listing sees and
   * which Azure discards after seven days; the API has no call to remove them short of committing
   * them into a visible blob, which is worse.
   */
  async removeIncompleteUploads(): Promise<number> {
    return 0;
  }

  /** Aborts requests still in flight; idle keep-alive connections do not hold the process open. */
  async close(): Promise<void> {
    this.closing.abort();
  }

  private blob(name: string): BlockBlobClient {
    const segments = name.split('/');
    if (segments.some((segment) => segment === '' || segment === '.' || segment === '..')) {
      throw new StorageError(`invalid object name ${JSON.stringify(name)}`);
    }
    return this.container.getBlockBlobClient(this.settings.prefix ? `${this.settings.prefix}/${name}` : name);
  }

  /**
   * Runs one request (or one read) with our retries: each attempt gets a deadline of its own, and
   * whatever fails for good becomes a StorageError that names the repository, never a secret.
   */
  private async attempt<T>(
    action: string,
    objectName: string | undefined,
    operation: (signal: AbortSignal, received: () => void) => Promise<T>,
    bytesToSend = 0,
  ): Promise<T> {
    if (this.closing.signal.aborted) {
      throw new StorageError(`cannot ${action}: the connection to ${this.location} is closed`);
    }
    let attempts = 0;
    try {
      return await withRetries(async () => {
        attempts++;
        const uploadMs = (1000 * bytesToSend) / SLOWEST_UPLOAD_BYTES_PER_SECOND;
        const deadline = new AttemptDeadline(this.settings.timeoutMs, uploadMs, this.closing.signal);
        try {
          return await operation(deadline.signal, deadline.received);
        } catch (error) {
          if (deadline.timedOut) {
            const waited = `no answer within the ${this.settings.timeoutMs / 1000} s timeout`;
            throw new RetryableTransferError(waited, { cause: error });
          }
          throw error;
        } finally {
          deadline.dispose();
        }
      }, isTransientAzureError);
    } catch (error) {
      throw this.describeFailure(error, action, objectName, attempts);
    }
  }

  private describeFailure(error: unknown, action: string, objectName: string | undefined, attempts: number) {
    if (error instanceof StorageError) return error;
    const code = azureErrorCode(error);
    const status = httpStatus(error);
    if (objectName && code === 'BlobNotFound') return new ObjectNotFoundError(objectName, this.location);
    if (this.closing.signal.aborted) {
      return new StorageError(`cannot ${action}: the connection to ${this.location} was closed`, {
        cause: error,
      });
    }
    if (code === 'ContainerNotFound') {
      return new StorageError(`container ${this.settings.container} does not exist (${this.location})`, {
        hint: `Create it first (az storage container create --name ${this.settings.container}), or correct the repository URL.`,
        cause: error,
      });
    }
    if (status === 401 || status === 403) {
      // 403: a SAS token or role that may read but not write; 401 is a wrong key.
      const Failure = status === 403 ? AccessDeniedError : StorageError;
      return new Failure(`Azure refused access to ${this.location} (${code ?? `HTTP ${status}`})`, {
        hint: 'Check the account name, AZURE_STORAGE_KEY or AZURE_STORAGE_CONNECTION_STRING, or the permissions (read, add, create, write, delete, list) and expiry of AZURE_STORAGE_SAS_TOKEN.',
        cause: error,
      });
    }
    if (code === 'ENOTFOUND') {
      return new StorageError(
        `cannot ${action} in ${this.location}: host ${this.settings.endpointHost} not found`,
        {
          hint: 'Check the account name, or the ?endpoint= option.',
          cause: error,
        },
      );
    }
    const reason =
      error instanceof RetryableTransferError
        ? error.message
        : status !== undefined
          ? `HTTP ${status}${code ? ` ${code}` : ''}`
          : (code ?? (error instanceof Error ? error.name : String(error)));
    if (isTransientAzureError(error)) {
      return new StorageError(
        `cannot ${action} in ${this.location}: ${reason}, ${attempts} attempts failed`,
        {
          hint: 'The service or the network kept failing; try again later.',
          cause: error,
        },
      );
    }
    return new StorageError(`cannot ${action} in ${this.location}: ${reason}`, { cause: error });
  }
}

/**
 * Reads a response body of `expectedLength` bytes into one buffer. A body that ends early means
 * the connection was cut, which another attempt may cure.
 */
async function readBody(
  body: NodeJS.ReadableStream | undefined,
  expectedLength: number | undefined,
  received: () => void,
): Promise<Buffer> {
  if (!body || expectedLength === undefined) {
    throw new RetryableTransferError('the answer had no body or no length');
  }
  const data = Buffer.allocUnsafe(expectedLength);
  let filled = 0;
  try {
    for await (const piece of body as AsyncIterable<Buffer>) {
      received();
      if (filled + piece.length > expectedLength) {
        throw new RetryableTransferError('the answer was longer than its Content-Length');
      }
      piece.copy(data, filled);
      filled += piece.length;
    }
  } catch (error) {
    if (error instanceof RetryableTransferError) throw error;
    // The SDK reports a connection cut mid-body as an AbortError without a code; the attempt's
    // own deadline and the backend's closing are told apart by the caller.
    throw new RetryableTransferError('the connection was cut while the answer arrived', { cause: error });
  }
  if (filled < expectedLength) throw new RetryableTransferError('the answer ended early');
  return data;
}
