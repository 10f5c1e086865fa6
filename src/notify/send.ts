import { randomUUID } from 'node:crypto';
import { withRetries, type RetryPolicy } from '../storage/retry.ts';
import { DeliveryError } from './delivery-error.ts';
import type { NotificationEvent } from './event.ts';
import { postJson, SIGNATURE_HEADER, TIMESTAMP_HEADER, webhookSignature } from './http.ts';
import { slackPayloadOf, textOf, titleOf, webhookBodyOf } from './message.ts';
import { urlProblem, type NotificationTarget } from './schema.ts';
import { readSetting, SettingUnavailableError } from './secret.ts';

/**
 * Three attempts, a second or two apart: with the timeout of each, a target that does not answer
 * holds the command up about half a minute at most.
 */
export const NOTIFICATION_RETRY_POLICY: RetryPolicy = { attempts: 3, baseDelayMs: 1000, maxDelayMs: 4000 };
export const NOTIFICATION_TIMEOUT_MS = 10_000;

export interface SendOptions {
  /** Where `*-env` settings are read: the process's environment by default. */
  env?: NodeJS.ProcessEnv;
  retry?: RetryPolicy;
  /** For each attempt: a connection, a request, an SMTP conversation. */
  timeoutMs?: number;
}

export interface Delivery {
  /** The target's name, as warnings print it. */
  target: string;
  attempts: number;
}

export interface DeliveryFailure extends Delivery {
  /** What went wrong at the last attempt; it names no secret. */
  message: string;
}

export interface DeliveryReport {
  delivered: Delivery[];
  failed: DeliveryFailure[];
}

/** The targets that asked for this event. */
export function targetsFor(
  targets: readonly NotificationTarget[],
  event: NotificationEvent,
): NotificationTarget[] {
  return targets.filter((target) => target.events.includes(event.event));
}

/**
 * Sends an event to every target that asked for it, all at once, each retried on its own.
 * Never throws: what failed comes back in the report, for the caller to show as it shows
 * warnings. A notification is about an operation; it is never a reason for it to fail.
 */
export async function sendNotification(
  targets: readonly NotificationTarget[],
  event: NotificationEvent,
  options: SendOptions = {},
): Promise<DeliveryReport> {
  const report: DeliveryReport = { delivered: [], failed: [] };
  await Promise.all(
    targetsFor(targets, event).map(async (target) => {
      const outcome = await deliver(target, event, options);
      if ('message' in outcome) report.failed.push(outcome);
      else report.delivered.push(outcome);
    }),
  );
  return report;
}

async function deliver(
  target: NotificationTarget,
  event: NotificationEvent,
  options: SendOptions,
): Promise<Delivery | DeliveryFailure> {
  const secrets: string[] = [];
  let attempts = 0;
  try {
    const send = await prepare(target, event, options, secrets);
    await withRetries(
      (attempt) => {
        attempts = attempt;
        return send();
      },
      (error) => error instanceof DeliveryError && error.transient,
      options.retry ?? NOTIFICATION_RETRY_POLICY,
    );
    return { target: target.name, attempts };
  } catch (error) {
    const known = error instanceof DeliveryError || error instanceof SettingUnavailableError;
    const message = known ? error.message : `unexpected error: ${String(error)}`;
    return { target: target.name, attempts, message: redacted(message, secrets) };
  }
}

/**
 * Reads the target's settings and returns what sends one attempt. `secrets` collects every
 * value read from a variable or a file, which no message may repeat.
 */
async function prepare(
  target: NotificationTarget,
  event: NotificationEvent,
  options: SendOptions,
  secrets: string[],
): Promise<() => Promise<void>> {
  const env = options.env ?? process.env;
  const timeoutMs = options.timeoutMs ?? NOTIFICATION_TIMEOUT_MS;
  const secret = async (what: string, source: Parameters<typeof readSetting>[1]) => {
    const value = await readSetting(what, source, env);
    if (!('value' in source)) secrets.push(value);
    return value;
  };
  switch (target.type) {
    case 'webhook':
    case 'slack': {
      const url = await secret(`${target.type} URL`, target.url);
      const problem = urlProblem(url);
      if (problem) throw new DeliveryError(`its URL is not usable: ${problem}`, false);
      // A Slack URL's secret is its path; a server's error may quote the path alone.
      const { pathname, search } = new URL(url);
      if (!('value' in target.url)) secrets.push(...[pathname, search].filter((part) => part.length >= 8));
      if (target.type === 'slack') return slackSender(url, event, timeoutMs);
      const key = target.secret ? await secret('webhook secret', target.secret) : undefined;
      return webhookSender(url, key, event, timeoutMs);
    }
    case 'email': {
      const user = target.username ? await secret('SMTP user name', target.username) : undefined;
      const pass = target.password ? await secret('SMTP password', target.password) : undefined;
      const message = { subject: titleOf(event), text: textOf(event) };
      const credentials = user !== undefined && pass !== undefined ? { user, pass } : undefined;
      // nodemailer loads only when an email goes out: it cost every command ~60 ms of its start.
      return async () => (await import('./email.ts')).sendEmail(target, message, credentials, timeoutMs);
    }
  }
}

function webhookSender(
  url: string,
  key: string | undefined,
  event: NotificationEvent,
  timeoutMs: number,
): () => Promise<void> {
  const body = JSON.stringify(webhookBodyOf(event));
  // The same for every attempt, so that a receiver can tell a retry from a new event.
  const delivery = randomUUID();
  return () => {
    const timestamp = String(Math.floor(Date.now() / 1000));
    return postJson(
      url,
      body,
      {
        'X-Strongbox-Event': event.event,
        'X-Strongbox-Delivery': delivery,
        [TIMESTAMP_HEADER]: timestamp,
        ...(key === undefined ? {} : { [SIGNATURE_HEADER]: webhookSignature(key, timestamp, body) }),
      },
      timeoutMs,
    );
  };
}

function slackSender(url: string, event: NotificationEvent, timeoutMs: number): () => Promise<void> {
  const body = JSON.stringify(slackPayloadOf(event));
  return () => postJson(url, body, {}, timeoutMs);
}

/** A message with every secret in it replaced: no error text, ours or a server's, may carry one. */
function redacted(message: string, secrets: readonly string[]): string {
  let text = message;
  for (const secret of secrets) if (secret) text = text.replaceAll(secret, '[secret]');
  return text;
}
