import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify } from 'node:crypto';

/** Ed25519, for the repository administrator's signature over the config that writers trust. */
export function generateSigningKey(): { privateRaw: Buffer; publicRaw: Buffer } {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return {
    privateRaw: Buffer.from(privateKey.export({ format: 'jwk' }).d as string, 'base64url'),
    publicRaw: Buffer.from(publicKey.export({ format: 'jwk' }).x as string, 'base64url'),
  };
}

export function publicFromPrivate(privateRaw: Uint8Array): Buffer {
  const key = privateKeyFromRaw(privateRaw);
  return Buffer.from(createPublicKey(key).export({ format: 'jwk' }).x as string, 'base64url');
}

export function signMessage(privateRaw: Uint8Array, message: Uint8Array): Buffer {
  return sign(null, message, privateKeyFromRaw(privateRaw));
}

export function verifySignature(publicRaw: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  const key = createPublicKey({
    key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(publicRaw).toString('base64url') },
    format: 'jwk',
  });
  return verify(null, message, key, signature);
}

function privateKeyFromRaw(privateRaw: Uint8Array) {
  const d = Buffer.from(privateRaw).toString('base64url');
  const x = Buffer.from(
    createPublicKey(
      createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d, x: '' }, format: 'jwk' }),
    ).export({ format: 'jwk' }).x as string,
    'base64url',
  ).toString('base64url');
  return createPrivateKey({ key: { kty: 'OKP', crv: 'Ed25519', d, x }, format: 'jwk' });
}

/** An Ed25519 private key made ready once, for a writer that signs every object it writes. */
export class SigningKey {
  readonly publicRaw: Buffer;
  private readonly key: ReturnType<typeof privateKeyFromRaw>;

  constructor(readonly privateRaw: Buffer) {
    this.key = privateKeyFromRaw(privateRaw);
    this.publicRaw = Buffer.from(
      createPublicKey(this.key).export({ format: 'jwk' }).x as string,
      'base64url',
    );
  }

  static generate(): SigningKey {
    return new SigningKey(generateSigningKey().privateRaw);
  }

  sign(message: Uint8Array): Buffer {
    return sign(null, message, this.key);
  }
}
