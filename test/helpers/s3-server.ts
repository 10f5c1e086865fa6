import { createHash, randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/** The credentials s3rver accepts (its built-in account). */
export const S3RVER_ACCESS_KEY = 'S3RVER';
export const S3RVER_SECRET_KEY = 'S3RVER';
/**
 * An access key that may only read, as an IAM policy with s3:GetObject and s3:ListBucket alone:
 * the server answers its writes and deletes with 403 AccessDenied (s3rver has no policies).
 */
export const READ_ONLY_ACCESS_KEY = 'READONLY';

/** One request the server received, as the client sent it. */
export interface RecordedRequest {
  method: string;
  /** Bucket and key, decoded: `bucket/prefix/data/ab/…`. */
  path: string;
  query: URLSearchParams;
  headers: http.IncomingHttpHeaders;
  /** The status answered, once the whole response was sent; undefined while in flight or if cut. */
  status?: number;
}

export interface S3Server {
  readonly host: string;
  readonly port: number;
  /** `http://127.0.0.1:PORT` */
  readonly endpoint: string;
  /** A bucket that exists from the start. */
  readonly bucket: string;
  /** Where s3rver keeps its buckets on disk. */
  readonly directory: string;
  /** Every request received, in order of arrival. */
  readonly requests: RecordedRequest[];
  close(): Promise<void>;
}

/** The parts of s3rver (untyped JavaScript) this helper uses. */
interface S3rverApp {
  callback(): http.RequestListener;
  configureBuckets(): Promise<unknown>;
  on(event: 'error', listener: (error: unknown) => void): void;
  logger: { close(): void };
  store: { putContent(objectPath: string, content: Buffer | Readable): Promise<[number, string]> };
}
type S3rverConstructor = new (options: Record<string, unknown>) => S3rverApp;

const S3rver = createRequire(import.meta.url)('@20minutes/s3rver') as S3rverConstructor;

/** s3rver's folder of multipart uploads in a bucket: one folder per upload id, with `key` in it. */
const UPLOADS_FOLDER = '._S3rver_uploads';

/**
 * Starts s3rver (v4) on a free loopback port, with its data in a new temp directory, and one
 * bucket. The current SDK signs in ways s3rver verifies wrongly, hence `allowMismatchedSignatures`:
 * s3rver then still rejects unknown access keys and missing buckets, but not a wrong secret key.
 *
 * Two things s3rver lacks are added here so the backend can be tested as on S3:
 * - objects are written to a temporary file and renamed, as S3 makes a PUT visible whole or not
 *   at all (s3rver writes in place, so a cut upload would leave a truncated object);
 * - ListMultipartUploads and AbortMultipartUpload (s3rver answers both with NotImplemented),
 *   served from s3rver's own store of open uploads, without pagination.
 */
export async function startS3Server(bucket = 'strongbox-test'): Promise<S3Server> {
  const directory = await mkdtemp(path.join(os.tmpdir(), 'strongbox-s3rver-'));
  const app = new S3rver({
    directory,
    silent: true,
    allowMismatchedSignatures: true,
    vhostBuckets: false,
    configureBuckets: [{ name: bucket }],
  });
  // Our listener replaces Koa's default one, which prints every failed request.
  app.on('error', () => undefined);
  app.store.putContent = writeThenRename;
  await app.configureBuckets();

  const s3rverHandler = app.callback();
  const requests: RecordedRequest[] = [];
  const server = http.createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://localhost');
    const recorded: RecordedRequest = {
      method: request.method ?? '',
      path: decodeURIComponent(url.pathname.slice(1)),
      query: url.searchParams,
      headers: request.headers,
    };
    requests.push(recorded);
    response.once('finish', () => (recorded.status = response.statusCode));
    const credential = `Credential=${READ_ONLY_ACCESS_KEY}/`;
    if (request.headers.authorization?.includes(credential)) {
      if (!['GET', 'HEAD'].includes(request.method ?? '')) {
        request.resume();
        sendXml(response, 403, errorXml('AccessDenied', 'Access Denied'));
        return;
      }
      request.headers.authorization = request.headers.authorization.replace(
        credential,
        `Credential=${S3RVER_ACCESS_KEY}/`,
      );
    }
    handleMultipartListing(directory, request, response).then(
      (handled) => {
        if (!handled) s3rverHandler(request, response);
      },
      (error: unknown) => {
        response.statusCode = 500;
        response.end(String(error));
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    host: '127.0.0.1',
    port,
    endpoint: `http://127.0.0.1:${port}`,
    bucket,
    directory,
    requests,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      app.logger.close();
      await rm(directory, { recursive: true, force: true });
    },
  };
}

/** Replaces s3rver's store.putContent: the content appears under its name only once complete. */
async function writeThenRename(objectPath: string, content: Buffer | Readable): Promise<[number, string]> {
  const temporary = `${objectPath}.partial-${randomBytes(6).toString('hex')}`;
  const md5 = createHash('md5');
  let size = 0;
  try {
    await pipeline(
      Buffer.isBuffer(content) ? Readable.from([content]) : content,
      async function* (source: AsyncIterable<Buffer>) {
        for await (const chunk of source) {
          md5.update(chunk);
          size += chunk.length;
          yield chunk;
        }
      },
      createWriteStream(temporary),
    );
    await rename(temporary, objectPath);
  } catch (error) {
    await rm(temporary, { force: true });
    throw error;
  }
  return [size, md5.digest('hex')];
}

/** Serves ListMultipartUploads and AbortMultipartUpload; false for every other request. */
async function handleMultipartListing(
  directory: string,
  request: http.IncomingMessage,
  response: http.ServerResponse,
): Promise<boolean> {
  const url = new URL(request.url ?? '/', 'http://localhost');
  const [bucket, ...keyParts] = url.pathname.slice(1).split('/').map(decodeURIComponent);
  const key = keyParts.join('/');
  const listing = request.method === 'GET' && url.searchParams.has('uploads') && !key;
  const aborting = request.method === 'DELETE' && url.searchParams.has('uploadId') && key !== '';
  if (!bucket || !(listing || aborting)) return false;
  request.resume();
  if (!/Credential=S3RVER\//.test(request.headers.authorization ?? '')) {
    sendXml(
      response,
      403,
      errorXml('InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist.'),
    );
    return true;
  }
  const uploadsDir = path.join(directory, bucket, UPLOADS_FOLDER);
  if (aborting) {
    const uploadDir = path.join(uploadsDir, path.basename(url.searchParams.get('uploadId')!));
    const storedKey = await readFile(path.join(uploadDir, 'key'), 'utf8').catch(() => undefined);
    if (storedKey !== key) {
      sendXml(response, 404, errorXml('NoSuchUpload', 'The specified upload does not exist.'));
      return true;
    }
    await rm(uploadDir, { recursive: true, force: true });
    response.statusCode = 204;
    response.end();
    return true;
  }
  const prefix = url.searchParams.get('prefix') ?? '';
  const uploads: string[] = [];
  for (const uploadId of (await readdir(uploadsDir).catch(() => [])).sort()) {
    const keyFile = path.join(uploadsDir, uploadId, 'key');
    const uploadKey = await readFile(keyFile, 'utf8').catch(() => undefined);
    if (uploadKey === undefined || !uploadKey.startsWith(prefix)) continue;
    const initiated = (await stat(keyFile)).mtime.toISOString();
    uploads.push(
      `<Upload><Key>${escapeXml(uploadKey)}</Key><UploadId>${uploadId}</UploadId>` +
        `<Initiated>${initiated}</Initiated><StorageClass>STANDARD</StorageClass></Upload>`,
    );
  }
  sendXml(
    response,
    200,
    `<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
      `<Bucket>${escapeXml(bucket)}</Bucket><Prefix>${escapeXml(prefix)}</Prefix>` +
      `<MaxUploads>1000</MaxUploads><IsTruncated>false</IsTruncated>${uploads.join('')}` +
      `</ListMultipartUploadsResult>`,
  );
  return true;
}

function errorXml(code: string, message: string): string {
  return `<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
}

function sendXml(response: http.ServerResponse, status: number, body: string): void {
  response.statusCode = status;
  response.setHeader('Content-Type', 'application/xml');
  response.end(`<?xml version="1.0" encoding="UTF-8"?>\n${body}`);
}

function escapeXml(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}
