import { randomBytes } from 'node:crypto';
import { access, readFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import ssh2, { type ConnectConfig, type FileEntryWithStats, type SFTPWrapper, type Stats } from 'ssh2';
import { ConfigError, errnoCode, StorageError, StrongboxError } from '../errors.ts';
import {
  AccessDeniedError,
  ObjectNotFoundError,
  type ObjectInfo,
  type PutOptions,
  type StorageBackend,
} from './backend.ts';
import {
  DEFAULT_PORT,
  hostKeyRefusal,
  knownHostsName,
  preferredHostKeyAlgorithms,
  readKnownHosts,
} from './known-hosts.ts';
import { isTransientNetworkError, withRetries } from './retry.ts';
import { DEFAULT_CONCURRENCY, MAX_CONCURRENCY, wholeNumberOption } from './url-options.ts';

const FILE_MODE = 0o600;
const DIR_MODE = 0o700;
/** Temporary files start with a dot so that listings skip them and a crashed write stays invisible. */
const TEMP_PREFIX = '.tmp-';
/** Bytes per read or write request; ssh2 splits it further for servers that take less than OpenSSH. */
const IO_CHUNK = 64 * 1024;
/** Read or write requests in flight per transfer: enough to hide the round trip. */
const PIPELINE_DEPTH = 16;
const SYNC_CONCURRENCY = 8;
const DIRECTORIES_READ_AT_ONCE = 8;
/**
 * A connection that sends nothing for longer while we wait for it, logging in or answering
 * requests, is taken for dead (`?timeout=` seconds).
 */
const DEFAULT_TIMEOUT_SECONDS = 30;
/**
 * A login that goes on, however slowly, for this many timeouts is given up too: a server that
 * trickles a byte now and then must not hold a connection attempt forever.
 */
const LOGIN_TIMEOUTS = 4;
const MAX_TIMEOUT_SECONDS = 3600;
const CLOSE_TIMEOUT_MS = 5_000;

const POSIX_RENAME = 'posix-rename@openssh.com';
const FSYNC = 'fsync@openssh.com';

/** SFTP status codes (draft-ietf-secsh-filexfer-02), as ssh2 puts them in `error.code`. */
const Status = {
  noSuchFile: 2,
  permissionDenied: 3,
  failure: 4,
  noConnection: 6,
  connectionLost: 7,
} as const;

const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFREG = 0o100000;

interface SftpSettings {
  user: string;
  host: string;
  port: number;
  /** The repository's directory on the server; relative paths start at the login directory. */
  root: string;
  location: string;
  concurrency: number;
  timeoutMs: number;
  /** Files read for host keys; the first is the one messages name and hints write to. */
  knownHostsFiles: string[];
  auth: { identityFile: string; passphrase: string | undefined } | { agent: string };
}

/**
 * Opens a repository on an SFTP server: `sftp://user@host[:port]/path` (`/~/path` is relative to
 * the login directory). Logs in with a key (STRONGBOX_SFTP_IDENTITY_FILE, else ssh-agent through
 * SSH_AUTH_SOCK, else ~/.ssh/id_ed25519, id_ecdsa or id_rsa), after checking the server's host
 * key against known_hosts. Connects once here, so that a refused key or host fails at once.
 */
export async function openSftpBackend(url: URL, env: NodeJS.ProcessEnv): Promise<StorageBackend> {
  const backend = new SftpBackend(await sftpSettings(url, env));
  await backend.connect();
  return backend;
}

async function sftpSettings(url: URL, env: NodeJS.ProcessEnv): Promise<SftpSettings> {
  if (url.password) {
    throw new ConfigError('the sftp:// repository URL holds a password', {
      hint: 'Remove it: strongbox logs in with an SSH key (STRONGBOX_SFTP_IDENTITY_FILE or ssh-agent).',
    });
  }
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (!host) throw new ConfigError(`the sftp:// URL ${shownUrl(url)} names no host`);
  const user = decodeUrlPart(url, url.username) || env.USER || os.userInfo().username;
  const port = url.port ? Number(url.port) : DEFAULT_PORT;
  const pathname = url.pathname.replace(/\/+$/, '');
  const decoded = decodeUrlPart(url, pathname);
  const root = decoded.startsWith('/~/') ? decoded.slice(3) : decoded;
  if (!root || root === '~') {
    throw new ConfigError(`the sftp:// URL ${shownUrl(url)} names no directory`, {
      hint: 'Add the repository directory: sftp://user@host/srv/backups/strongbox, or /~/dir for one in the login directory.',
    });
  }
  let concurrency = DEFAULT_CONCURRENCY;
  let timeoutSeconds = DEFAULT_TIMEOUT_SECONDS;
  let knownHostsOption: string | undefined;
  for (const [name, value] of url.searchParams) {
    if (name === 'concurrency')
      concurrency = wholeNumberOption('sftp', name, value, {
        fallback: DEFAULT_CONCURRENCY,
        min: 1,
        max: MAX_CONCURRENCY,
      });
    else if (name === 'timeout')
      timeoutSeconds = wholeNumberOption('sftp', name, value, {
        fallback: DEFAULT_TIMEOUT_SECONDS,
        min: 1,
        max: MAX_TIMEOUT_SECONDS,
      });
    else if (name === 'known-hosts') knownHostsOption = value;
    else {
      throw new ConfigError(`unknown option ${name} in the sftp:// URL`, {
        hint: 'sftp:// URLs take ?concurrency=N, ?timeout=SECONDS and ?known-hosts=FILE.',
      });
    }
  }
  const home = env.HOME || os.homedir();
  const explicitKnownHosts = knownHostsOption ?? env.STRONGBOX_SFTP_KNOWN_HOSTS;
  const knownHostsFiles = explicitKnownHosts
    ? [explicitKnownHosts]
    : [path.join(home, '.ssh', 'known_hosts'), '/etc/ssh/ssh_known_hosts'];
  const hostForUrl = host.includes(':') ? `[${host}]` : host;
  return {
    user,
    host,
    port,
    root,
    location: `sftp://${user}@${hostForUrl}:${port}${pathname}`,
    concurrency,
    timeoutMs: timeoutSeconds * 1000,
    knownHostsFiles,
    auth: await authSource(env, home),
  };
}

/** The URL as messages show it: no query string, which may carry a token, and no password. */
function shownUrl(url: URL): string {
  return `${url.protocol}//${url.username ? `${url.username}@` : ''}${url.host}${url.pathname}`;
}

function decodeUrlPart(url: URL, part: string): string {
  try {
    return decodeURIComponent(part);
  } catch (error) {
    throw new ConfigError(`the sftp:// URL ${shownUrl(url)} has a malformed %-escape`, { cause: error });
  }
}

async function authSource(env: NodeJS.ProcessEnv, home: string): Promise<SftpSettings['auth']> {
  const passphrase = env.STRONGBOX_SFTP_KEY_PASSPHRASE || undefined;
  if (env.STRONGBOX_SFTP_IDENTITY_FILE) return { identityFile: env.STRONGBOX_SFTP_IDENTITY_FILE, passphrase };
  if (env.SSH_AUTH_SOCK) return { agent: env.SSH_AUTH_SOCK };
  for (const name of ['id_ed25519', 'id_ecdsa', 'id_rsa']) {
    const identityFile = path.join(home, '.ssh', name);
    const exists = await access(identityFile).then(
      () => true,
      () => false,
    );
    if (exists) return { identityFile, passphrase };
  }
  throw new ConfigError('no SSH key to log in to the sftp:// repository with', {
    hint: 'Set STRONGBOX_SFTP_IDENTITY_FILE to a private key file, or start ssh-agent (SSH_AUTH_SOCK).',
  });
}

/** The connection failed, not the request: another connection may do better. */
class ConnectionLostError extends Error {}

/** One SSH connection and its SFTP channel. */
class SftpSession {
  lost = false;
  private readonly pending = new Set<(error: Error) => void>();

  constructor(
    readonly client: ssh2.Client,
    readonly sftp: SFTPWrapper,
    readonly socket: net.Socket,
    readonly extensions: ReadonlySet<string>,
    timeoutMs: number,
  ) {
    // Idle, the connection must not keep the process alive: a caller that forgets close() still exits.
    socket.unref();
    socket.setTimeout(timeoutMs, () => {
      if (this.pending.size > 0) socket.destroy(timeoutError(timeoutMs));
    });
    const onEnd = (error?: Error) => this.markLost(error ?? new Error('the server closed the connection'));
    for (const emitter of [client, sftp]) {
      emitter.on('error', onEnd);
      emitter.on('end', () => onEnd());
      emitter.on('close', () => onEnd());
    }
  }

  /**
   * Runs one ssh2 request. ssh2 drops requests made on a closed channel without ever calling back,
   * and may lose callbacks when the connection dies, so a lost session fails what waits on it.
   */
  call<T = void>(start: (done: (error: Error | null | undefined, value?: T) => void) => void): Promise<T> {
    if (this.lost) return Promise.reject(new ConnectionLostError('the connection was lost'));
    return new Promise<T>((resolve, reject) => {
      const settle = () => {
        if (this.pending.delete(reject) && this.pending.size === 0) this.socket.unref();
      };
      this.pending.add(reject);
      if (this.pending.size === 1) this.socket.ref();
      try {
        start((error, value) => {
          settle();
          if (error) reject(error);
          else resolve(value as T);
        });
      } catch (error) {
        settle();
        reject(error);
      }
    });
  }

  markLost(cause: unknown): void {
    if (this.lost) return;
    this.lost = true;
    const failure = new ConnectionLostError('the connection was lost', { cause });
    for (const reject of this.pending) reject(failure);
    this.pending.clear();
    this.socket.destroy();
  }

  /** Ends the connection politely, or cuts it if the server does not answer. */
  async end(): Promise<void> {
    if (this.lost || this.socket.closed) {
      this.markLost(new Error('closed'));
      return;
    }
    this.socket.ref();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.socket.destroy();
        resolve();
      }, CLOSE_TIMEOUT_MS);
      this.socket.once('close', () => {
        clearTimeout(timer);
        resolve();
      });
      this.client.end();
    });
    this.markLost(new Error('closed'));
  }
}

function timeoutError(timeoutMs: number): Error {
  return Object.assign(new Error(`the server sent nothing for ${timeoutMs / 1000} s`), {
    code: 'ETIMEDOUT',
  });
}

function lostBeforeSftp(server: string, cause: Error): ConnectionLostError {
  return new ConnectionLostError(`${server} closed the connection before starting SFTP: ${cause.message}`, {
    cause,
  });
}

/**
 * The private key at `file`, checked here: once connecting, a key ssh2 cannot use is no longer
 * told apart from a connection that broke.
 */
async function readPrivateKey(file: string, passphrase: string | undefined): Promise<Buffer> {
  const key = await readFile(file).catch((error: unknown) => {
    throw new ConfigError(`cannot read the SSH key ${file}: ${errnoCode(error) ?? error}`, {
      hint: 'Check STRONGBOX_SFTP_IDENTITY_FILE.',
    });
  });
  const parsed = ssh2.utils.parseKey(key, passphrase);
  if (parsed instanceof Error) {
    throw new ConfigError(`cannot use the SSH key ${file}: ${parsed.message}`, {
      hint: 'Give an OpenSSH private key; if it is encrypted, set STRONGBOX_SFTP_KEY_PASSPHRASE.',
      cause: parsed,
    });
  }
  return key;
}

/** A repository in a directory of an SFTP server. */
class SftpBackend implements StorageBackend {
  readonly location: string;
  readonly concurrency: number;
  private current: SftpSession | undefined;
  private connecting: Promise<SftpSession> | undefined;
  /** Files written with deferSync, not yet synced. */
  private readonly unsynced = new Set<string>();

  constructor(private readonly settings: SftpSettings) {
    this.location = settings.location;
    this.concurrency = settings.concurrency;
  }

  async connect(): Promise<void> {
    await this.run('connect', undefined, async () => undefined);
  }

  async put(name: string, data: Uint8Array, options: PutOptions = {}): Promise<void> {
    const target = this.remotePath(name);
    const dir = path.posix.dirname(target);
    // One temporary name for every attempt, so a retry overwrites what a failed attempt left.
    const temp = path.posix.join(dir, `${TEMP_PREFIX}${randomBytes(8).toString('hex')}`);
    const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    let synced = false;
    try {
      await this.run(`write ${name}`, undefined, async (session) => {
        const handle = await this.createFile(session, temp, dir);
        try {
          await writeAll(session, handle, bytes);
          const written = await session.call<Stats>((done) => session.sftp.fstat(handle, done));
          if (written.size !== bytes.length) {
            throw new ConnectionLostError(`${written.size} of ${bytes.length} bytes arrived`);
          }
          synced = !options.deferSync && session.extensions.has(FSYNC);
          if (synced) await session.call((done) => session.sftp.ext_openssh_fsync(handle, done));
        } catch (error) {
          await session.call((done) => session.sftp.close(handle, done)).catch(() => undefined);
          throw error;
        }
        await session.call((done) => session.sftp.close(handle, done));
        await this.renameOver(session, temp, target);
        if (!synced && session.extensions.has(FSYNC)) this.unsynced.add(target);
      });
    } catch (error) {
      await this.removeIfConnected(temp);
      throw error;
    }
  }

  /**
   * Reopens each deferred file and has the server fsync it. Renames cannot be synced over SFTP
   * (the server syncs no directory); journaling file systems commit them in order with the data.
   */
  async syncDeferred(): Promise<void> {
    const files = [...this.unsynced];
    this.unsynced.clear();
    await forEachLimited(files.length, SYNC_CONCURRENCY, (index) => {
      const file = files[index]!;
      return this.run(`sync ${file}`, undefined, async (session) => {
        let handle: Buffer;
        try {
          handle = await session.call<Buffer>((done) => session.sftp.open(file, 'r', done));
        } catch (error) {
          if (statusOf(error) === Status.noSuchFile) return;
          throw error;
        }
        try {
          await session.call((done) => session.sftp.ext_openssh_fsync(handle, done));
        } finally {
          await session.call((done) => session.sftp.close(handle, done)).catch(() => undefined);
        }
      });
    });
  }

  get(name: string): Promise<Buffer> {
    return this.readFile(name, undefined, undefined);
  }

  getRange(name: string, offset: number, length: number): Promise<Buffer> {
    return this.readFile(name, offset, length);
  }

  async *list(prefix: string): AsyncIterable<ObjectInfo> {
    const folder = prefix.slice(0, prefix.lastIndexOf('/') + 1);
    const namePrefix = prefix.slice(folder.length);
    const visible = (dir: string, name: string) =>
      !name.startsWith('.') && (dir !== folder || name.startsWith(namePrefix));
    for await (const file of this.walk(folder, `list ${prefix}`, visible)) {
      yield { name: file.name, size: file.attrs.size };
    }
  }

  stat(name: string): Promise<ObjectInfo | undefined> {
    const file = this.remotePath(name);
    return this.run(`stat ${name}`, undefined, async (session) => {
      try {
        const stats = await session.call<Stats>((done) => session.sftp.stat(file, done));
        return { name, size: stats.size };
      } catch (error) {
        if (statusOf(error) === Status.noSuchFile) return undefined;
        throw error;
      }
    });
  }

  async delete(name: string): Promise<void> {
    const file = this.remotePath(name);
    this.unsynced.delete(file);
    await this.run(`delete ${name}`, undefined, (session) => removeFile(session, file));
  }

  /** Removes temporary files last written before `startedBefore`, by the server's clock (whole seconds). */
  async removeIncompleteUploads(startedBefore: Date): Promise<number> {
    let removed = 0;
    for await (const file of this.walk('', 'remove incomplete uploads', () => true)) {
      if (!path.posix.basename(file.name).startsWith(TEMP_PREFIX)) continue;
      if (file.attrs.mtime * 1000 >= startedBefore.getTime()) continue;
      const remote = this.remotePath(file.name);
      await this.run(`delete ${file.name}`, undefined, (session) => removeFile(session, remote));
      removed++;
    }
    return removed;
  }

  async close(): Promise<void> {
    const session = this.current ?? (await this.connecting?.catch(() => undefined));
    this.current = undefined;
    await session?.end();
  }

  /** Runs `operation` on a live connection, reconnecting and retrying while the network fails. */
  private async run<T>(
    action: string,
    objectName: string | undefined,
    operation: (session: SftpSession) => Promise<T>,
  ): Promise<T> {
    try {
      return await withRetries(async () => {
        const session = await this.session();
        try {
          return await operation(session);
        } catch (error) {
          throw asConnectionFailure(error, session);
        }
      }, isTransient);
    } catch (error) {
      throw this.wrap(error, action, objectName);
    }
  }

  private async session(): Promise<SftpSession> {
    if (this.current && !this.current.lost) return this.current;
    this.connecting ??= this.openSession().finally(() => {
      this.connecting = undefined;
    });
    const session = await this.connecting;
    this.current = session;
    return session;
  }

  private async openSession(): Promise<SftpSession> {
    const { host, port, user, auth, timeoutMs } = this.settings;
    const knownHosts = await readKnownHosts(this.settings.knownHostsFiles);
    const hostName = knownHostsName(host, port);
    let refusal: StorageError | undefined;
    const hostVerifier = (key: Buffer): boolean => {
      refusal = hostKeyRefusal(knownHosts, hostName, key, this.settings);
      return refusal === undefined;
    };
    const config: ConnectConfig = {
      host,
      port,
      username: user,
      hostVerifier,
      // The silence timer below watches the whole login; this bounds one that trickles on.
      readyTimeout: LOGIN_TIMEOUTS * timeoutMs,
      keepaliveInterval: 0,
    };
    const hostKeyAlgorithms = preferredHostKeyAlgorithms(knownHosts, hostName);
    if (hostKeyAlgorithms.length > 0) config.algorithms = { serverHostKey: hostKeyAlgorithms };
    if ('agent' in auth) config.agent = auth.agent;
    else {
      config.privateKey = await readPrivateKey(auth.identityFile, auth.passphrase);
      if (auth.passphrase) config.passphrase = auth.passphrase;
    }

    // Our own socket, so that an idle connection can be unref'd (see SftpSession). Without
    // noDelay, Nagle's algorithm held each small SFTP request until the server's delayed ACK,
    // some 40 ms a round trip: a put of a few bytes took 265 ms on loopback, 3 ms with it.
    const socket = net.connect({ host, port, noDelay: true });
    config.sock = socket;
    const client = new ssh2.Client();
    const server = `${host}:${port}`;
    return new Promise<SftpSession>((resolve, reject) => {
      let settled = false;
      let stage: 'login' | 'sftp' = 'login';
      const giveUp = (error: Error): void => {
        if (settled) return;
        settled = true;
        socket.destroy();
        reject(error);
      };
      // From the first byte to the SFTP channel, a server that falls silent is taken for dead: a
      // stall after the login, where ssh2's readyTimeout no longer runs, would otherwise wait forever.
      socket.setTimeout(timeoutMs, () =>
        giveUp(
          new ConnectionLostError(
            `${server} sent nothing for ${timeoutMs / 1000} s ${stage === 'login' ? 'during login' : 'before starting SFTP'}`,
            { cause: timeoutError(timeoutMs) },
          ),
        ),
      );
      client.on('error', (error: Error & { level?: string }) =>
        giveUp(this.connectFailure(error, stage, refusal)),
      );
      client.on('close', () =>
        giveUp(
          new ConnectionLostError(
            `${server} closed the connection ${stage === 'login' ? 'during login' : 'before starting SFTP'}`,
          ),
        ),
      );
      client.on('ready', () => {
        stage = 'sftp';
        client.sftp((error, sftp) => {
          if (settled) return;
          if (error) {
            // A channel refused while the connection lives: the server has no SFTP for us. One
            // refused because the connection went is the close handler's to report.
            setImmediate(() => {
              if (socket.destroyed || socket.readyState !== 'open')
                return giveUp(lostBeforeSftp(server, error));
              giveUp(
                new StorageError(`${server} accepted the login but offers no SFTP: ${error.message}`, {
                  hint: 'Enable the sftp subsystem in the server’s sshd_config.',
                  cause: error,
                }),
              );
            });
            return;
          }
          settled = true;
          socket.setTimeout(0);
          // The extensions the server announced; ssh2 keeps them only in this field.
          const offered = (sftp as unknown as { _extensions?: Record<string, string> })._extensions ?? {};
          resolve(new SftpSession(client, sftp, socket, new Set(Object.keys(offered)), timeoutMs));
        });
      });
      try {
        client.connect(config);
      } catch (error) {
        giveUp(error instanceof Error ? error : new Error(String(error)));
      }
    });
  }

  /** Why a login failed, once the server or the network answered: a lost connection may be retried. */
  private connectFailure(
    error: Error & { level?: string },
    stage: 'login' | 'sftp',
    refusal: StorageError | undefined,
  ): Error {
    const { host, port, user, auth } = this.settings;
    const server = `${host}:${port}`;
    if (refusal) return refusal;
    const level = error.level;
    if (level === 'agent' && 'agent' in auth) {
      return new StorageError(`cannot use ssh-agent at ${auth.agent}: ${error.message}`, {
        hint: 'Check that the agent runs and SSH_AUTH_SOCK points at it, or set STRONGBOX_SFTP_IDENTITY_FILE.',
        cause: error,
      });
    }
    if (level === 'client-authentication') {
      const key = 'agent' in auth ? `the keys of ssh-agent (${auth.agent})` : `the key ${auth.identityFile}`;
      return new StorageError(`${server} refused ${key} for user ${user}`, {
        hint: `Add its public key to ~${user}/.ssh/authorized_keys on the server, or set STRONGBOX_SFTP_IDENTITY_FILE to the right key.`,
        cause: error,
      });
    }
    if (errnoCode(error) === 'ENOTFOUND') {
      return new StorageError(`cannot find the host ${host}`, {
        hint: 'Check the host name in the sftp:// URL.',
        cause: error,
      });
    }
    if (
      isTransientNetworkError(error) ||
      level === 'client-socket' ||
      level === 'client-timeout' ||
      level === 'protocol'
    ) {
      return stage === 'sftp'
        ? lostBeforeSftp(server, error)
        : new ConnectionLostError(`cannot connect to ${server}: ${error.message}`, { cause: error });
    }
    return new StorageError(`cannot connect to ${server}: ${error.message}`, {
      hint: 'Check the host, port and the server’s SSH settings.',
      cause: error,
    });
  }

  private async readFile(
    name: string,
    offset: number | undefined,
    length: number | undefined,
  ): Promise<Buffer> {
    const file = this.remotePath(name);
    return this.run(`read ${name}`, name, async (session) => {
      const handle = await session.call<Buffer>((done) => session.sftp.open(file, 'r', done));
      try {
        const start = offset ?? 0;
        const size = length ?? (await session.call<Stats>((done) => session.sftp.fstat(handle, done))).size;
        const buffer = Buffer.allocUnsafe(size);
        if (!(await readFully(session, handle, buffer, start))) {
          throw new StorageError(
            `${name} is shorter than expected (wanted bytes ${start}..${start + size})`,
            {
              hint: 'The file was truncated; run `strongbox check --read-data`.',
            },
          );
        }
        return buffer;
      } finally {
        await session.call((done) => session.sftp.close(handle, done)).catch(() => undefined);
      }
    });
  }

  /**
   * The regular files under `start` (relative: '' or ending with '/'), descending into the
   * directories `include` accepts; several directories are read at once, to hide the round trips.
   */
  private async *walk(
    start: string,
    action: string,
    include: (dir: string, name: string) => boolean,
  ): AsyncIterable<{ name: string; attrs: Stats }> {
    const waiting = [start];
    while (waiting.length > 0) {
      const batch = waiting.splice(0, DIRECTORIES_READ_AT_ONCE);
      const listings = await Promise.all(batch.map((dir) => this.readDirectory(dir, action)));
      for (const [index, entries] of listings.entries()) {
        const dir = batch[index]!;
        for (const entry of entries) {
          if (!include(dir, entry.filename)) continue;
          const kind = entry.attrs.mode & S_IFMT;
          if (kind === S_IFDIR) waiting.push(`${dir}${entry.filename}/`);
          else if (kind === S_IFREG) yield { name: `${dir}${entry.filename}`, attrs: entry.attrs };
        }
      }
    }
  }

  /** The entries of `dir` (relative, '' or ending with '/'); none when it does not exist. */
  private readDirectory(dir: string, action: string): Promise<FileEntryWithStats[]> {
    const remote = this.remotePath(dir.replace(/\/$/, ''));
    return this.run(action, undefined, async (session) => {
      try {
        return await session.call<FileEntryWithStats[]>((done) => session.sftp.readdir(remote, done));
      } catch (error) {
        if (statusOf(error) === Status.noSuchFile) return [];
        throw error;
      }
    });
  }

  /** Opens `file` for writing (truncated), creating its directory when it is missing. */
  private async createFile(session: SftpSession, file: string, dir: string): Promise<Buffer> {
    const open = () =>
      session.call<Buffer>((done) => session.sftp.open(file, 'w', { mode: FILE_MODE }, done));
    try {
      return await open();
    } catch (error) {
      if (statusOf(error) !== Status.noSuchFile) throw error;
    }
    await makeDirectories(session, dir);
    return open();
  }

  /** Replaces `target` by `temp` at once where the server can (posix-rename), else in two steps. */
  private async renameOver(session: SftpSession, temp: string, target: string): Promise<void> {
    if (session.extensions.has(POSIX_RENAME)) {
      await session.call((done) => session.sftp.ext_openssh_rename(temp, target, done));
      return;
    }
    // Plain SFTP rename refuses an existing target; readers briefly see none on such servers.
    try {
      await session.call((done) => session.sftp.rename(temp, target, done));
    } catch (error) {
      if (statusOf(error) !== Status.failure) throw error;
      await removeFile(session, target);
      await session.call((done) => session.sftp.rename(temp, target, done));
    }
  }

  /** Best effort, on the connection we have: a lost one leaves the file to `unlock`. */
  private async removeIfConnected(file: string): Promise<void> {
    const session = this.current;
    if (session && !session.lost) await removeFile(session, file).catch(() => undefined);
  }

  private remotePath(name: string): string {
    if (name === '') return this.settings.root;
    const normalized = path.posix.normalize(name);
    if (normalized.startsWith('..') || path.posix.isAbsolute(normalized)) {
      throw new StorageError(`invalid object name ${JSON.stringify(name)}`);
    }
    return `${this.settings.root}/${normalized}`;
  }

  private wrap(error: unknown, action: string, objectName: string | undefined): Error {
    if (error instanceof StrongboxError) return error;
    const status = statusOf(error);
    if (status === Status.noSuchFile && objectName) return new ObjectNotFoundError(objectName, this.location);
    const where = `cannot ${action} at ${this.location}`;
    if (status === Status.permissionDenied) {
      return new AccessDeniedError(`${where}: permission denied`, {
        hint: `Check that ${this.settings.user} may read and write ${this.settings.root} on the server.`,
        cause: error,
      });
    }
    if (error instanceof ConnectionLostError) {
      return new StorageError(`${where}: ${error.message}, and retries did not help`, {
        hint: 'Check the network and the server, then run the command again.',
        cause: error,
      });
    }
    const message = error instanceof Error ? error.message : String(error);
    return new StorageError(`${where}: ${message}`, {
      hint:
        status === Status.failure
          ? `The server gave no reason: check its free disk space and the permissions of ${this.settings.root}.`
          : undefined,
      cause: error,
    });
  }
}

/** The SFTP status code of a server's answer, or undefined for any other error. */
function statusOf(error: unknown): number | undefined {
  const code = (error as { code?: unknown } | undefined)?.code;
  return typeof code === 'number' ? code : undefined;
}

function isTransient(error: unknown): boolean {
  return error instanceof ConnectionLostError || isTransientNetworkError(error);
}

/**
 * The server's answers (SFTP statuses) and our own errors pass; anything else from ssh2 means the
 * channel or the connection broke, and the session is dropped so that the next attempt reconnects.
 */
function asConnectionFailure(error: unknown, session: SftpSession): unknown {
  if (error instanceof StrongboxError || error instanceof ConnectionLostError) return error;
  const status = statusOf(error);
  if (status !== undefined && status !== Status.noConnection && status !== Status.connectionLost)
    return error;
  session.markLost(error);
  return new ConnectionLostError(error instanceof Error ? error.message : String(error), { cause: error });
}

async function removeFile(session: SftpSession, file: string): Promise<void> {
  try {
    await session.call((done) => session.sftp.unlink(file, done));
  } catch (error) {
    if (statusOf(error) !== Status.noSuchFile) throw error;
  }
}

async function makeDirectories(session: SftpSession, dir: string): Promise<void> {
  const mkdir = () => session.call((done) => session.sftp.mkdir(dir, { mode: DIR_MODE }, done));
  try {
    await mkdir();
    return;
  } catch (error) {
    const parent = path.posix.dirname(dir);
    if (statusOf(error) === Status.noSuchFile && parent !== dir) {
      await makeDirectories(session, parent);
      await mkdir().catch((again: unknown) => alreadyADirectory(session, dir, again));
      return;
    }
    await alreadyADirectory(session, dir, error);
  }
}

/** mkdir failed: fine if `dir` exists (another writer made it), else `error` stands. */
async function alreadyADirectory(session: SftpSession, dir: string, error: unknown): Promise<void> {
  const stats = await session.call<Stats>((done) => session.sftp.stat(dir, done)).catch(() => undefined);
  if (!stats) throw error;
  if ((stats.mode & S_IFMT) !== S_IFDIR) {
    throw new StorageError(`${dir} exists on the server and is not a directory`, {
      hint: 'Move it away, or choose another repository path.',
    });
  }
}

async function writeAll(session: SftpSession, handle: Buffer, data: Buffer): Promise<void> {
  await forEachLimited(Math.ceil(data.length / IO_CHUNK), PIPELINE_DEPTH, (index) => {
    const start = index * IO_CHUNK;
    const length = Math.min(IO_CHUNK, data.length - start);
    return session.call((done) => session.sftp.write(handle, data, start, length, start, done));
  });
}

/** Fills `buffer` from `position` on; false when the file ends first. */
async function readFully(
  session: SftpSession,
  handle: Buffer,
  buffer: Buffer,
  position: number,
): Promise<boolean> {
  let complete = true;
  await forEachLimited(Math.ceil(buffer.length / IO_CHUNK), PIPELINE_DEPTH, async (index) => {
    const end = Math.min((index + 1) * IO_CHUNK, buffer.length);
    for (let at = index * IO_CHUNK; at < end;) {
      const read = await session.call<number>((done) =>
        session.sftp.read(handle, buffer, at, end - at, position + at, done),
      );
      if (read === 0) {
        complete = false;
        return;
      }
      at += read;
    }
  });
  return complete;
}

/** Runs `task(0..count-1)`, at most `limit` at once; stops starting new ones after a failure. */
async function forEachLimited(
  count: number,
  limit: number,
  task: (index: number) => Promise<unknown>,
): Promise<void> {
  let next = 0;
  let failed = false;
  const worker = async () => {
    while (!failed && next < count) {
      try {
        await task(next++);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, count) }, worker));
}

// known_hosts ------------------------------------------------------------------------------------
