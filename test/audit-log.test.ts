import { createSocket, type Socket } from 'node:dgram';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRepository, type AuditLogEntry } from '../src/index.ts';
import { expectExit, runCli, startCli, tempRepo, type RunResult, type TempRepo } from './helpers/cli.ts';

/**
 * The audit log through the built binary: what each command records in the repository, what
 * `strongbox log` shows of it, the mirrors (a JSON-lines file, syslog through logger(1) to a
 * real UDP socket), and that no secret reaches any of them.
 */

const PASSWORD = 'audit password never recorded';
const NEW_KEY_PASSWORD = 'second key password never recorded';
const WRITER_PASSWORD = 'write-only key password never recorded';
const URL_SECRET = 'urlsecretneverrecorded';
const QUERY_SECRET = 'querysecretneverrecorded';
const SECRETS = [PASSWORD, NEW_KEY_PASSWORD, WRITER_PASSWORD, URL_SECRET, QUERY_SECRET];

let repo: TempRepo;
let mirror: string;
let syslog: Socket;
const syslogMessages: string[] = [];
let env: Record<string, string>;

async function cli(args: string[], extra: Record<string, string> = {}): Promise<RunResult> {
  return runCli(args, { env: { ...env, ...extra } });
}

async function auditLog(args: string[] = []): Promise<AuditLogEntry[]> {
  const result = await cli(['log', '--json', ...args]);
  expectExit(result, 0);
  return JSON.parse(result.stdout.toString()) as AuditLogEntry[];
}

function records(entries: AuditLogEntry[]) {
  return entries.flatMap((entry) => ('record' in entry ? [{ ...entry.record, key: entry.key }] : []));
}

async function mirrored(): Promise<Record<string, unknown>[]> {
  const text = await fs.readFile(mirror, 'utf8');
  return text
    .trimEnd()
    .split('\n')
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

async function until(condition: () => Promise<boolean> | boolean): Promise<void> {
  while (!(await condition())) await new Promise((resolve) => setTimeout(resolve, 20));
}

let firstSnapshot: string;
let fullKey: string;

beforeAll(async () => {
  repo = await tempRepo(PASSWORD);
  mirror = path.join(repo.dir, 'audit.jsonl');
  syslog = createSocket('udp4');
  syslog.on('message', (message) => syslogMessages.push(message.toString('utf8')));
  await new Promise<void>((resolve) => syslog.bind(0, '127.0.0.1', resolve));
  const config = path.join(repo.dir, 'strongbox.yaml');
  await fs.writeFile(
    config,
    `audit:\n  file: audit.jsonl\n  syslog-server: udp://127.0.0.1:${syslog.address().port}\n`,
  );
  env = { ...repo.env, STRONGBOX_CONFIG: config };
  await fs.writeFile(path.join(repo.dir, 'new-password'), `${NEW_KEY_PASSWORD}\n`);
  await fs.writeFile(path.join(repo.dir, 'writer-password'), `${WRITER_PASSWORD}\n`);
  const source = path.join(repo.dir, 'source');
  await fs.mkdir(source);
  await fs.writeFile(path.join(source, 'app.conf'), 'port = 80\n');

  expectExit(await cli(['init', '-q']), 0);
  // The password given through a command line the record must not show.
  const backup = await cli([
    '--password-command',
    `printf %s '${PASSWORD}'`,
    'backup',
    'files',
    source,
    '--tag',
    'env=audit',
    '--json',
  ]);
  expectExit(backup, 0);
  firstSnapshot = (JSON.parse(backup.stdout.toString()) as { snapshot: string }).snapshot;
  expectExit(await cli(['backup', 'files', source, '-q']), 0);
  expectExit(await cli(['forget', firstSnapshot, '-q']), 0);
  expectExit(await cli(['restore', 'files', 'ffffffff', '--target', path.join(repo.dir, 'target')]), 3);
  expectExit(await cli(['key', 'add', '--new-password-file', path.join(repo.dir, 'new-password')]), 0);
  // A location with credentials in it: refused after the backup, and recorded without them.
  const copyTo = await cli(
    ['backup', 'files', source, '--copy-to', `sftp://user:${URL_SECRET}@127.0.0.1:1/x?token=${QUERY_SECRET}`],
    { STRONGBOX_COPY_TO_PASSWORD: PASSWORD },
  );
  expectExit(copyTo, 3);
  const keys = await cli(['key', 'list', '--json']);
  fullKey = (JSON.parse(keys.stdout.toString()) as { current: boolean; writer: string }[]).find(
    (key) => key.current,
  )!.writer;
}, 120_000);

afterAll(async () => {
  syslog.close();
  await repo.cleanup();
});

describe('strongbox log', () => {
  it('lists every operation in order, with its key, host, user and result', async () => {
    const listed = records(await auditLog());
    expect(listed.map((record) => [record.operation, record.result, record.exitCode])).toEqual([
      ['init', 'success', 0],
      ['backup files', 'success', 0],
      ['backup files', 'success', 0],
      ['forget', 'success', 0],
      ['restore files', 'failure', 3],
      ['key add', 'success', 0],
      ['backup files', 'failure', 3],
    ]);
    for (const record of listed) {
      expect(record.key).toEqual({ id: fullKey, kind: 'full' });
      expect(record.host).toBeTruthy();
      expect(record.user).toBeTruthy();
      expect(Date.parse(record.finished)).toBeGreaterThanOrEqual(Date.parse(record.started));
    }
    expect(listed[1]!.snapshot).toBe(firstSnapshot);
    // The program's options first, then the command's, then its arguments.
    expect(listed[1]!.arguments).toEqual([
      '--password-command',
      '<withheld>',
      '--json',
      '--tag',
      'env=audit',
      path.join(repo.dir, 'source'),
    ]);
    expect(listed[3]!.arguments).toEqual(['--quiet', firstSnapshot]);
    expect(listed[4]!.message).toMatch(/ffffffff/);
    expect(listed[6]!.arguments).toContain('sftp://127.0.0.1:1/x');
    // The listing commands themselves leave nothing.
    expect(listed.some((record) => ['log', 'key list', 'snapshots'].includes(record.operation))).toBe(false);
  });

  it('prints one line per record, and selects the newest and an operation', async () => {
    const text = await cli(['log']);
    expectExit(text, 0);
    const lines = text.stdout.toString().trimEnd().split('\n');
    expect(lines).toHaveLength(7);
    expect(lines[4]).toMatch(
      new RegExp(
        `^\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d  \\S+  \\S+  key ${fullKey.slice(0, 8)}  restore files .*→ failure \\(exit 3\\)`,
      ),
    );
    expect(records(await auditLog(['--last', '2'])).map((record) => record.operation)).toEqual([
      'key add',
      'backup files',
    ]);
    const backups = records(await auditLog(['--operation', 'backup', '--last', '2']));
    expect(backups.map((record) => [record.operation, record.result])).toEqual([
      ['backup files', 'success'],
      ['backup files', 'failure'],
    ]);
    expect(records(await auditLog(['--operation', 'key'])).map((record) => record.operation)).toEqual([
      'key add',
    ]);
  });

  it('holds no password or URL credential, in the records or the mirrors', async () => {
    const repository = await openRepository({ repo: repo.repo, passphrase: PASSWORD, stateDirectory: false });
    let decrypted: string;
    try {
      decrypted = JSON.stringify(await repository.readAuditLog());
    } finally {
      await repository.close();
    }
    const file = await fs.readFile(mirror, 'utf8');
    await until(() => syslogMessages.length >= 7);
    for (const secret of SECRETS) {
      expect(decrypted).not.toContain(secret);
      expect(file).not.toContain(secret);
      expect(syslogMessages.join('\n')).not.toContain(secret);
    }
    expect(decrypted).toContain('<withheld>');
  });

  it('mirrors each record as a JSON line, and to syslog, naming where it is stored', async () => {
    const lines = await mirrored();
    const stored = (await auditLog()).map((entry) => entry.name);
    expect(lines.map((line) => line.operation)).toEqual(
      records(await auditLog()).map((record) => record.operation),
    );
    expect(lines.map((line) => line.stored)).toEqual(stored);
    expect(lines[0]).toMatchObject({ repository: repo.repo, key: { id: fullKey, kind: 'full' } });
    await until(() => syslogMessages.length >= 7);
    const fromSyslog = syslogMessages.map((message) => {
      expect(message).toMatch(/strongbox/);
      return JSON.parse(message.slice(message.indexOf('{'))) as { operation: string; result: string };
    });
    expect(fromSyslog.map((message) => message.operation)).toEqual(lines.map((line) => line.operation));
    // RFC 5424: <PRI>1 …; user.err (11) for a failure, user.notice (13) for a success.
    expect(syslogMessages[4]).toMatch(/^<11>1 /);
    expect(syslogMessages[0]).toMatch(/^<13>1 /);
  });

  it('mirrors a command whose key did not open the repository, which the repository cannot hold', async () => {
    const before = (await mirrored()).length;
    expectExit(await cli(['prune'], { STRONGBOX_PASSWORD_FILE: path.join(repo.dir, 'writer-password') }), 5);
    const lines = await mirrored();
    expect(lines).toHaveLength(before + 1);
    expect(lines.at(-1)).toMatchObject({
      operation: 'prune',
      result: 'failure',
      exitCode: 5,
      key: null,
      stored: null,
      repository: repo.repo,
    });
    expect(records(await auditLog()).some((record) => record.operation === 'prune')).toBe(false);
  });

  it('shows the write-only key that appended a record, and its kind', async () => {
    expectExit(
      await cli([
        'key',
        'add',
        '--write-only',
        '--new-password-file',
        path.join(repo.dir, 'writer-password'),
      ]),
      0,
    );
    const writer = { STRONGBOX_PASSWORD_FILE: path.join(repo.dir, 'writer-password') };
    expectExit(await cli(['backup', 'files', path.join(repo.dir, 'source'), '-q'], writer), 0);
    const [last] = (await auditLog(['--last', '1'])) as Extract<AuditLogEntry, { record: unknown }>[];
    expect(last!.record.operation).toBe('backup files');
    expect(last!.status).toBe('verified');
    expect(last!.key.kind).toBe('write-only');
    expect(last!.key.id).not.toBe(fullKey);
    const text = await cli(['log', '--last', '1']);
    expect(text.stdout.toString()).toContain(`key ${last!.key.id.slice(0, 8)} (w)  backup files`);
    // The host reads the log too: it needs no more than the metadata key.
    expectExit(await cli(['log', '--last', '1'], writer), 0);
  });

  it('reports a damaged record and an object that is no record, and shows the rest', async () => {
    const entries = await auditLog();
    const victim = entries.find((entry) => 'record' in entry && entry.record.operation === 'forget')!;
    const file = path.join(repo.repo, victim.name);
    const bytes = await fs.readFile(file);
    bytes[20]! ^= 0xff;
    await fs.writeFile(file, bytes);
    await fs.writeFile(path.join(repo.repo, 'audit', 'planted'), 'not a record');
    const after = await auditLog();
    expect(after).toHaveLength(entries.length + 1);
    expect(after.find((entry) => entry.name === victim.name)).toMatchObject({
      status: 'damaged',
      problem: expect.stringMatching(/does not decrypt/),
    });
    expect(after.find((entry) => entry.name === 'audit/planted')).toMatchObject({ status: 'damaged' });
    const text = await cli(['log']);
    expectExit(text, 0);
    expect(text.stdout.toString()).toContain(`${victim.name}  damaged:`);
    expect(text.stderr).toMatch(/2 that cannot be believed/);
  });

  it('records the check, and its result for health checks', async () => {
    expectExit(await cli(['check', '-q']), 0);
    const repository = await openRepository({ repo: repo.repo, passphrase: PASSWORD, stateDirectory: false });
    try {
      const { trusted, problems } = await repository.listResults('check');
      expect(problems).toEqual([]);
      expect(trusted.map((result) => result.value)).toEqual([
        expect.objectContaining({ result: 'success', exitCode: 0, readData: 0, problems: 0 }),
      ]);
      expect(trusted[0]!.writer).toBe(fullKey);
    } finally {
      await repository.close();
    }
    // A write-only key checks the structure, and records no result.
    const writer = { STRONGBOX_PASSWORD_FILE: path.join(repo.dir, 'writer-password') };
    expectExit(await cli(['check', '-q'], writer), 0);
    expect(await fs.readdir(path.join(repo.repo, 'results', 'check'))).toHaveLength(1);
    expect(records(await auditLog(['--operation', 'check'])).map((record) => record.key.kind)).toEqual([
      'full',
      'write-only',
    ]);
    // strongbox metrics reports the recorded check, of the repository as a whole.
    const exposition = (await cli(['metrics'])).stdout.toString();
    expect(exposition).toMatch(/^strongbox_check_last_success_timestamp_seconds\{repository="[^"]+"\} \d/m);
    expect(exposition).not.toMatch(/^strongbox_check_last_failure_timestamp_seconds/m);
  });

  it('records a command interrupted by SIGTERM as interrupted', async () => {
    const child = startCli(['backup', 'stdin', '--name', 'slow'], { env, stdin: 'pipe' });
    child.stdin!.write('some bytes, and then nothing until the signal');
    const locks = path.join(repo.repo, 'locks');
    await until(async () => (await fs.readdir(locks).catch(() => [])).some((name) => !name.startsWith('.')));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    child.kill('SIGTERM');
    expect(await exited).toBe(143);
    const [last] = records(await auditLog(['--last', '1']));
    expect(last).toMatchObject({ operation: 'backup stdin', result: 'interrupted' });
    expect((await mirrored()).at(-1)).toMatchObject({ operation: 'backup stdin', result: 'interrupted' });
  });

  it('stores nothing with --no-lock, and says where the record went', async () => {
    const before = (await fs.readdir(path.join(repo.repo, 'audit'))).length;
    const restored = await cli([
      '--no-lock',
      'restore',
      'files',
      'latest',
      '--target',
      path.join(repo.dir, 'out'),
    ]);
    expectExit(restored, 0);
    expect(restored.stderr).not.toContain('warning');
    expect(await fs.readdir(path.join(repo.repo, 'audit'))).toHaveLength(before);
    expect((await mirrored()).at(-1)).toMatchObject({ operation: 'restore files', stored: null });
  });
});
