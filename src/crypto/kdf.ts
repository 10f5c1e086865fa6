import { hkdfSync, randomBytes, scrypt } from 'node:crypto';

export interface ScryptParams {
  name: 'scrypt';
  N: number;
  r: number;
  p: number;
  salt: string;
}

/** 64 MiB and roughly a fifth of a second here: costly to guess, cheap enough for every command. */
export function newScryptParams(): ScryptParams {
  return { name: 'scrypt', N: 2 ** 16, r: 8, p: 1, salt: randomBytes(32).toString('base64') };
}

export function derivePassphraseKey(passphrase: string, params: ScryptParams): Promise<Buffer> {
  const salt = Buffer.from(params.salt, 'base64');
  const maxmem = 256 * params.N * params.r + 16 * 1024 * 1024;
  return new Promise((resolve, reject) => {
    scrypt(
      passphrase.normalize('NFC'),
      salt,
      32,
      { N: params.N, r: params.r, p: params.p, maxmem },
      (err, key) => (err ? reject(err) : resolve(key)),
    );
  });
}

/** Separate keys for separate purposes from one secret (HKDF-SHA-256). */
export function deriveSubkey(secret: Uint8Array, purpose: string, length = 32): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), `strongbox/v1 ${purpose}`, length));
}
