import { execFile } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { simpleParser } from 'mailparser';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseConfigFile } from '../src/config-file/config-file.ts';
import type { NotificationEvent } from '../src/notify/event.ts';
import type { NotificationTarget } from '../src/notify/schema.ts';
import { sendNotification } from '../src/notify/send.ts';
import { expectExit, runCli, tempRepo, type TempRepo } from './helpers/cli.ts';

let dir: string;
/** A self-signed certificate for 127.0.0.1, made by openssl for this run. */
let certificate: { key: string; cert: string; certFile: string };

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'strongbox-notify-'));
  const keyFile = path.join(dir, 'key.pem');
  const certFile = path.join(dir, 'cert.pem');
  await promisify(execFile)('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-keyout',
    keyFile,
    '-out',
    certFile,
    '-days',
    '2',
    '-subj',
    '/CN=strongbox test SMTP',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
  ]);
  certificate = { key: await readFile(keyFile, 'utf8'), cert: await readFile(certFile, 'utf8'), certFile };
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Quick retries for the library's tests; the CLI's run with the default policy. */
const FAST = { retry: { attempts: 3, baseDelayMs: 10, maxDelayMs: 20 }, timeoutMs: 5000 };

interface Recorded {
  method: string | undefined;
  path: string | undefined;
  headers: IncomingHttpHeaders;
  body: string;
}

interface RecordingServer {
  url: string;
  requests: Recorded[];
  close(): Promise<void>;
}

/**
 * An HTTP server on loopback that records every request and answers the status `statusFor` gives
 * (of the request's index).
 */
async function recordingServer(statusFor: (index: number) => number = () => 200): Promise<RecordingServer> {
  const requests: Recorded[] = [];
  const server: Server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const index = requests.length;
      requests.push({
        method: request.method,
        path: request.url,
        headers: request.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      const status = statusFor(index);
      response.writeHead(status, { 'Content-Type': 'text/plain' });
      // As careless servers do, an error quotes the request: a secret in its path must not reach a warning.
      response.end(status < 300 ? 'ok' : `cannot handle ${request.url}`);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

interface ReceivedMail {
  from: string | undefined;
  to: string[];
  /** Whether the connection was TLS when the message came: STARTTLS or implicit. */
  secure: boolean;
  user: string | undefined;
  raw: Buffer;
}

interface MailServer {
  port: number;
  mails: ReceivedMail[];
  logins: { user: string; pass: string }[];
  /** Messages refused (as a 451 would be) before one is taken. */
  refused: number;
  close(): Promise<void>;
}

/** A real SMTP server (smtp-server) on a free loopback port, keeping what it receives. */
async function mailServer(
  options: SMTPServerOptions & { refuseFirst?: number; credentials?: { user: string; pass: string } },
): Promise<MailServer> {
  const { refuseFirst = 0, credentials, ...serverOptions } = options;
  const state: MailServer = { port: 0, mails: [], logins: [], refused: 0, close: async () => undefined };
  const server = new SMTPServer({
    key: certificate.key,
    cert: certificate.cert,
    logger: false,
    authOptional: !credentials,
    onAuth(auth, _session, callback) {
      const login = { user: auth.username ?? '', pass: auth.password ?? '' };
      state.logins.push(login);
      if (credentials && login.user === credentials.user && login.pass === credentials.pass) {
        callback(null, { user: login.user });
      } else callback(new Error('invalid user name or password'));
    },
    onData(stream, session, callback) {
      const chunks: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => chunks.push(chunk));
      stream.on('end', () => {
        if (state.refused < refuseFirst) {
          state.refused++;
          const error = Object.assign(new Error('try again later'), { responseCode: 451 });
          callback(error);
          return;
        }
        state.mails.push({
          from: session.envelope.mailFrom ? session.envelope.mailFrom.address : undefined,
          to: session.envelope.rcptTo.map((recipient) => recipient.address),
          secure: session.secure,
          user: typeof session.user === 'string' ? session.user : undefined,
          raw: Buffer.concat(chunks),
        });
        callback();
      });
    },
    ...serverOptions,
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  state.port = (server.server.address() as AddressInfo).port;
  state.close = () => new Promise((resolve) => server.close(() => resolve()));
  return state;
}

const EVENT: NotificationEvent = {
  event: 'backup-failed',
  time: new Date('2026-03-01T02:00:07.250Z'),
  operation: 'backup postgres',
  result: 'failure',
  subject: {
    repository: 's3://bucket/backups',
    host: 'db1',
    kind: 'postgres',
    name: 'app',
    env: 'production',
  },
  error: { message: 'pg_dump exited with status 1: connection refused', exitCode: 4 },
  durationSeconds: 12.5,
  figures: { read_bytes: 1048576 },
};

/** The targets a configuration file's `notifications:` section gives. */
function targetsOf(yaml: string): NotificationTarget[] {
  return parseConfigFile(yaml, 'test.yaml').notifications ?? [];
}

function expectSignature(request: Recorded, key: string): void {
  const timestamp = request.headers['x-strongbox-timestamp'] as string;
  expect(timestamp).toMatch(/^\d+$/);
  const expected = createHmac('sha256', key).update(`${timestamp}.${request.body}`).digest('hex');
  expect(request.headers['x-strongbox-signature']).toBe(`sha256=${expected}`);
}

describe('the notifications section', () => {
  it('takes webhooks, Slack and email, each with the failures unless it names its events', () => {
    const [webhook, slack, email] = targetsOf(`
notifications:
  - type: webhook
    url: https://hooks.example.com/strongbox?channel=ops
    secret-env: HOOK_SECRET
  - type: slack
    name: team channel
    url-file: /etc/strongbox/slack-url
    events: [backup-succeeded, backup-failed, health-changed]
  - type: email
    host: smtp.example.com
    from: backups@example.com
    to: [oncall@example.com, root@localhost]
    username: backups
    password-file: /etc/strongbox/smtp-password
`);
    expect(webhook).toEqual({
      type: 'webhook',
      name: 'webhook https://hooks.example.com',
      url: { value: 'https://hooks.example.com/strongbox?channel=ops' },
      secret: { env: 'HOOK_SECRET' },
      events: [
        'backup-failed',
        'check-failed',
        'forget-failed',
        'prune-failed',
        'copy-failed',
        'drill-failed',
        'drill-over-objective',
      ],
    });
    expect(slack).toMatchObject({
      name: 'team channel',
      url: { file: '/etc/strongbox/slack-url' },
      events: ['backup-succeeded', 'backup-failed', 'health-changed'],
    });
    expect(email).toMatchObject({
      name: 'email smtp.example.com:587',
      port: 587,
      secure: false,
      requireTls: true,
      username: { value: 'backups' },
      password: { file: '/etc/strongbox/smtp-password' },
    });
    expect(
      targetsOf('notifications:\n  - {type: email, host: h, secure: true, from: a@b, to: [c@d]}'),
    ).toEqual([expect.objectContaining({ port: 465, secure: true })]);
  });

  it.each([
    [
      'type: slack\n    url: https://hooks.slack.com/services/T0/B0/x',
      'notifications.0.url: a secret is not written in the configuration file: give url-env (an environment variable) or url-file',
    ],
    [
      'type: webhook\n    url: https://example.com/\n    secret: hunter2',
      'notifications.0.secret: a secret is not written in the configuration file',
    ],
    [
      'type: email\n    host: h\n    from: a@b\n    to: [c@d]\n    username: u\n    password: hunter2',
      'notifications.0.password: a secret is not written in the configuration file',
    ],
    ['type: webhook\n    url: https://u:p@example.com/', 'a URL with a user or password in it is refused'],
    [
      'type: webhook\n    url: ftp://example.com/',
      'notifications.0.url: expected an http:// or https:// URL',
    ],
    [
      'type: webhook\n    url-env: A\n    url-file: /b',
      'notifications.0.url-file: give one of url-env, url-file',
    ],
    ['type: webhook', 'notifications.0: missing url, url-env or url-file'],
    [
      'type: webhook\n    url: https://e/\n    events: [backup-done]',
      'notifications.0.events.0: expected one of',
    ],
    ['type: webhook\n    url: https://e/\n    events: []', 'expected at least one event'],
    ['type: webhook\n    url: https://e/\n    secret-env: "not a name"', 'secret-env: expected the name of'],
    ['type: pager', 'notifications.0.type: expected a type: webhook, slack or email'],
    [
      'type: email\n    host: h\n    from: a@b\n    to: ["c@d\\r\\nBcc: e@f"]',
      'notifications.0.to.0: expected an email',
    ],
    ['type: email\n    host: h\n    from: a@b\n    to: [c@d]\n    password-env: P', 'give both a user name'],
    [
      'type: email\n    host: h\n    from: a@b\n    to: [c@d]\n    tls: false',
      'notifications.0.tls: unknown key',
    ],
  ])('refuses %j', (entry, problem) => {
    expect(() => targetsOf(`notifications:\n  - ${entry}\n`)).toThrow(problem);
  });
});

describe('webhooks', () => {
  it('POST the event as JSON, signed over the timestamp and the raw body', async () => {
    const server = await recordingServer();
    try {
      const report = await sendNotification(
        targetsOf(`notifications:\n  - {type: webhook, url: "${server.url}/hook?x=1", secret-env: HOOK_KEY}`),
        EVENT,
        { ...FAST, env: { HOOK_KEY: 'webhook-signing-key' } },
      );
      expect(report).toEqual({
        delivered: [{ target: `webhook ${server.url}`, attempts: 1 }],
        failed: [],
      });
      expect(server.requests).toHaveLength(1);
      const [request] = server.requests;
      expect(request!.method).toBe('POST');
      expect(request!.path).toBe('/hook?x=1');
      expect(request!.headers['content-type']).toBe('application/json');
      expect(request!.headers['x-strongbox-event']).toBe('backup-failed');
      expect(request!.headers['x-strongbox-delivery']).toMatch(/^[0-9a-f-]{36}$/);
      expectSignature(request!, 'webhook-signing-key');
      expect(JSON.parse(request!.body)).toEqual({
        version: 1,
        event: 'backup-failed',
        title: 'strongbox: backup failed: postgres app on db1 (production)',
        time: '2026-03-01T02:00:07.250Z',
        operation: 'backup postgres',
        result: 'failure',
        subject: {
          repository: 's3://bucket/backups',
          host: 'db1',
          kind: 'postgres',
          name: 'app',
          env: 'production',
        },
        error: { message: 'pg_dump exited with status 1: connection refused', exitCode: 4 },
        durationSeconds: 12.5,
        figures: { read_bytes: 1048576 },
        details: {},
        sender: { program: expect.stringMatching(/^strongbox /), host: os.hostname() },
      });
    } finally {
      await server.close();
    }
  });

  it('read their URL and key from files, and go unsigned without a key', async () => {
    const server = await recordingServer();
    const urlFile = path.join(dir, 'hook-url');
    const keyFile = path.join(dir, 'hook-key');
    await writeFile(urlFile, `${server.url}/from-file\n`);
    await writeFile(keyFile, 'key-from-file\n');
    try {
      const report = await sendNotification(
        targetsOf(`
notifications:
  - {type: webhook, name: signed, url-file: ${urlFile}, secret-file: ${keyFile}}
  - {type: webhook, name: unsigned, url: "${server.url}/plain"}
`),
        EVENT,
        FAST,
      );
      expect(report.failed).toEqual([]);
      const signed = server.requests.find((request) => request.path === '/from-file')!;
      expectSignature(signed, 'key-from-file');
      const unsigned = server.requests.find((request) => request.path === '/plain')!;
      expect(unsigned.headers['x-strongbox-signature']).toBeUndefined();
      expect(unsigned.headers['x-strongbox-timestamp']).toMatch(/^\d+$/);
    } finally {
      await server.close();
    }
  });

  it('are retried with backoff: a server that fails twice receives a third attempt, the same delivery', async () => {
    const server = await recordingServer((index) => (index < 2 ? 503 : 204));
    try {
      const report = await sendNotification(
        targetsOf(`notifications:\n  - {type: webhook, url: "${server.url}", secret-env: K}`),
        EVENT,
        { ...FAST, env: { K: 'key' } },
      );
      expect(report).toEqual({ delivered: [{ target: `webhook ${server.url}`, attempts: 3 }], failed: [] });
      expect(server.requests).toHaveLength(3);
      expect(new Set(server.requests.map((request) => request.headers['x-strongbox-delivery'])).size).toBe(1);
      for (const request of server.requests) expectSignature(request, 'key');
    } finally {
      await server.close();
    }
  });

  it('are not retried when the answer says a retry cannot help', async () => {
    const server = await recordingServer(() => 404);
    try {
      const report = await sendNotification(
        targetsOf(`notifications:\n  - {type: webhook, name: hook, url: "${server.url}"}`),
        EVENT,
        FAST,
      );
      expect(report).toEqual({
        delivered: [],
        failed: [{ target: 'hook', attempts: 1, message: 'HTTP 404: cannot handle /' }],
      });
      expect(server.requests).toHaveLength(1);
    } finally {
      await server.close();
    }
  });

  it('report a target that cannot be reached, or whose secret is missing, without sending', async () => {
    const server = await recordingServer();
    const closed = server.url;
    await server.close();
    const report = await sendNotification(
      targetsOf(`
notifications:
  - {type: webhook, name: gone, url: "${closed}"}
  - {type: webhook, name: keyless, url: "${closed}", secret-env: NOT_SET}
  - {type: slack, url-file: ${path.join(dir, 'no-such-file')}}
`),
      EVENT,
      { ...FAST, env: {} },
    );
    expect(report.delivered).toEqual([]);
    expect(report.failed).toEqual(
      expect.arrayContaining([
        { target: 'gone', attempts: 3, message: 'request failed (ECONNREFUSED)' },
        { target: 'keyless', attempts: 0, message: 'the webhook secret variable NOT_SET is not set' },
        {
          target: 'slack',
          attempts: 0,
          message: `cannot read the slack URL file ${path.join(dir, 'no-such-file')}: no such file`,
        },
      ]),
    );
  });

  it('carry events that come from no command, a health change with its details', async () => {
    const server = await recordingServer();
    try {
      const report = await sendNotification(
        targetsOf(`notifications:\n  - {type: webhook, url: "${server.url}", events: [health-changed]}`),
        {
          event: 'health-changed',
          time: new Date('2026-03-02T03:00:00Z'),
          operation: 'health',
          result: 'failure',
          subject: { host: 'db1', kind: 'postgres', name: 'app' },
          details: { from: 'OK', to: 'CRITICAL', reason: 'newest snapshot is 30h old' },
        },
        FAST,
      );
      expect(report.failed).toEqual([]);
      expect(JSON.parse(server.requests[0]!.body)).toMatchObject({
        event: 'health-changed',
        title: 'strongbox: health changed: postgres app on db1',
        details: { from: 'OK', to: 'CRITICAL', reason: 'newest snapshot is 30h old' },
        figures: {},
      });
    } finally {
      await server.close();
    }
  });

  it('go only to the targets that asked for the event', async () => {
    const server = await recordingServer();
    try {
      const report = await sendNotification(
        targetsOf(`
notifications:
  - {type: webhook, name: failures, url: "${server.url}/failures"}
  - {type: webhook, name: successes, url: "${server.url}/successes", events: [backup-succeeded]}
`),
        { ...EVENT, event: 'backup-succeeded', result: 'success' },
        FAST,
      );
      expect(report.delivered.map((delivery) => delivery.target)).toEqual(['successes']);
      expect(server.requests.map((request) => request.path)).toEqual(['/successes']);
    } finally {
      await server.close();
    }
  });
});

describe('Slack', () => {
  it('gets text and blocks at the URL its variable holds, names escaped', async () => {
    const server = await recordingServer();
    try {
      const report = await sendNotification(
        targetsOf('notifications:\n  - {type: slack, url-env: SLACK_URL}'),
        { ...EVENT, subject: { ...EVENT.subject, name: 'app<!channel>' } },
        { ...FAST, env: { SLACK_URL: `${server.url}/services/T000/B000/XXXXXXXXXXXXXXXX` } },
      );
      expect(report.failed).toEqual([]);
      const [request] = server.requests;
      expect(request!.path).toBe('/services/T000/B000/XXXXXXXXXXXXXXXX');
      const payload = JSON.parse(request!.body) as {
        text: string;
        blocks: { type: string; text?: { type: string; text: string }; fields?: { text: string }[] }[];
      };
      expect(payload.text).toBe('strongbox: backup failed: postgres app&lt;!channel&gt; on db1 (production)');
      expect(payload.blocks.map((block) => block.type)).toEqual(['header', 'section', 'section', 'context']);
      expect(payload.blocks[0]!.text).toEqual({
        type: 'plain_text',
        text: 'strongbox: backup failed: postgres app<!channel> on db1 (production)',
      });
      expect(payload.blocks[1]!.fields).toContainEqual({ type: 'mrkdwn', text: '*Host*\ndb1' });
      expect(payload.blocks[1]!.fields).toContainEqual({
        type: 'mrkdwn',
        text: '*Name*\napp&lt;!channel&gt;',
      });
      expect(payload.blocks[2]!.text).toEqual({
        type: 'mrkdwn',
        text: '```pg_dump exited with status 1: connection refused```',
      });
    } finally {
      await server.close();
    }
  });
});

describe('email', () => {
  const emailTarget = (port: number, extra = ''): NotificationTarget[] =>
    targetsOf(`
notifications:
  - type: email
    host: 127.0.0.1
    port: ${port}
    from: backups@example.com
    to: [oncall@example.com, dba@example.com]
${extra}`);

  it('goes over STARTTLS with a login, to every recipient, saying what happened', async () => {
    const server = await mailServer({ credentials: { user: 'backups', pass: 'smtp-password-123' } });
    try {
      const targets = emailTarget(
        server.port,
        `    username-env: SMTP_USER\n    password-file: ${path.join(dir, 'smtp-password')}\n    ca-file: ${certificate.certFile}`,
      );
      await writeFile(path.join(dir, 'smtp-password'), 'smtp-password-123\n');
      const report = await sendNotification(targets, EVENT, { ...FAST, env: { SMTP_USER: 'backups' } });
      expect(report).toEqual({
        delivered: [{ target: `email 127.0.0.1:${server.port}`, attempts: 1 }],
        failed: [],
      });
      expect(server.logins).toEqual([{ user: 'backups', pass: 'smtp-password-123' }]);
      expect(server.mails).toHaveLength(1);
      const [mail] = server.mails;
      expect(mail!.secure).toBe(true);
      expect(mail!.user).toBe('backups');
      expect(mail!.from).toBe('backups@example.com');
      expect(mail!.to).toEqual(['oncall@example.com', 'dba@example.com']);
      const parsed = await simpleParser(mail!.raw);
      expect(parsed.subject).toBe('strongbox: backup failed: postgres app on db1 (production)');
      expect(parsed.text).toContain(
        'Error:       pg_dump exited with status 1: connection refused (exit code 4)',
      );
      expect(parsed.text).toContain('Host:        db1');
      expect(parsed.text).toContain('read_bytes:  1,048,576 bytes');
      expect(parsed.text).toContain('Duration:    12.5 s');
    } finally {
      await server.close();
    }
  });

  it('over implicit TLS with secure: true', async () => {
    const server = await mailServer({ secure: true });
    try {
      const report = await sendNotification(
        emailTarget(server.port, `    secure: true\n    ca-file: ${certificate.certFile}`),
        EVENT,
        FAST,
      );
      expect(report.failed).toEqual([]);
      expect(server.mails.map((mail) => mail.secure)).toEqual([true]);
    } finally {
      await server.close();
    }
  });

  it('refuses a certificate no authority it trusts signed, at once', async () => {
    const server = await mailServer({});
    try {
      const report = await sendNotification(emailTarget(server.port), EVENT, FAST);
      expect(report.failed).toEqual([
        expect.objectContaining({ attempts: 1, message: expect.stringMatching(/^SMTP: .*certificate/) }),
      ]);
      expect(server.mails).toEqual([]);
    } finally {
      await server.close();
    }
  });

  it('requires STARTTLS unless require-tls: false says a plain connection will do', async () => {
    const server = await mailServer({ disabledCommands: ['STARTTLS'] });
    try {
      const refused = await sendNotification(emailTarget(server.port), EVENT, FAST);
      expect(refused.failed).toEqual([
        expect.objectContaining({ message: expect.stringMatching(/STARTTLS/) }),
      ]);
      expect(server.mails).toEqual([]);
      const plain = await sendNotification(emailTarget(server.port, '    require-tls: false'), EVENT, FAST);
      expect(plain.failed).toEqual([]);
      expect(server.mails.map((mail) => mail.secure)).toEqual([false]);
    } finally {
      await server.close();
    }
  });

  it('is sent again after a transient refusal, and a wrong password is reported without the password', async () => {
    const server = await mailServer({ refuseFirst: 2, credentials: { user: 'backups', pass: 'right' } });
    try {
      const extra = `    username: backups\n    password-env: SMTP_PASSWORD\n    ca-file: ${certificate.certFile}`;
      const retried = await sendNotification(emailTarget(server.port, extra), EVENT, {
        ...FAST,
        env: { SMTP_PASSWORD: 'right' },
      });
      expect(retried.delivered).toEqual([expect.objectContaining({ attempts: 3 })]);
      expect(server.refused).toBe(2);
      expect(server.mails).toHaveLength(1);

      const wrong = await sendNotification(emailTarget(server.port, extra), EVENT, {
        ...FAST,
        env: { SMTP_PASSWORD: 'wrong-password-value' },
      });
      expect(wrong.failed).toEqual([
        expect.objectContaining({ attempts: 1, message: expect.stringMatching(/^SMTP: /) }),
      ]);
      expect(wrong.failed[0]!.message).not.toContain('wrong-password-value');
    } finally {
      await server.close();
    }
  });
});

describe('the CLI', () => {
  let repo: TempRepo;

  beforeAll(async () => {
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
  });

  afterAll(async () => {
    await repo.cleanup();
  });

  async function config(name: string, text: string): Promise<string> {
    const file = path.join(repo.dir, name);
    await writeFile(file, text);
    return file;
  }

  it('sends backup-succeeded to a webhook that asked for it, signed', async () => {
    const server = await recordingServer();
    try {
      const file = await config(
        'succeeded.yaml',
        `notifications:\n  - {type: webhook, url: "${server.url}/hook", secret-env: HOOK_SECRET, events: [backup-succeeded]}\n`,
      );
      const result = await runCli(
        ['--config', file, 'backup', 'stdin', '--name', 'mydb.dump', '--env', 'production', '--json'],
        { env: { ...repo.env, HOOK_SECRET: 'cli-signing-key' }, input: 'some data to keep' },
      );
      expectExit(result, 0);
      expect(result.stderr).not.toContain('warning');
      const { snapshot } = JSON.parse(result.stdout.toString()) as { snapshot: string };
      expect(server.requests).toHaveLength(1);
      const [request] = server.requests;
      expectSignature(request!, 'cli-signing-key');
      const body = JSON.parse(request!.body) as Record<string, unknown>;
      expect(body).toMatchObject({
        event: 'backup-succeeded',
        operation: 'backup stdin',
        result: 'success',
        snapshot,
        subject: {
          repository: repo.repo,
          host: os.hostname(),
          kind: 'stdin',
          name: 'mydb.dump',
          env: 'production',
        },
        figures: { size_bytes: 17 },
      });
      expect(body.error).toBeUndefined();
    } finally {
      await server.close();
    }
  });

  it('sends only failures by default: backup-failed, with the error and exit code', async () => {
    const server = await recordingServer();
    try {
      const file = await config(
        'failures.yaml',
        `notifications:\n  - {type: webhook, url: "${server.url}"}\n`,
      );
      const succeeded = await runCli(['--config', file, 'backup', 'stdin', '--name', 'quiet.dump'], {
        env: repo.env,
        input: 'data',
      });
      expectExit(succeeded, 0);
      expect(server.requests).toEqual([]);
      const failed = await runCli(
        ['--config', file, 'backup', 'stdin', '--name', 'broken.dump', '--stdin-from-command', '--', 'false'],
        { env: repo.env },
      );
      expectExit(failed, 4);
      expect(server.requests).toHaveLength(1);
      const body = JSON.parse(server.requests[0]!.body) as { event: string; error: { exitCode: number } };
      expect(body.event).toBe('backup-failed');
      expect(body.error.exitCode).toBe(4);
    } finally {
      await server.close();
    }
  });

  it('a target that always fails leaves the backup succeeded, with one warning naming it and no secret', async () => {
    const server = await recordingServer(() => 500);
    const slackUrlFile = path.join(repo.dir, 'slack-url');
    await writeFile(slackUrlFile, `${server.url}/services/TSECRET/BSECRET/slack-token-value\n`);
    try {
      const file = await config(
        'failing.yaml',
        `notifications:
  - {type: webhook, name: ops hook, url: "${server.url}/hook", secret-env: HOOK_SECRET, events: [backup-succeeded]}
  - {type: slack, url-file: ${slackUrlFile}, events: [backup-succeeded]}
`,
      );
      const result = await runCli(['--config', file, 'backup', 'stdin', '--name', 'mydb.dump'], {
        env: { ...repo.env, HOOK_SECRET: 'hook-secret-value' },
        input: 'more data',
      });
      expectExit(result, 0);
      const warnings = result.stderr.split('\n').filter((line) => line.startsWith('warning:'));
      expect(warnings.sort()).toEqual([
        'warning: notification to ops hook failed after 3 attempts: HTTP 500: cannot handle /hook (the backup stdin itself succeeded)',
        'warning: notification to slack failed after 3 attempts: HTTP 500: cannot handle [secret] (the backup stdin itself succeeded)',
      ]);
      expect(server.requests).toHaveLength(6);
      for (const secret of ['hook-secret-value', 'slack-token-value', 'TSECRET']) {
        expect(result.stderr).not.toContain(secret);
      }
    } finally {
      await server.close();
    }
  });
});
