import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ExitCode } from '../src/errors.ts';
import type { StorageBackend } from '../src/storage/backend.ts';
import { openSftpBackend } from '../src/storage/sftp.ts';
import { describeBackendConformance } from './helpers/backend-conformance.ts';
import { runCli, startCli, tempRepo, type RunResult, type TempRepo } from './helpers/cli.ts';
import { seededBytes } from './helpers/data.ts';
import { startFaultProxy, type FaultProxy } from './helpers/fault-proxy.ts';
import {
  generateKeyPair,
  hashKnownHosts,
  knownHostsLine,
  startSshd,
  type KeyPair,
  type TestSshd,
} from './helpers/sshd.ts';

let sshd: TestSshd;
let repositories = 0;

beforeAll(async () => {
  sshd = await startSshd();
});
afterAll(() => sshd?.stop());

/** A backend on a new directory of the test server, with the server's login settings. */
function openFresh(env: Record<string, string | undefined> = {}, query?: string): Promise<StorageBackend> {
  const url = sshd.url(`${sshd.dir}/repo-${++repositories}`, query);
  return openSftpBackend(new URL(url), { ...sshd.env(), ...env });
}

/** Fails with the command's stderr, which says more than a bare exit code. */
function expectExit(result: RunResult, code: number): void {
  expect({ code: result.code, stderr: result.stderr }).toMatchObject({ code });
}

type SftpRepo = TempRepo & { url: string; sftpEnv: Record<string, string> };

/** A temp repository whose directory the test server serves: `repo.repo` is the same directory seen locally. */
async function sftpRepo(): Promise<SftpRepo> {
  const repo = await tempRepo();
  const url = sshd.url(repo.repo);
  return { ...repo, url, sftpEnv: { ...repo.env, STRONGBOX_REPO: url, ...sshd.env() } };
}

/** Runs `test` with a fresh {@link sftpRepo} and always removes it. */
async function withSftpRepo(test: (repo: SftpRepo) => Promise<void>): Promise<void> {
  const repo = await sftpRepo();
  try {
    await test(repo);
  } finally {
    await repo.cleanup();
  }
}

async function filesUnder(root: string): Promise<string[]> {
  const entries = await fs.readdir(root, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries.filter((entry) => entry.isFile()).map((entry) => path.join(entry.parentPath, entry.name));
}

async function temporaryFiles(root: string): Promise<string[]> {
  return (await filesUnder(root)).filter((file) => path.basename(file).startsWith('.tmp-'));
}

async function snapshotNames(env: Record<string, string>): Promise<string[]> {
  const listed = await runCli(['snapshots', '--json'], { env });
  expectExit(listed, 0);
  return (JSON.parse(listed.stdout.toString()) as { name: string }[]).map((snapshot) => snapshot.name);
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

describeBackendConformance('sftp', () => openFresh());

describe('sftp backend', () => {
  it('writes files 0600 in directories 0700, and names no secret in its location', async () => {
    const store = await openFresh({ STRONGBOX_SFTP_KEY_PASSPHRASE: 'unused-secret' });
    try {
      await store.put('data/ab/abcdef', Buffer.from('pack'));
      const root = `${sshd.dir}/repo-${repositories}`;
      expect((await fs.stat(path.join(root, 'data/ab/abcdef'))).mode & 0o777).toBe(0o600);
      expect((await fs.stat(path.join(root, 'data/ab'))).mode & 0o777).toBe(0o700);
      expect((await fs.stat(path.join(root, 'data'))).mode & 0o777).toBe(0o700);
      expect(store.location).toBe(`sftp://${sshd.user}@127.0.0.1:${sshd.port}${root}`);
      expect(store.concurrency).toBe(4);
    } finally {
      await store.close();
    }
  });

  it('hides temporary files from listings and removes only those begun before the given time', async () => {
    const store = await openFresh({}, 'concurrency=2');
    try {
      expect(store.concurrency).toBe(2);
      await store.put('data/cd/cdef', Buffer.from('kept'));
      const dir = `${sshd.dir}/repo-${repositories}/data/cd`;
      const old = path.join(dir, '.tmp-0123456789abcdef');
      const fresh = path.join(dir, '.tmp-fedcba9876543210');
      await fs.writeFile(old, 'half a pack');
      await fs.writeFile(fresh, 'being written');
      const anHourAgo = new Date(Date.now() - 3600_000);
      await fs.utimes(old, anHourAgo, anHourAgo);

      const listed = [];
      for await (const object of store.list('data/')) listed.push(object.name);
      expect(listed).toEqual(['data/cd/cdef']);
      expect(await store.removeIncompleteUploads(new Date(Date.now() - 60_000))).toBe(1);
      expect((await fs.readdir(dir)).sort()).toEqual(['.tmp-fedcba9876543210', 'cdef']);
    } finally {
      await store.close();
    }
  });

  it('finds the key and known_hosts in ~/.ssh when nothing else is set', async () => {
    const home = await fs.mkdtemp(path.join(sshd.dir, 'home-'));
    try {
      await fs.mkdir(path.join(home, '.ssh'), { mode: 0o700 });
      await fs.copyFile(sshd.userKey.privateKeyFile, path.join(home, '.ssh', 'id_ed25519'));
      await fs.copyFile(sshd.knownHostsFile, path.join(home, '.ssh', 'known_hosts'));
      const url = new URL(sshd.url(`${sshd.dir}/repo-${++repositories}`));
      const store = await openSftpBackend(url, { HOME: home });
      await store.put('config', Buffer.from('x'));
      await store.close();

      await fs.rm(path.join(home, '.ssh', 'id_ed25519'));
      await expect(openSftpBackend(url, { HOME: home })).rejects.toMatchObject({
        exitCode: ExitCode.usage,
        message: expect.stringContaining('no SSH key'),
      });
    } finally {
      await fs.rm(home, { recursive: true, force: true });
    }
  });

  it('reads host keys from hashed known_hosts entries', async () => {
    const knownHosts = path.join(sshd.dir, 'known_hosts_hashed');
    await fs.writeFile(knownHosts, await fs.readFile(sshd.knownHostsFile));
    await hashKnownHosts(knownHosts);
    expect(await fs.readFile(knownHosts, 'utf8')).toMatch(/^\|1\|[^|]+\|[^ ]+ ssh-ed25519 /);
    const store = await openFresh({ STRONGBOX_SFTP_KNOWN_HOSTS: knownHosts });
    await store.put('config', Buffer.from('x'));
    await store.close();
  });

  it('matches known_hosts lines as ssh does: patterns, ports, markers and key types', async () => {
    const keyOf = (pair: KeyPair) => pair.publicKey.split(' ').slice(0, 2).join(' ');
    const ed25519 = keyOf(sshd.hostKey);
    const name = `[127.0.0.1]:${sshd.port}`;
    const other = keyOf(await generateKeyPair(sshd.dir, 'other_host_key'));
    const cases: [knownHosts: string, outcome: 'accepted' | 'is not in' | 'does not match' | '@revoked'][] = [
      [`# comment\n\nnot a known_hosts line\n${name} ${ed25519}`, 'accepted'],
      [`other.example,${name} ${ed25519} a comment`, 'accepted'],
      [`[127.0.0.?]:${sshd.port} ${ed25519}`, 'accepted'],
      [`* ${ed25519}`, 'accepted'],
      // The server has an ed25519 key too; it must be asked for the type known_hosts holds.
      [`${name} ${keyOf(sshd.ecdsaHostKey)}`, 'accepted'],
      [`*,!${name} ${ed25519}`, 'is not in'],
      // Without a port, a line names port 22 only.
      [`127.0.0.1 ${ed25519}`, 'is not in'],
      [`[127.0.0.1]:${sshd.port + 1} ${ed25519}`, 'is not in'],
      [`@cert-authority * ${ed25519}`, 'is not in'],
      [`${name} ${other}`, 'does not match'],
      [`${name} ${ed25519}\n@revoked * ${ed25519}`, '@revoked'],
    ];
    const file = path.join(sshd.dir, 'known_hosts_case');
    for (const [knownHosts, outcome] of cases) {
      await fs.writeFile(file, `${knownHosts}\n`);
      const opening = openFresh({ STRONGBOX_SFTP_KNOWN_HOSTS: file });
      if (outcome === 'accepted') await (await opening).close();
      else {
        await expect(opening, knownHosts).rejects.toMatchObject({
          exitCode: ExitCode.storage,
          message: expect.stringContaining(outcome),
        });
      }
    }
  });

  it('rejects passwords in the URL and unknown options', async () => {
    const withPassword = new URL(sshd.url(`${sshd.dir}/x`).replace('@', ':hunter2@'));
    await expect(openSftpBackend(withPassword, sshd.env())).rejects.toMatchObject({
      exitCode: ExitCode.usage,
      message: expect.not.stringContaining('hunter2'),
    });
    await expect(openFresh({}, 'region=eu')).rejects.toMatchObject({ exitCode: ExitCode.usage });
  });
});

describe('sftp repository through the CLI', () => {
  it('backs up files and stdin, restores them byte for byte and reads every pack back', async () => {
    await withSftpRepo(async (repo) => {
      expectExit(await runCli(['init', '--pack-size', '1'], { env: repo.sftpEnv }), 0);
      const source = path.join(repo.dir, 'source');
      await fs.mkdir(path.join(source, 'nested'), { recursive: true });
      await fs.writeFile(path.join(source, 'big.bin'), seededBytes('sftp-big', 3 * 1024 * 1024));
      await fs.writeFile(path.join(source, 'nested', 'small.txt'), 'small\n');
      const files = await runCli(['backup', 'files', source, '--json'], { env: repo.sftpEnv });
      expectExit(files, 0);
      const filesSnapshot = (JSON.parse(files.stdout.toString()) as { snapshot: string }).snapshot;

      const stream = seededBytes('sftp-stream', 2 * 1024 * 1024 + 17);
      expectExit(
        await runCli(['backup', 'stdin', '--name', 'stream.bin'], { env: repo.sftpEnv, input: stream }),
        0,
      );
      expect((await snapshotNames(repo.sftpEnv)).length).toBe(2);

      const target = path.join(repo.dir, 'restored');
      expectExit(
        await runCli(['restore', 'files', filesSnapshot, '--target', target], { env: repo.sftpEnv }),
        0,
      );
      for (const file of ['big.bin', 'nested/small.txt']) {
        const restored = await fs.readFile(path.join(target, source, file));
        expect(sha256(restored)).toBe(sha256(await fs.readFile(path.join(source, file))));
      }
      const cat = await runCli(['cat', 'latest'], { env: repo.sftpEnv });
      expectExit(cat, 0);
      expect(cat.stdout.equals(stream)).toBe(true);

      const check = await runCli(['check', '--read-data'], { env: repo.sftpEnv });
      expectExit(check, 0);
      expect(check.stderr).toMatch(/no errors were found/);
      expect((await fs.stat(path.join(repo.repo, 'config'))).mode & 0o777).toBe(0o600);
      expect(await temporaryFiles(repo.repo)).toEqual([]);
    });
  });

  it('exits after a failure that leaves the connection open (wrong password)', async () => {
    await withSftpRepo(async (repo) => {
      expectExit(await runCli(['init'], { env: repo.sftpEnv }), 0);
      const wrong = await runCli(['snapshots'], {
        env: { ...repo.sftpEnv, STRONGBOX_PASSWORD_FILE: undefined, STRONGBOX_PASSWORD: 'wrong' },
      });
      expectExit(wrong, ExitCode.key);
      expect(wrong.stderr).toContain(`at ${repo.url} opens with it`);
    });
  });

  it('refuses a host key known_hosts does not hold, printing its fingerprint and how to add it', async () => {
    await withSftpRepo(async (repo) => {
      const empty = path.join(repo.dir, 'known_hosts');
      await fs.writeFile(empty, '');
      const result = await runCli(['init'], { env: { ...repo.sftpEnv, STRONGBOX_SFTP_KNOWN_HOSTS: empty } });
      expectExit(result, ExitCode.storage);
      expect(result.stderr).toContain(sshd.hostKey.fingerprint);
      expect(result.stderr).toContain(`ssh-keyscan -p ${sshd.port} 127.0.0.1 >> ${empty}`);
      expect(result.stderr.trimEnd().split('\n')).toHaveLength(2);
      await expect(fs.stat(repo.repo)).rejects.toMatchObject({ code: 'ENOENT' });
    });
  });

  it('refuses a host key that differs from the one known_hosts holds', async () => {
    await withSftpRepo(async (repo) => {
      const impostor = await generateKeyPair(repo.dir, 'impostor');
      const knownHosts = path.join(repo.dir, 'known_hosts');
      await fs.writeFile(knownHosts, knownHostsLine('127.0.0.1', sshd.port, impostor.publicKey));
      const result = await runCli(
        ['init', '--repo', `${repo.url}?known-hosts=${encodeURIComponent(knownHosts)}`],
        {
          env: repo.sftpEnv,
        },
      );
      expectExit(result, ExitCode.storage);
      expect(result.stderr).toContain('does not match');
      expect(result.stderr).toContain(sshd.hostKey.fingerprint);
      expect(result.stderr).toContain(`ssh-keygen -R '[127.0.0.1]:${sshd.port}'`);
      await expect(fs.stat(repo.repo)).rejects.toMatchObject({ code: 'ENOENT' });
    });
  });

  it('fails at once with exit 6 when the server refuses the key', async () => {
    await withSftpRepo(async (repo) => {
      const stranger = await generateKeyPair(repo.dir, 'stranger');
      const result = await runCli(['init'], {
        env: { ...repo.sftpEnv, STRONGBOX_SFTP_IDENTITY_FILE: stranger.privateKeyFile },
      });
      expectExit(result, ExitCode.storage);
      expect(result.stderr).toContain(`refused the key ${stranger.privateKeyFile} for user ${sshd.user}`);
    });
  });

  it('logs in with an encrypted key and its passphrase, and says what is missing without it', async () => {
    await withSftpRepo(async (repo) => {
      const keyFile = path.join(repo.dir, 'encrypted');
      const passphrase = 'Otter-7-never-printed';
      await runTool('ssh-keygen', ['-q', '-t', 'ed25519', '-N', passphrase, '-f', keyFile]);
      await fs.appendFile(path.join(sshd.dir, 'authorized_keys'), await fs.readFile(`${keyFile}.pub`));
      const env = { ...repo.sftpEnv, STRONGBOX_SFTP_IDENTITY_FILE: keyFile };

      const without = await runCli(['init'], { env });
      expectExit(without, ExitCode.usage);
      expect(without.stderr).toContain('STRONGBOX_SFTP_KEY_PASSPHRASE');
      const withIt = await runCli(['init'], { env: { ...env, STRONGBOX_SFTP_KEY_PASSPHRASE: passphrase } });
      expectExit(withIt, 0);
      expect(withIt.stderr).not.toContain(passphrase);
    });
  });

  it('logs in through ssh-agent', async () => {
    await withSftpRepo(async (repo) => {
      const socket = path.join(repo.dir, 'agent.sock');
      const agent = spawn('ssh-agent', ['-D', '-a', socket], { stdio: 'ignore' });
      try {
        await waitFor(() =>
          fs.stat(socket).then(
            () => true,
            () => false,
          ),
        );
        await runTool('ssh-add', ['-q', sshd.userKey.privateKeyFile], { SSH_AUTH_SOCK: socket });
        const result = await runCli(['init'], {
          env: { ...repo.sftpEnv, STRONGBOX_SFTP_IDENTITY_FILE: undefined, SSH_AUTH_SOCK: socket },
        });
        expectExit(result, 0);
      } finally {
        await stop(agent);
      }
    });
  });
});

describe('sftp through a faulty network', () => {
  let proxy: FaultProxy;
  beforeAll(async () => {
    proxy = await startFaultProxy({ host: '127.0.0.1', port: sshd.port }, {}, 7);
  });
  afterEach(() => proxy.setFaults({}));
  afterAll(() => proxy?.close());

  /** The repository URL through the proxy; known_hosts names the server by the proxy's port. */
  async function throughProxy(repo: TempRepo): Promise<Record<string, string>> {
    const knownHosts = path.join(repo.dir, 'known_hosts_proxy');
    await fs.writeFile(knownHosts, knownHostsLine('127.0.0.1', proxy.port, sshd.hostKey.publicKey));
    return {
      ...repo.env,
      ...sshd.env(),
      STRONGBOX_REPO: `sftp://${sshd.user}@127.0.0.1:${proxy.port}${repo.repo}`,
      STRONGBOX_SFTP_KNOWN_HOSTS: knownHosts,
    };
  }

  it('survives resets, cuts mid-transfer and delays, and the result reads back whole', async () => {
    await withSftpRepo(async (repo) => {
      const env = await throughProxy(repo);
      proxy.setFaults({});
      expectExit(await runCli(['init', '--pack-size', '1'], { env }), 0);
      const input = seededBytes('sftp-faults', 6 * 1024 * 1024);
      const before = proxy.stats.faultsInjected;
      proxy.setFaults({
        resetOnConnect: 0.3,
        cutMidTransfer: 1,
        cutAfterMaxBytes: 3 * 1024 * 1024,
        delayMs: 1,
        firstConnections: 4,
      });
      const backup = await runCli(['backup', 'stdin', '--name', 'faulty.bin'], { env, input });
      expectExit(backup, 0);
      expect(proxy.stats.faultsInjected - before).toBeGreaterThan(1);
      expect(proxy.stats.byKind.cut).toBeGreaterThan(0);

      proxy.setFaults({});
      const check = await runCli(['check', '--read-data'], { env: repo.sftpEnv });
      expectExit(check, 0);
      const cat = await runCli(['cat', 'latest'], { env: repo.sftpEnv });
      expectExit(cat, 0);
      expect(cat.stdout.equals(input)).toBe(true);
    });
  });

  it('connects again after a login cut or fallen silent anywhere from the first byte to the SFTP channel', async () => {
    const knownHosts = path.join(sshd.dir, `known_hosts_${proxy.port}`);
    await fs.writeFile(knownHosts, knownHostsLine('127.0.0.1', proxy.port, sshd.hostKey.publicKey));
    const query = new URLSearchParams({ timeout: '1', 'known-hosts': knownHosts });
    const url = new URL(`sftp://${sshd.user}@127.0.0.1:${proxy.port}${sshd.dir}/login-faults?${query}`);
    const env = { SSH_AUTH_SOCK: undefined, ...sshd.env() };

    // A clean login and logout through the proxy: the bytes the faults are spread over.
    const start = proxy.stats.bytesForwarded;
    await (await openSftpBackend(url, env)).close();
    const loginBytes = proxy.stats.bytesForwarded - start;
    expect(loginBytes).toBeGreaterThan(1000);

    const marks = (count: number) =>
      Array.from({ length: count }, (_, index) =>
        Math.max(1, Math.round(((index + 0.5) * loginBytes) / count)),
      );
    // A silent server costs the one-second timeout: fewer of those.
    const cases = [
      ...marks(16).map((mark) => ({ mark, cutAs: 'reset' as const })),
      ...marks(4).map((mark) => ({ mark, cutAs: 'silence' as const })),
    ];
    for (const { mark, cutAs } of cases) {
      const kind = cutAs === 'reset' ? 'cut' : 'silence';
      const struck = proxy.stats.byKind[kind];
      proxy.setFaults({ cutMidTransfer: 1, cutAtByte: mark, cutAs, firstConnections: 1 });
      const backend = await openSftpBackend(url, env);
      try {
        const name = `${cutAs}-${mark}`;
        await backend.put(name, Buffer.from(name));
        expect({ mark, cutAs, read: (await backend.get(name)).toString() }).toEqual({
          mark,
          cutAs,
          read: name,
        });
      } finally {
        await backend.close();
      }
      // The fault struck the login, and the backend logged in again.
      expect({ mark, cutAs, struck: proxy.stats.byKind[kind] - struck }).toEqual({ mark, cutAs, struck: 1 });
    }
  });

  it('gives up on a connection that never answers, after ?timeout=, and connects again', async () => {
    await withSftpRepo(async (repo) => {
      const env = await throughProxy(repo);
      proxy.setFaults({ stall: 1, firstConnections: 1 });
      const stalls = proxy.stats.byKind.stall;
      expectExit(await runCli(['init', '--repo', `${env.STRONGBOX_REPO}?timeout=1`], { env }), 0);
      expect(proxy.stats.byKind.stall).toBe(stalls + 1);
    });
  });

  it('a backup killed mid-upload leaves no snapshot and no visible half file; unlock removes the rest', async () => {
    await withSftpRepo(async (repo) => {
      const env = await throughProxy(repo);
      proxy.setFaults({});
      expectExit(await runCli(['init', '--pack-size', '1'], { env: repo.sftpEnv }), 0);
      expectExit(
        await runCli(['backup', 'stdin', '--name', 'kept.bin'], { env: repo.sftpEnv, input: 'kept\n' }),
        0,
      );
      // Slow uploads, so that the kill lands while a pack is half written.
      proxy.setFaults({ delayMs: 5 });
      const child = startCli(
        ['backup', 'stdin', '--name', 'killed.bin', '--stdin-from-command', '--', ...PRODUCER],
        { env },
      );
      try {
        await waitFor(async () => (await temporaryFiles(path.join(repo.repo, 'data'))).length > 0);
      } finally {
        process.kill(-child.pid!, 'SIGKILL');
        await new Promise((resolve) => child.once('close', resolve));
      }
      proxy.setFaults({});

      expect(await temporaryFiles(repo.repo)).not.toEqual([]);
      expect(await snapshotNames(repo.sftpEnv)).toEqual(['kept.bin']);
      const store = await openSftpBackend(new URL(repo.url), sshd.env());
      try {
        for await (const object of store.list('')) expect(path.basename(object.name)).not.toMatch(/^\./);
      } finally {
        await store.close();
      }

      const unlock = await runCli(['unlock', '--json'], { env: repo.sftpEnv });
      expectExit(unlock, 0);
      expect(
        (JSON.parse(unlock.stdout.toString()) as { incompleteUploads: number }).incompleteUploads,
      ).toBeGreaterThan(0);
      expect(await temporaryFiles(repo.repo)).toEqual([]);
      const check = await runCli(['check', '--read-data'], { env: repo.sftpEnv });
      expectExit(check, 0);
    });
  });

  it('fails with exit 6 and a clear message when the repository directory cannot be written', async () => {
    await withSftpRepo(async (repo) => {
      // A file where the repository's parent directory should be: no retry can fix that.
      await fs.writeFile(path.join(repo.dir, 'blocker'), 'not a directory');
      const result = await runCli(['init', '--repo', sshd.url(path.join(repo.dir, 'blocker', 'repo'))], {
        env: repo.sftpEnv,
      });
      expectExit(result, ExitCode.storage);
      expect(result.stderr).toContain(
        `${path.join(repo.dir, 'blocker')} exists on the server and is not a directory`,
      );
    });
  });
});

/** Random, incompressible data for about four seconds; the backup is killed long before the end. */
const PRODUCER = [
  process.execPath,
  '-e',
  `const c=require('crypto');const t=setInterval(()=>process.stdout.write(c.randomBytes(65536)),2);setTimeout(()=>clearInterval(t),30000)`,
];

async function waitFor(condition: () => Promise<boolean>): Promise<void> {
  while (!(await condition())) await sleep(5);
}

function runTool(command: string, args: string[], env: Record<string, string> = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: { ...process.env, ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${command} failed: ${stderr}`))));
  });
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}
