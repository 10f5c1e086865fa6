import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './free-port.ts';

const SSHD = '/usr/sbin/sshd';
const SSH_KEYGEN = 'ssh-keygen';
/** sshd's privilege separation directory; Debian's package creates it at boot, which a container skips. */
const PRIVSEP_DIR = '/run/sshd';
const START_ATTEMPTS = 5;

const execFileAsync = promisify(execFile);

export interface KeyPair {
  privateKeyFile: string;
  /** The public key as one `type base64 comment` line. */
  publicKey: string;
  /** `SHA256:…` as ssh prints it. */
  fingerprint: string;
}

export interface TestSshd {
  host: string;
  port: number;
  /** The account the tests log in as: the user running them (root here). */
  user: string;
  /** A temp directory that lives as long as the server; tests may put files in it. */
  dir: string;
  hostKey: KeyPair;
  /** A second host key, of another type: the server offers both. */
  ecdsaHostKey: KeyPair;
  /** The key authorized to log in. */
  userKey: KeyPair;
  /** A known_hosts file holding the server's key as `[127.0.0.1]:port`, plain. */
  knownHostsFile: string;
  /** `sftp://user@host:port/<remotePath>`, with `query` appended when given. */
  url(remotePath: string, query?: string): string;
  /** What a strongbox process needs to log in: the identity file and the known_hosts file. */
  env(): Record<string, string>;
  /** Stops the server and removes its directory. Safe to call twice. */
  stop(): Promise<void>;
}

/** Servers still running, killed if the test process exits without stopping them. */
const running = new Set<{ child: ChildProcess; dir: string }>();
process.on('exit', () => {
  for (const server of running) {
    server.child.kill('SIGKILL');
    rmSync(server.dir, { recursive: true, force: true });
  }
});

/**
 * Starts Debian's sshd on a free loopback port with a configuration, host key and authorized key
 * of its own in a temp directory: the system's sshd configuration and port 22 are never touched.
 * It allows public-key login only, and serves SFTP in-process (internal-sftp).
 */
export async function startSshd(): Promise<TestSshd> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'strongbox-sshd-'));
  try {
    const hostKey = await generateKeyPair(dir, 'host_ed25519');
    const ecdsaHostKey = await generateKeyPair(dir, 'host_ecdsa', 'ecdsa');
    const userKey = await generateKeyPair(dir, 'user_ed25519');
    await writeFile(path.join(dir, 'authorized_keys'), `${userKey.publicKey}\n`, { mode: 0o600 });
    if (process.getuid?.() === 0) await mkdir(PRIVSEP_DIR, { recursive: true, mode: 0o755 });
    const { child, port } = await startServer(dir);
    const entry = { child, dir };
    running.add(entry);
    const host = '127.0.0.1';
    const knownHostsFile = path.join(dir, 'known_hosts');
    await writeFile(knownHostsFile, knownHostsLine(host, port, hostKey.publicKey));
    const user = os.userInfo().username;
    let stopping: Promise<void> | undefined;
    return {
      host,
      port,
      user,
      dir,
      hostKey,
      ecdsaHostKey,
      userKey,
      knownHostsFile,
      url: (remotePath, query) =>
        `sftp://${user}@${host}:${port}/${remotePath.replace(/^\/+/, '')}${query ? `?${query}` : ''}`,
      env: () => ({
        STRONGBOX_SFTP_IDENTITY_FILE: userKey.privateKeyFile,
        STRONGBOX_SFTP_KNOWN_HOSTS: knownHostsFile,
      }),
      stop() {
        stopping ??= (async () => {
          try {
            await stopProcess(child);
          } finally {
            running.delete(entry);
            await rm(dir, { recursive: true, force: true });
          }
        })();
        return stopping;
      },
    };
  } catch (error) {
    await rm(dir, { recursive: true, force: true });
    throw error;
  }
}

/** A throwaway key pair without passphrase, made by ssh-keygen in `dir`. */
export async function generateKeyPair(
  dir: string,
  name: string,
  type: 'ed25519' | 'ecdsa' = 'ed25519',
): Promise<KeyPair> {
  const privateKeyFile = path.join(dir, name);
  await execFileAsync(SSH_KEYGEN, ['-q', '-t', type, '-N', '', '-C', name, '-f', privateKeyFile]);
  const publicKey = (await readFile(`${privateKeyFile}.pub`, 'utf8')).trim();
  const blob = Buffer.from(publicKey.split(' ')[1] ?? '', 'base64');
  const fingerprint = `SHA256:${createHash('sha256').update(blob).digest('base64').replace(/=+$/, '')}`;
  return { privateKeyFile, publicKey, fingerprint };
}

/** A known_hosts line for `host:port` as ssh writes it (plain, `[host]:port` unless port 22). */
export function knownHostsLine(host: string, port: number, publicKey: string): string {
  const name = port === 22 ? host : `[${host}]:${port}`;
  const [type, base64] = publicKey.split(' ');
  return `${name} ${type} ${base64}\n`;
}

/** Hashes every host name of a known_hosts file in place, as `ssh-keygen -H` does. */
export async function hashKnownHosts(file: string): Promise<void> {
  await execFileAsync(SSH_KEYGEN, ['-q', '-H', '-f', file]);
  await rm(`${file}.old`, { force: true });
}

async function startServer(dir: string): Promise<{ child: ChildProcess; port: number }> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const configFile = path.join(dir, 'sshd_config');
    await writeFile(configFile, sshdConfig(dir, port));
    const child = spawn(SSHD, ['-D', '-e', '-f', configFile], { stdio: ['ignore', 'ignore', 'pipe'] });
    const outcome = await waitUntilListening(child);
    if (outcome.listening) return { child, port };
    await stopProcess(child);
    if (outcome.log.includes('Address already in use') && attempt < START_ATTEMPTS) continue;
    throw new Error(`sshd did not start on port ${port}:\n${outcome.log}`);
  }
}

function sshdConfig(dir: string, port: number): string {
  const settings: [string, string][] = [
    ['Port', String(port)],
    ['ListenAddress', '127.0.0.1'],
    ['HostKey', path.join(dir, 'host_ed25519')],
    ['HostKey', path.join(dir, 'host_ecdsa')],
    ['PidFile', path.join(dir, 'sshd.pid')],
    ['AuthorizedKeysFile', path.join(dir, 'authorized_keys')],
    ['PermitRootLogin', 'prohibit-password'],
    ['PubkeyAuthentication', 'yes'],
    ['PasswordAuthentication', 'no'],
    ['KbdInteractiveAuthentication', 'no'],
    ['StrictModes', 'no'],
    ['UsePAM', 'no'],
    ['Subsystem', 'sftp internal-sftp'],
    // Fault tests open many connections in a row; the default would drop some at random.
    ['MaxStartups', '100'],
    ['LogLevel', 'INFO'],
  ];
  return settings.map(([name, value]) => `${name} ${value}\n`).join('');
}

/** Resolves once sshd says it listens, or with its log when it exits first. */
function waitUntilListening(child: ChildProcess): Promise<{ listening: boolean; log: string }> {
  return new Promise((resolve) => {
    let log = '';
    const onData = (data: Buffer) => {
      log += data.toString();
      if (/Server listening on /.test(log)) {
        // Keep draining stderr so that sshd never blocks on a full pipe.
        child.stderr?.off('data', onData).on('data', () => undefined);
        child.off('exit', onExit);
        resolve({ listening: true, log });
      }
    };
    const onExit = () => resolve({ listening: false, log });
    child.stderr?.on('data', onData);
    child.once('exit', onExit);
    child.once('error', (error) => resolve({ listening: false, log: `${log}${error.message}` }));
  });
}

function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}
