import { z } from 'zod';
import { DEFAULT_EVENTS, EVENT_NAMES, type EventName } from './event.ts';

/**
 * The configuration file's `notifications:` section: a list of targets, each a webhook, a Slack
 * incoming webhook or an email relay. Secrets (an HMAC key, a Slack URL, an SMTP password) are
 * never written in the file: a key ending in `-env` names the environment variable holding one,
 * a key ending in `-file` the file. They are read when a notification is sent, so that a missing
 * one costs a warning, not the backup.
 */

/** Where a value comes from: the file itself (what is not secret), a variable, or a file. */
export type ValueSource = { value: string } | { env: string } | { file: string };
export type SecretSource = { env: string } | { file: string };

export interface WebhookTarget {
  type: 'webhook';
  /** How warnings name it. */
  name: string;
  url: ValueSource;
  /** The HMAC key that signs each request, if any. */
  secret?: SecretSource;
  events: EventName[];
}

export interface SlackTarget {
  type: 'slack';
  name: string;
  /** An incoming webhook's URL, which is all a sender needs: a secret. */
  url: SecretSource;
  events: EventName[];
}

export interface EmailTarget {
  type: 'email';
  name: string;
  host: string;
  port: number;
  /** Implicit TLS from the first byte (port 465), rather than STARTTLS. */
  secure: boolean;
  /** Without implicit TLS: refuse to send unless the server upgrades the connection with STARTTLS. */
  requireTls: boolean;
  /** Certificate authorities to trust besides the system's, in a PEM file: a private relay's. */
  caFile?: string;
  from: string;
  to: string[];
  username?: ValueSource;
  password?: SecretSource;
  events: EventName[];
}

export type NotificationTarget = WebhookTarget | SlackTarget | EmailTarget;

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const envName = z
  .string({ error: 'expected the name of an environment variable' })
  .regex(ENV_NAME, { error: 'expected the name of an environment variable (letters, digits, _)' });
const filePath = z.string({ error: 'expected a file path' }).min(1, { error: 'expected a file path' });

/** An address as SMTP takes it: local@domain, no spaces, brackets or separators (root@localhost too). */
const ADDRESS = /^[^\s@<>,;"()[\]\\]+@[^\s@<>,;"()[\]\\]+$/;
const address = z
  .string({ error: 'expected an email address' })
  .regex(ADDRESS, { error: 'expected an email address such as backups@example.com' });

/** A URL to POST to: http or https, with no user or password in it. */
export function urlProblem(text: string): string | undefined {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    return 'expected an http:// or https:// URL';
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') return 'expected an http:// or https:// URL';
  if (url.username || url.password) return 'a URL with a user or password in it is refused';
  return undefined;
}

const url = z.string({ error: 'expected a URL' }).superRefine((text, context) => {
  const problem = urlProblem(text);
  if (problem) context.addIssue({ code: 'custom', message: problem, input: text });
});

const events = z
  .array(z.enum(EVENT_NAMES, { error: `expected one of ${EVENT_NAMES.join(', ')}` }), {
    error: 'expected a list of events',
  })
  .min(1, { error: 'expected at least one event (leave the key out for the failures)' })
  .optional()
  .transform((list) => [...new Set(list ?? DEFAULT_EVENTS)]);

const name = z.string({ error: 'expected a name' }).min(1).max(100).optional();

const webhookEntry = z.strictObject({
  type: z.literal('webhook'),
  name,
  url: url.optional(),
  'url-env': envName.optional(),
  'url-file': filePath.optional(),
  /** Only to say why it is refused. */
  secret: z.unknown().optional(),
  'secret-env': envName.optional(),
  'secret-file': filePath.optional(),
  events,
});

const slackEntry = z.strictObject({
  type: z.literal('slack'),
  name,
  /** Only to say why it is refused: a Slack webhook's URL is a secret. */
  url: z.unknown().optional(),
  'url-env': envName.optional(),
  'url-file': filePath.optional(),
  events,
});

const emailEntry = z.strictObject({
  type: z.literal('email'),
  name,
  host: z.string({ error: 'expected the SMTP server host name' }).min(1),
  port: z
    .number({ error: 'expected a port number' })
    .int({ error: 'expected a port number' })
    .min(1, { error: 'expected a port number' })
    .max(65535, { error: 'expected a port number' })
    .optional(),
  secure: z.boolean({ error: 'expected true or false' }).optional(),
  'require-tls': z.boolean({ error: 'expected true or false' }).optional(),
  'ca-file': filePath.optional(),
  from: address,
  to: z.array(address, { error: 'expected a list of email addresses' }).min(1, {
    error: 'expected at least one address',
  }),
  username: z.string({ error: 'expected a user name' }).min(1).optional(),
  'username-env': envName.optional(),
  'username-file': filePath.optional(),
  /** Only to say why it is refused. */
  password: z.unknown().optional(),
  'password-env': envName.optional(),
  'password-file': filePath.optional(),
  events,
});

type Context = z.RefinementCtx;

/**
 * The one source of `key` given as `key`, `key-env` or `key-file`: more than one is an error,
 * none is an error when `required`. `inline` false refuses `key` itself: it is a secret.
 */
function sourceOf(
  entry: Record<string, unknown>,
  key: string,
  context: Context,
  { required, inline }: { required: boolean; inline: boolean },
): ValueSource | undefined {
  const given = [key, `${key}-env`, `${key}-file`].filter((name) => entry[name] !== undefined);
  if (!inline && entry[key] !== undefined) {
    context.addIssue({
      code: 'custom',
      path: [key],
      message: `a secret is not written in the configuration file: give ${key}-env (an environment variable) or ${key}-file`,
      input: undefined,
    });
    return undefined;
  }
  if (given.length > 1) {
    context.addIssue({
      code: 'custom',
      path: [given[1]!],
      message: `give one of ${given.join(', ')}`,
      input: undefined,
    });
    return undefined;
  }
  if (given.length === 0) {
    if (required) {
      context.addIssue({
        code: 'custom',
        path: [],
        message: `missing ${inline ? `${key}, ` : ''}${key}-env or ${key}-file`,
        input: undefined,
      });
    }
    return undefined;
  }
  if (entry[key] !== undefined) return { value: entry[key] as string };
  if (entry[`${key}-env`] !== undefined) return { env: entry[`${key}-env`] as string };
  return { file: entry[`${key}-file`] as string };
}

/** The name of a URL target that warnings use: its origin when the URL is in the file, never its path. */
function urlTargetName(type: string, source: ValueSource): string {
  return 'value' in source ? `${type} ${new URL(source.value).origin}` : type;
}

const webhook = webhookEntry.transform((entry, context): WebhookTarget => {
  const urlSource = sourceOf(entry, 'url', context, { required: true, inline: true });
  const secret = sourceOf(entry, 'secret', context, { required: false, inline: false }) as
    SecretSource | undefined;
  if (!urlSource) return z.NEVER;
  return {
    type: 'webhook',
    name: entry.name ?? urlTargetName('webhook', urlSource),
    url: urlSource,
    ...(secret ? { secret } : {}),
    events: entry.events,
  };
});

const slack = slackEntry.transform((entry, context): SlackTarget => {
  const urlSource = sourceOf(entry, 'url', context, { required: true, inline: false }) as
    SecretSource | undefined;
  if (!urlSource) return z.NEVER;
  return { type: 'slack', name: entry.name ?? 'slack', url: urlSource, events: entry.events };
});

const email = emailEntry.transform((entry, context): EmailTarget => {
  const username = sourceOf(entry, 'username', context, { required: false, inline: true });
  const password = sourceOf(entry, 'password', context, { required: false, inline: false }) as
    SecretSource | undefined;
  if (Boolean(username) !== Boolean(password) && entry.password === undefined) {
    context.addIssue({
      code: 'custom',
      path: [],
      message: 'give both a user name and a password, or neither',
      input: undefined,
    });
  }
  const secure = entry.secure ?? false;
  if (secure && entry['require-tls'] === false) {
    context.addIssue({
      code: 'custom',
      path: ['require-tls'],
      message: 'secure: true is TLS from the first byte; require-tls: false cannot apply to it',
      input: undefined,
    });
  }
  const port = entry.port ?? (secure ? 465 : 587);
  return {
    type: 'email',
    name: entry.name ?? `email ${entry.host}:${port}`,
    host: entry.host,
    port,
    secure,
    requireTls: entry['require-tls'] ?? true,
    ...(entry['ca-file'] !== undefined ? { caFile: entry['ca-file'] } : {}),
    from: entry.from,
    to: entry.to,
    ...(username ? { username } : {}),
    ...(password ? { password } : {}),
    events: entry.events,
  };
});

const TYPES = 'webhook, slack or email';

export const notificationTargetSchema = z.discriminatedUnion('type', [webhook, slack, email], {
  error: (issue) =>
    issue.code === 'invalid_union' ? `expected a type: ${TYPES}` : 'expected a target with a type',
});

export const notificationsSchema = z.array(notificationTargetSchema, {
  error: `expected a list of targets, each with a type: ${TYPES}`,
});
