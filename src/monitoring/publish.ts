import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError, StrongboxError } from '../errors.ts';
import { FileWriteError, writeFileAtomically } from '../util/atomic-file.ts';
import { printable } from '../util/printable.ts';
import {
  groupLabels,
  MalformedExpositionError,
  operationSamples,
  parseExposition,
  renderExposition,
  type CompatNames,
  type Labels,
  type OperationRun,
  type Sample,
} from './metrics.ts';

/** Publishing metrics failed: `target` names where, without credentials. */
export class MetricsPublishError extends StrongboxError {
  constructor(
    readonly target: string,
    message: string,
    readonly status?: number,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface PublishOptions {
  compat?: CompatNames;
  /** A problem that did not stop publishing (a previous file that could not be read back). */
  onWarning?: (message: string) => void;
}

/** The largest previous file read back for its counters; ours are a few kilobytes. */
const MAX_TEXTFILE_BYTES = 1024 * 1024;

/**
 * The textfile collector's file for `run`: one per operation and group, so that a backup of one
 * database and a check of the repository do not overwrite each other's series. The readable part
 * is there for people listing the directory; the hash keeps different groups apart whatever
 * their names share.
 */
export function textfileName(run: Pick<OperationRun, 'operation' | 'group'>): string {
  const labels = groupLabels(run.group);
  const readable = [run.operation, labels.host, labels.kind, labels.name, labels.env]
    .filter((part): part is string => Boolean(part))
    .map((part) => part.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 40))
    .join('-');
  const hash = createHash('sha256')
    .update(JSON.stringify([run.operation, labels]))
    .digest('hex');
  return `strongbox-${readable}-${hash.slice(0, 12)}.prom`;
}

/**
 * Writes `run`'s series to node_exporter's textfile directory `dir`: the previous file's values
 * read back and updated (counters go on, the last success survives a failure), written to a
 * temporary file in the same directory, flushed, then renamed over the old one, so that the
 * collector reads either the old file or the new one, never half of one. Returns the file's path.
 */
export async function publishToTextfile(
  dir: string,
  run: OperationRun,
  options: PublishOptions = {},
): Promise<string> {
  const file = path.join(dir, textfileName(run));
  const previous = await readPreviousTextfile(file, options);
  try {
    await writeFileAtomically(file, renderExposition(operationSamples(run, previous), options.compat));
  } catch (error) {
    if (!(error instanceof FileWriteError)) throw error;
    throw new MetricsPublishError(
      file,
      `could not write the metrics file ${file}: ${error.reason}`,
      undefined,
      {
        cause: error,
      },
    );
  }
  return file;
}

async function readPreviousTextfile(file: string, options: PublishOptions): Promise<Sample[]> {
  let text: string;
  try {
    const handle = await open(file, 'r');
    try {
      const { size } = await handle.stat();
      if (size > MAX_TEXTFILE_BYTES) {
        options.onWarning?.(
          `${file} is larger than ${MAX_TEXTFILE_BYTES} bytes: its counters start again from 0`,
        );
        return [];
      }
      text = await handle.readFile('utf8');
    } finally {
      await handle.close();
    }
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return [];
    throw new MetricsPublishError(
      file,
      `could not read the metrics file ${file}: ${code ?? String(error)}`,
      undefined,
      {
        cause: error,
      },
    );
  }
  try {
    return parseExposition(text);
  } catch (error) {
    if (!(error instanceof MalformedExpositionError)) throw error;
    options.onWarning?.(
      `${file} is not in the exposition format (${error.message}): its counters start again from 0`,
    );
    return [];
  }
}

/** Where a Pushgateway is, and how to push to it. */
export interface PushgatewayTarget {
  /** Its base URL: http://host:9091, or with a path prefix behind a proxy. May hold user:password. */
  url: string;
  /** The job label of every group strongbox pushes. */
  job: string;
  timeoutMs: number;
}

export const DEFAULT_PUSHGATEWAY_JOB = 'strongbox';
export const DEFAULT_PUSHGATEWAY_TIMEOUT_MS = 10_000;

/** The largest /metrics page read back from a Pushgateway for the previous counters. */
const MAX_GATEWAY_BYTES = 64 * 1024 * 1024;

/**
 * The base URL of a Pushgateway, checked: http or https, no query or fragment. Its credentials,
 * if any, are for the Authorization header; `location` is what messages may show.
 */
export function parsePushgatewayUrl(text: string): { base: URL; location: string; authorization?: string } {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new ConfigError(`invalid Pushgateway URL ${JSON.stringify(printable(withoutCredentials(text)))}`, {
      hint: 'Give it as http://host:9091.',
    });
  }
  const location = `${url.protocol}//${url.host}${url.pathname.replace(/\/+$/, '')}`;
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ConfigError(`the Pushgateway URL ${printable(location)} is not http or https`);
  }
  if (url.search || url.hash) {
    throw new ConfigError(`the Pushgateway URL ${printable(location)} may not have a query or fragment`);
  }
  const authorization =
    url.username || url.password
      ? `Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}`
      : undefined;
  const base = new URL(location);
  return { base, location, ...(authorization ? { authorization } : {}) };
}

/** Whether a Pushgateway URL carries a password, which a command line must not. */
export function hasPassword(text: string): boolean {
  try {
    return new URL(text).password !== '';
  } catch {
    return false;
  }
}

function withoutCredentials(text: string): string {
  return text.replace(/\/\/[^/@]*@/, '//');
}

/**
 * The path of a group under /metrics: job, then each label and value. A value that is not plain
 * (a slash, a dot first, empty, anything else outside A-Z a-z 0-9 . _ ~ -) goes in the
 * Pushgateway's `label@base64/…` form with the URL-safe alphabet, as it documents.
 */
export function groupingPath(job: string, labels: Labels): string {
  const segment = (label: string, value: string) =>
    /^[A-Za-z0-9_~-][A-Za-z0-9._~-]*$/.test(value)
      ? `${label}/${value}`
      : `${label}@base64/${value === '' ? '=' : Buffer.from(value, 'utf8').toString('base64url')}`;
  return [segment('job', job), ...Object.entries(labels).map(([label, value]) => segment(label, value))].join(
    '/',
  );
}

/**
 * Pushes `run`'s series to the Pushgateway, into the group of job and `run`'s labels, by POST: the
 * series of other operations in the same group (a drill's beside the backups of a database) stay.
 * The previous counters are read back from the gateway's /metrics first.
 */
export async function pushToGateway(
  target: PushgatewayTarget,
  run: OperationRun,
  options: PublishOptions = {},
): Promise<void> {
  const gateway = parsePushgatewayUrl(target.url);
  const labels = groupLabels(run.group);
  // operationSamples keeps those of this operation and group.
  const previous = (await readGatewaySamples(gateway, target.timeoutMs)).flatMap((sample) =>
    inJob(sample, target.job),
  );
  const body = renderExposition(operationSamples(run, previous), options.compat);
  const url = new URL(
    `${gateway.base.pathname.replace(/\/$/, '')}/metrics/${groupingPath(target.job, labels)}`,
    gateway.base,
  );
  const response = await request(gateway, url, target.timeoutMs, {
    method: 'POST',
    body,
    headers: { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' },
  });
  if (response.status !== 200 && response.status !== 202) {
    const detail = (await boundedText(response, 1024, gateway.location).catch(() => ''))
      .trim()
      .split('\n')[0];
    throw new MetricsPublishError(
      gateway.location,
      `the Pushgateway at ${gateway.location} refused the metrics: HTTP ${response.status}${detail ? ` (${printable(detail)})` : ''}`,
      response.status,
    );
  }
  await response.body?.cancel();
}

/** A sample the gateway serves in `job`'s groups, with the labels it adds (job, an empty instance) taken off. */
function inJob(sample: Sample, job: string): Sample[] {
  const { job: sampleJob, instance, ...rest } = sample.labels;
  if (sampleJob !== job || (instance ?? '') !== '') return [];
  return [
    { ...sample, labels: Object.fromEntries(Object.entries(rest).filter(([, value]) => value !== '')) },
  ];
}

async function readGatewaySamples(
  gateway: ReturnType<typeof parsePushgatewayUrl>,
  timeoutMs: number,
): Promise<Sample[]> {
  const url = new URL(`${gateway.base.pathname.replace(/\/$/, '')}/metrics`, gateway.base);
  const response = await request(gateway, url, timeoutMs, { method: 'GET' });
  if (response.status !== 200) {
    await response.body?.cancel();
    throw new MetricsPublishError(
      gateway.location,
      `could not push metrics to the Pushgateway at ${gateway.location}: reading its metrics back answered HTTP ${response.status}`,
      response.status,
    );
  }
  const text = await boundedText(response, MAX_GATEWAY_BYTES, gateway.location);
  try {
    return parseExposition(text);
  } catch (error) {
    if (!(error instanceof MalformedExpositionError)) throw error;
    throw new MetricsPublishError(
      gateway.location,
      `the Pushgateway at ${gateway.location} served metrics strongbox cannot read (${error.message})`,
    );
  }
}

async function request(
  gateway: ReturnType<typeof parsePushgatewayUrl>,
  url: URL,
  timeoutMs: number,
  init: { method: string; body?: string; headers?: Record<string, string> },
): Promise<Response> {
  try {
    return await fetch(url, {
      ...init,
      headers: {
        ...init.headers,
        ...(gateway.authorization ? { authorization: gateway.authorization } : {}),
      },
      redirect: 'error',
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (error) {
    throw new MetricsPublishError(
      gateway.location,
      `could not push metrics to the Pushgateway at ${gateway.location}: ${networkProblem(error, timeoutMs)}`,
      undefined,
      { cause: error },
    );
  }
}

/** What went wrong with a fetch, in words: fetch says only "fetch failed" and keeps the rest in its cause. */
function networkProblem(error: unknown, timeoutMs: number): string {
  if (error instanceof DOMException && error.name === 'TimeoutError') {
    return `no answer within ${timeoutMs / 1000} s`;
  }
  const cause = (error as { cause?: NodeJS.ErrnoException }).cause;
  const code = cause?.code ?? (error as NodeJS.ErrnoException).code;
  const words: Record<string, string> = {
    ECONNREFUSED: 'connection refused',
    ECONNRESET: 'connection reset',
    ENOTFOUND: 'no such host',
    EAI_AGAIN: 'the host name could not be resolved now',
    EHOSTUNREACH: 'host unreachable',
    ENETUNREACH: 'network unreachable',
  };
  if (code && words[code]) return `${words[code]} (${code})`;
  const message = cause?.message ?? (error instanceof Error ? error.message : String(error));
  return printable(message);
}

/** A response's body as text, refused beyond `max` bytes. */
async function boundedText(response: Response, max: number, location: string): Promise<string> {
  const reader = response.body?.getReader();
  if (!reader) return '';
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > max) {
      await reader.cancel();
      throw new MetricsPublishError(location, `the Pushgateway at ${location} sent more than ${max} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}
