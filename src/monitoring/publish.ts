import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { ConfigError, StrongboxError } from '../errors.ts';
import { FileWriteError, fileProblem, writeFileAtomically } from '../util/atomic-file.ts';
import { printable } from '../util/printable.ts';
import {
  groupLabels,
  MalformedExpositionError,
  notificationFailureSamples,
  operationSamples,
  parseExposition,
  renderExposition,
  type CompatNames,
  type GroupLabels,
  type Labels,
  type OperationRun,
  type Sample,
} from './metrics.ts';

/** Publishing metrics failed: `target` names where, without credentials. */
export class MetricsPublishError extends StrongboxError {
  /** The HTTP status a Pushgateway answered, if it answered. */
  readonly status: number | undefined;

  constructor(
    readonly target: string,
    message: string,
    options: { status?: number; cause?: unknown } = {},
  ) {
    super(message, options.cause !== undefined ? { cause: options.cause } : {});
    this.status = options.status;
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
  return groupTextfileName(run.operation, run.group);
}

/**
 * The file of `group`'s notification failure counters: one per group, whichever operation's
 * notifications failed, as two files may not hold the same series.
 */
export function notificationsTextfileName(group: GroupLabels): string {
  return groupTextfileName('notifications', group);
}

function groupTextfileName(what: string, group: GroupLabels): string {
  const labels = groupLabels(group);
  const readable = [what, labels.host, labels.kind, labels.name, labels.env]
    .filter((part): part is string => Boolean(part))
    .map((part) => part.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 40))
    .join('-');
  const hash = createHash('sha256')
    .update(JSON.stringify([what, labels]))
    .digest('hex');
  return `strongbox-${readable}-${hash.slice(0, 12)}.prom`;
}

/**
 * Writes `run`'s series to node_exporter's textfile directory `dir`, and its notification
 * failures, if any were sent, to the group's notifications file. Each file's previous values are
 * read back and updated (counters go on, the last success survives a failure), written to a
 * temporary file in the same directory, flushed, then renamed over the old one, so that the
 * collector reads either the old file or the new one, never half of one. Returns the files' paths.
 */
export async function publishToTextfile(
  dir: string,
  run: OperationRun,
  options: PublishOptions = {},
): Promise<string[]> {
  const files = [
    await updateTextfile(
      path.join(dir, textfileName(run)),
      (previous) => operationSamples(run, previous),
      options,
    ),
  ];
  const failures = run.notificationFailures;
  if (failures) {
    files.push(
      await updateTextfile(
        path.join(dir, notificationsTextfileName(run.group)),
        (previous) => notificationFailureSamples(run.group, failures, previous),
        options,
      ),
    );
  }
  return files;
}

/**
 * Gauges of a state (the WAL archive), published whole each time rather than updated by a run:
 * each publication replaces the series of the metrics it holds and keeps the others, such as a
 * failure count published only when PostgreSQL was asked.
 */
export interface StateMetrics {
  /** What they are about, the first word of their file's name: `wal`. */
  what: string;
  /** The labels that tell one state from another: its file, and its Pushgateway group. */
  group: GroupLabels;
  samples: Sample[];
}

/** The textfile collector's file of `state`: one per state and group, as operations have. */
export function stateTextfileName(state: Pick<StateMetrics, 'what' | 'group'>): string {
  return groupTextfileName(state.what, state.group);
}

/** Writes `state` to the textfile directory `dir`, as publishToTextfile writes a run. Returns the file's path. */
export async function publishStateToTextfile(
  dir: string,
  state: StateMetrics,
  options: PublishOptions = {},
): Promise<string> {
  return updateTextfile(
    path.join(dir, stateTextfileName(state)),
    (previous) => replacingByName(previous, state.samples),
    options,
  );
}

/** `samples`, and those of `previous` whose metric `samples` does not hold. */
function replacingByName(previous: readonly Sample[], samples: readonly Sample[]): Sample[] {
  const replaced = new Set(samples.map((sample) => sample.name));
  return [...previous.filter((sample) => !replaced.has(sample.name)), ...samples];
}

async function updateTextfile(
  file: string,
  update: (previous: Sample[]) => Sample[],
  options: PublishOptions,
): Promise<string> {
  const previous = await readPreviousTextfile(file, options);
  try {
    await writeFileAtomically(file, renderExposition(update(previous), options.compat));
  } catch (error) {
    if (!(error instanceof FileWriteError)) throw error;
    throw new MetricsPublishError(file, `could not write the metrics file ${file}: ${error.reason}`, {
      cause: error,
    });
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
      `could not read the metrics file ${file}: ${fileProblem(code, error)}`,
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
      ? `Basic ${Buffer.from(`${decoded(url.username)}:${decoded(url.password)}`).toString('base64')}`
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

/** A user name or password as the URL holds it, percent-encoded: as typed, when it is not valid encoding. */
function decoded(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
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
 * The previous counters are read back from the gateway's /metrics first; both requests together
 * have `target.timeoutMs`.
 */
export async function pushToGateway(
  target: PushgatewayTarget,
  run: OperationRun,
  options: PublishOptions = {},
): Promise<void> {
  const gateway = parsePushgatewayUrl(target.url);
  const session = new GatewaySession(gateway, target.timeoutMs);
  const labels = groupLabels(run.group);
  const served = await session.request('GET', '/metrics');
  if (served.status !== 200) {
    await served.body?.cancel();
    throw session.failure(`reading its metrics back answered HTTP ${served.status}`, served.status);
  }
  let previous: Sample[];
  try {
    previous = parseExposition(await session.text(served, MAX_GATEWAY_BYTES));
  } catch (error) {
    if (!(error instanceof MalformedExpositionError)) throw error;
    throw session.failure(`it served metrics strongbox cannot read (${error.message})`);
  }
  // operationSamples keeps the series of this operation and group, notificationFailureSamples those of the group.
  const ours = previous.flatMap((sample) => inJob(sample, target.job));
  const failures = run.notificationFailures;
  const body = renderExposition(
    [
      ...operationSamples(run, ours),
      ...(failures ? notificationFailureSamples(run.group, failures, ours) : []),
    ],
    options.compat,
  );
  await post(session, target.job, labels, body);
}

/**
 * Pushes `state` to the Pushgateway, into the group of job and `state.group`, by POST: the
 * gateway replaces the metrics of the same names in the group and keeps the others. Nothing is
 * read back, as a state has no counter of strongbox's own to go on from.
 */
export async function pushStateToGateway(
  target: PushgatewayTarget,
  state: StateMetrics,
  options: PublishOptions = {},
): Promise<void> {
  const session = new GatewaySession(parsePushgatewayUrl(target.url), target.timeoutMs);
  await post(session, target.job, groupLabels(state.group), renderExposition(state.samples, options.compat));
}

async function post(session: GatewaySession, job: string, labels: Labels, body: string): Promise<void> {
  const pushed = await session.request('POST', `/metrics/${groupingPath(job, labels)}`, body);
  if (pushed.status !== 200 && pushed.status !== 202) {
    const detail = (await session.text(pushed, 1024).catch(() => '')).trim().split('\n')[0];
    throw session.failure(`HTTP ${pushed.status}${detail ? ` (${printable(detail)})` : ''}`, pushed.status);
  }
  await pushed.body?.cancel();
}

/** A sample the gateway serves in `job`'s groups, with the labels it adds (job, an empty instance) taken off. */
function inJob(sample: Sample, job: string): Sample[] {
  const { job: sampleJob, instance, ...rest } = sample.labels;
  if (sampleJob !== job || (instance ?? '') !== '') return [];
  return [
    { ...sample, labels: Object.fromEntries(Object.entries(rest).filter(([, value]) => value !== '')) },
  ];
}

/** The requests of one push, under one deadline; every failure says where and what. */
class GatewaySession {
  private readonly signal: AbortSignal;

  constructor(
    private readonly gateway: ReturnType<typeof parsePushgatewayUrl>,
    private readonly timeoutMs: number,
  ) {
    this.signal = AbortSignal.timeout(timeoutMs);
  }

  failure(problem: string, status?: number, cause?: unknown): MetricsPublishError {
    return new MetricsPublishError(
      this.gateway.location,
      `could not push metrics to the Pushgateway at ${this.gateway.location}: ${problem}`,
      { ...(status !== undefined ? { status } : {}), ...(cause !== undefined ? { cause } : {}) },
    );
  }

  async request(method: 'GET' | 'POST', path: string, body?: string): Promise<Response> {
    const url = new URL(`${this.gateway.base.pathname.replace(/\/$/, '')}${path}`, this.gateway.base);
    try {
      return await fetch(url, {
        method,
        ...(body !== undefined ? { body } : {}),
        headers: {
          ...(body !== undefined ? { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' } : {}),
          ...(this.gateway.authorization ? { authorization: this.gateway.authorization } : {}),
        },
        redirect: 'error',
        signal: this.signal,
      });
    } catch (error) {
      throw this.failure(this.networkProblem(error), undefined, error);
    }
  }

  /** A response's body as text, refused beyond `max` bytes. */
  async text(response: Response, max: number): Promise<string> {
    const reader = response.body?.getReader();
    if (!reader) return '';
    const chunks: Uint8Array[] = [];
    let total = 0;
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.byteLength;
        if (total > max) {
          await reader.cancel();
          throw this.failure(`it sent more than ${max} bytes`);
        }
        chunks.push(value);
      }
    } catch (error) {
      if (error instanceof MetricsPublishError) throw error;
      throw this.failure(this.networkProblem(error), undefined, error);
    }
    return Buffer.concat(chunks).toString('utf8');
  }

  /** What went wrong with a fetch, in words: fetch says only "fetch failed" and keeps the rest in its cause. */
  private networkProblem(error: unknown): string {
    if (this.signal.aborted) return `no answer within ${this.timeoutMs / 1000} s`;
    const cause = (error as { cause?: NodeJS.ErrnoException }).cause;
    const code = cause?.code ?? (error as NodeJS.ErrnoException).code;
    if (code && NETWORK_PROBLEMS[code]) return `${NETWORK_PROBLEMS[code]} (${code})`;
    return printable(cause?.message ?? (error instanceof Error ? error.message : String(error)));
  }
}

const NETWORK_PROBLEMS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ECONNRESET: 'connection reset',
  ENOTFOUND: 'no such host',
  EAI_AGAIN: 'the host name could not be resolved now',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
};
