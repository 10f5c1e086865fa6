/**
 * OpenSSH's known_hosts, read our own way: plain and hashed (`|1|salt|hmac`) names, `[host]:port`,
 * the patterns `*`, `?` and `!`, `@revoked`; `@cert-authority` lines are skipped, as host
 * certificates are not supported.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { ServerHostKeyAlgorithm } from 'ssh2';
import { ConfigError, errnoCode, StorageError } from '../errors.ts';

/** ssh's port, the one known_hosts names without brackets. */
export const DEFAULT_PORT = 22;

/** Host key algorithms in our order of preference, by the key type known_hosts names. */
const HOST_KEY_ALGORITHMS: [keyType: string, algorithms: ServerHostKeyAlgorithm[]][] = [
  ['ssh-ed25519', ['ssh-ed25519']],
  ['ecdsa-sha2-nistp256', ['ecdsa-sha2-nistp256']],
  ['ecdsa-sha2-nistp384', ['ecdsa-sha2-nistp384']],
  ['ecdsa-sha2-nistp521', ['ecdsa-sha2-nistp521']],
  ['ssh-rsa', ['rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa']],
];

export interface KnownHost {
  marker: string | undefined;
  patterns: string[];
  keyType: string;
  key: Buffer;
}

export async function readKnownHosts(files: string[]): Promise<KnownHost[]> {
  const entries: KnownHost[] = [];
  for (const file of files) {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (error) {
      if (errnoCode(error) === 'ENOENT') continue;
      throw new ConfigError(`cannot read ${file}: ${errnoCode(error) ?? error}`, {
        hint: 'Check STRONGBOX_SFTP_KNOWN_HOSTS or ?known-hosts=.',
      });
    }
    entries.push(...parseKnownHosts(text));
  }
  return entries;
}

/** Lines of `[@marker] patterns keytype base64 [comment]`; what does not parse is skipped, as ssh does. */
export function parseKnownHosts(text: string): KnownHost[] {
  const entries: KnownHost[] = [];
  for (const line of text.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (!fields[0] || fields[0].startsWith('#')) continue;
    const marker = fields[0].startsWith('@') ? fields.shift() : undefined;
    const [patterns, keyType, base64] = fields;
    if (!patterns || !keyType || !base64) continue;
    entries.push({ marker, patterns: patterns.split(','), keyType, key: Buffer.from(base64, 'base64') });
  }
  return entries;
}

/** How ssh names a host in known_hosts: `host` on port 22, `[host]:port` elsewhere. */
export function knownHostsName(host: string, port: number): string {
  const lower = host.toLowerCase();
  return port === DEFAULT_PORT ? lower : `[${lower}]:${port}`;
}

function hostMatches(patterns: string[], name: string): boolean {
  let matched = false;
  for (const pattern of patterns) {
    if (pattern.startsWith('|1|')) {
      if (hashedNameMatches(pattern, name)) matched = true;
      continue;
    }
    const negated = pattern.startsWith('!');
    if (wildcardMatches(negated ? pattern.slice(1) : pattern, name)) {
      if (negated) return false;
      matched = true;
    }
  }
  return matched;
}

/** `|1|salt|hash`: HMAC-SHA1 of the name, keyed with the salt (ssh's HashKnownHosts). */
function hashedNameMatches(pattern: string, name: string): boolean {
  const [, , salt, hash] = pattern.split('|');
  if (!salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64');
  const actual = createHmac('sha1', Buffer.from(salt, 'base64')).update(name).digest();
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

function wildcardMatches(pattern: string, name: string): boolean {
  const source = pattern
    .toLowerCase()
    .split('')
    .map((char) => (char === '*' ? '.*' : char === '?' ? '.' : char.replace(/[.+^${}()|[\]\\]/g, '\\$&')))
    .join('');
  return new RegExp(`^${source}$`).test(name);
}

/** Undefined when known_hosts vouches for `key`; otherwise the error that refuses it. */
export function hostKeyRefusal(
  entries: KnownHost[],
  hostName: string,
  key: Buffer,
  settings: { host: string; port: number; knownHostsFiles: string[] },
): StorageError | undefined {
  const forHost = entries.filter(
    (entry) => entry.marker !== '@cert-authority' && hostMatches(entry.patterns, hostName),
  );
  const plain = forHost.filter((entry) => entry.marker === undefined);
  const revoked = forHost.some((entry) => entry.marker === '@revoked' && entry.key.equals(key));
  if (!revoked && plain.some((entry) => entry.key.equals(key))) return undefined;

  const file = settings.knownHostsFiles[0]!;
  const server = `${settings.host}:${settings.port}`;
  const offered = `the server offers ${keyTypeOf(key)} ${fingerprintOf(key)}`;
  const portOption = settings.port === DEFAULT_PORT ? '' : `-p ${settings.port} `;
  const addIt = `ssh-keyscan ${portOption}${settings.host} >> ${file}`;
  if (revoked) {
    return new StorageError(`the SSH host key of ${server} is marked @revoked in known_hosts: ${offered}`, {
      hint: 'Ask the server’s administrator for its new key.',
    });
  }
  if (plain.length > 0) {
    return new StorageError(
      `the SSH host key of ${server} does not match ${file}: ${offered} (reinstalled server, or someone in between)`,
      { hint: `If the key changed on purpose: ssh-keygen -R '${hostName}' -f ${file}, then ${addIt}` },
    );
  }
  return new StorageError(`the SSH host key of ${server} is not in ${file}: ${offered}`, {
    hint: `If that is the server’s key (ask its administrator), add it: ${addIt}`,
  });
}

/**
 * Host key algorithms with those of the key types known_hosts holds for the host first, so that a
 * server with several host keys shows a known one (as ssh does); none when the host is unknown.
 */
export function preferredHostKeyAlgorithms(entries: KnownHost[], hostName: string): ServerHostKeyAlgorithm[] {
  const types = new Set(
    entries
      .filter((entry) => entry.marker === undefined && hostMatches(entry.patterns, hostName))
      .map((entry) => entry.keyType),
  );
  if (types.size === 0) return [];
  const known = HOST_KEY_ALGORITHMS.filter(([type]) => types.has(type));
  const others = HOST_KEY_ALGORITHMS.filter(([type]) => !types.has(type));
  return [...known, ...others].flatMap(([, algorithms]) => algorithms);
}

/** As ssh prints it: `SHA256:` and unpadded base64. */
export function fingerprintOf(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

/** The key blob starts with its type as an SSH string. */
function keyTypeOf(key: Buffer): string {
  if (key.length < 4) return 'unknown';
  return key.subarray(4, 4 + key.readUInt32BE(0)).toString('latin1');
}
