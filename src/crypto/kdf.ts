import { hkdfSync, randomBytes, scrypt } from 'node:crypto';

export interface ScryptParams {
  name: 'scrypt';
  N: number;
  r: number;
  p: number;
  salt: string;
}

/**
 * The scrypt costs a key slot may ask for (docs/FORMAT.md, "Keys"). Slots are read from storage,
 * which an attacker may write: the ceiling bounds what one planted slot costs to try (1 GiB and
 * 16 times the work of a slot strongbox writes), the floor refuses a slot whose password would be
 * cheap to guess. strongbox writes N = 2^16, r = 8, p = 1.
 */
export const SCRYPT_LIMITS = {
  minN: 2 ** 14,
  maxN: 2 ** 20,
  minR: 8,
  maxR: 16,
  maxP: 4,
  /** N·r·p: memory is 128·N·r bytes and time grows with N·r·p. */
  maxWork: 2 ** 23,
  minSaltBytes: 16,
  maxSaltBytes: 64,
} as const;

/** What scrypt may allocate at most: 128·r·(N + 2) + 128·r·p bytes for the largest costs allowed. */
const SCRYPT_MAX_MEMORY = 128 * SCRYPT_LIMITS.maxWork + 1024 * 1024;

/** 64 MiB and roughly a fifth of a second here: costly to guess, cheap enough for every command. */
export function newScryptParams(): ScryptParams {
  return { name: 'scrypt', N: 2 ** 16, r: 8, p: 1, salt: randomBytes(32).toString('base64') };
}

/** Why strongbox refuses these costs, or undefined when they are within SCRYPT_LIMITS. */
export function scryptCostProblem({ N, r, p }: Pick<ScryptParams, 'N' | 'r' | 'p'>): string | undefined {
  const limits = SCRYPT_LIMITS;
  if (!Number.isSafeInteger(N) || !/^10*$/.test(N.toString(2))) return `scrypt N=${N} is not a power of two`;
  if (!Number.isSafeInteger(r) || r < limits.minR || r > limits.maxR)
    return `scrypt r=${r} is outside ${limits.minR}..${limits.maxR}`;
  if (!Number.isSafeInteger(p) || p < 1 || p > limits.maxP)
    return `scrypt p=${p} is outside 1..${limits.maxP}`;
  if (N < limits.minN)
    return `scrypt N=${powerOfTwo(N)} is below ${powerOfTwo(limits.minN)}: its password would be cheap to guess`;
  if (N > limits.maxN)
    return `scrypt N=${powerOfTwo(N)} is above ${powerOfTwo(limits.maxN)}: trying it would take ${gibibytes(128 * N * r)} of memory`;
  if (N * r * p > limits.maxWork)
    return `scrypt N·r·p=${powerOfTwo(N * r * p)} is above ${powerOfTwo(limits.maxWork)} (16 times the work of a key strongbox writes)`;
  return undefined;
}

/** 2^k for a power of two, else the number itself. */
function powerOfTwo(value: number): string {
  const exponent = Math.log2(value);
  return Number.isInteger(exponent) ? `2^${exponent}` : String(value);
}

function gibibytes(bytes: number): string {
  return `${bytes / 2 ** 30} GiB`;
}

/**
 * Refuses costs outside SCRYPT_LIMITS even though key slots are checked when read: nothing that
 * reaches scrypt may make it allocate gigabytes or run for minutes.
 */
export function derivePassphraseKey(passphrase: string, params: ScryptParams): Promise<Buffer> {
  const problem = scryptCostProblem(params);
  if (problem) return Promise.reject(new RangeError(problem));
  const salt = Buffer.from(params.salt, 'base64');
  if (salt.length < SCRYPT_LIMITS.minSaltBytes || salt.length > SCRYPT_LIMITS.maxSaltBytes)
    return Promise.reject(new RangeError(`a scrypt salt of ${salt.length} bytes is refused`));
  return new Promise((resolve, reject) => {
    scrypt(
      passphrase.normalize('NFC'),
      salt,
      32,
      { N: params.N, r: params.r, p: params.p, maxmem: SCRYPT_MAX_MEMORY },
      (err, key) => (err ? reject(err) : resolve(key)),
    );
  });
}

/** Separate keys for separate purposes from one secret (HKDF-SHA-256). */
export function deriveSubkey(secret: Uint8Array, purpose: string, length = 32): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, Buffer.alloc(0), `strongbox/v1 ${purpose}`, length));
}
