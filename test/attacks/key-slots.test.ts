import { randomBytes } from 'node:crypto';
import { readdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { seal } from '../../src/crypto/aead.ts';
import { derivePassphraseKey, SCRYPT_LIMITS, type ScryptParams } from '../../src/crypto/kdf.ts';
import { MAX_KEY_SLOT_BYTES, parseKeySlot } from '../../src/repository/key-slots.ts';
import { expectExit, runCli, tempRepo, type TempRepo } from '../helpers/cli.ts';

const PASSWORD = 'correct horse battery staple';

/**
 * Key slots are read from storage, which an attacker may write. A file planted under keys/ must
 * not keep the repository from opening with its password (it did: a slot-like JSON object with an
 * empty kdf failed every open with exit 1), nor make an open cost gigabytes of memory or minutes
 * of scrypt: it is skipped with a warning naming it.
 */
describe('attack: files planted under keys/', () => {
  let repo: TempRepo;
  let wrongPasswordFile: string;
  let realSlot: Record<string, unknown> & { kdf: ScryptParams };
  const keysDir = () => path.join(repo.repo, 'keys');
  const planted: string[] = [];

  const plant = async (name: string, content: string | Buffer) => {
    planted.push(name);
    await writeFile(path.join(keysDir(), name), content);
  };
  const slotWith = (
    changes: Record<string, unknown>,
    kdf: Partial<Record<keyof ScryptParams, unknown>> = {},
  ) => JSON.stringify({ ...realSlot, ...changes, kdf: { ...realSlot.kdf, ...kdf } }, null, 2);
  const open = (passwordFile: string) =>
    runCli(['snapshots'], { env: { ...repo.env, STRONGBOX_PASSWORD_FILE: passwordFile } });

  beforeAll(async () => {
    repo = await tempRepo(PASSWORD);
    wrongPasswordFile = path.join(repo.dir, 'wrong-password');
    await writeFile(wrongPasswordFile, 'not the password\n');
    expectExit(await runCli(['init'], { env: repo.env }), 0);
    const [slotFile] = await readdir(keysDir());
    realSlot = JSON.parse(await readFile(path.join(keysDir(), slotFile!), 'utf8')) as typeof realSlot;
  });
  afterEach(async () => {
    for (const name of planted.splice(0)) await rm(path.join(keysDir(), name), { force: true });
  });
  afterAll(() => repo?.cleanup());

  it.each([
    ['random bytes', () => randomBytes(300), /it is not JSON/],
    ['JSON of another shape', () => '{"hello": "world"}', /version: Invalid input/],
    // What used to escape as a TypeError (exit 1) from every open.
    ['a slot-like object with an empty kdf', () => '{"version": 1, "data": "x", "kdf": {}}', /kind: /],
    [
      'a file larger than any key slot',
      () => ' '.repeat(MAX_KEY_SLOT_BYTES + 1),
      new RegExp(`it is ${MAX_KEY_SLOT_BYTES + 1} bytes; a key slot is at most ${MAX_KEY_SLOT_BYTES}`),
    ],
    [
      'a slot asking scrypt for 4 GiB (N = 2^22)',
      () => slotWith({}, { N: 2 ** 22 }),
      /kdf: scrypt N=2\^22 is above 2\^20: trying it would take 4 GiB of memory/,
    ],
    [
      'a slot whose password would be cheap to guess (N = 2^10)',
      () => slotWith({}, { N: 2 ** 10 }),
      /kdf: scrypt N=2\^10 is below 2\^14/,
    ],
    [
      'a slot asking for 32 times the work of ours (N = 2^20, r = 16)',
      () => slotWith({}, { N: 2 ** 20, r: 16 }),
      /kdf: scrypt N·r·p=2\^24 is above 2\^23/,
    ],
    [
      'a slot whose N is not a power of two',
      () => slotWith({}, { N: 100_000 }),
      /kdf: scrypt N=100000 is not/,
    ],
    ['a slot whose data is not base64', () => slotWith({ data: '!!not base64!!' }), /data: Invalid base64/],
    [
      'a slot whose salt is 4 bytes',
      () => slotWith({}, { salt: 'AAAAAA==' }),
      /kdf\.salt: must be base64 of/,
    ],
    [
      'a slot whose host name holds a terminal escape',
      () => slotWith({ host: 'db1\u001b[2J' }),
      /host: must hold no control characters/,
    ],
  ])('skips %s with a warning naming it; a wrong password is still exit 5', async (_, content, why) => {
    await plant('0000-planted', content());

    const right = await open(repo.passwordFile);
    expectExit(right, 0);
    expect(right.stderr).toContain('warning: skipped key slot keys/0000-planted: ');
    expect(right.stderr).toMatch(why);

    const wrong = await open(wrongPasswordFile);
    expectExit(wrong, 5);
    expect(wrong.stderr).toContain('warning: skipped key slot keys/0000-planted: ');
    expect(wrong.stderr).toMatch(/wrong password: .* \(1 key slot was skipped as invalid\)/);
  });

  it('shows a planted file name with escapes, not as terminal control characters', async () => {
    await plant('0000-\u001b[31mred', '{}');
    const right = await open(repo.passwordFile);
    expectExit(right, 0);
    expect(right.stderr).toContain('warning: skipped key slot keys/0000-\\u001b[31mred: ');
    expect(right.stderr).not.toContain('\u001b');
  });

  it('skips a slot that opens with the password but holds material that is not valid', async () => {
    // Only someone who knows the password can make this; the cheaper kdf has it tried first.
    const kdf = { ...realSlot.kdf, N: SCRYPT_LIMITS.minN };
    const key = await derivePassphraseKey(PASSWORD, kdf);
    const data = seal(key, Buffer.from('{"kind": "full"}'), Buffer.from('strongbox key slot'));
    await plant('0000-bad-material', slotWith({ data: data.toString('base64') }, kdf));

    const right = await open(repo.passwordFile);
    expectExit(right, 0);
    expect(right.stderr).toMatch(
      /warning: skipped key slot keys\/0000-bad-material: it opens with this password, but the key material in it is not valid/,
    );
    expectExit(await open(wrongPasswordFile), 5);
  });

  it('says how many slots were skipped when none opens', async () => {
    await plant('0000-first', 'junk');
    await plant('0000-second', slotWith({}, { N: 2 ** 22 }));
    const wrong = await open(wrongPasswordFile);
    expectExit(wrong, 5);
    expect(wrong.stderr).toMatch(/\(2 key slots were skipped as invalid\)/);
  });

  it('lists the valid keys with one warning per planted file, and removes a planted file by its name', async () => {
    await plant('0000-junk', 'junk');
    const listed = await runCli(['key', 'list'], { env: repo.env });
    expectExit(listed, 0);
    expect(listed.stdout.toString()).toMatch(/\* +[0-9a-f]{8} +full/);
    expect(listed.stderr.match(/skipped key slot keys\/0000-junk/g)).toHaveLength(1);

    expectExit(await runCli(['key', 'remove', '0000-junk'], { env: repo.env }), 0);
    const after = await open(repo.passwordFile);
    expectExit(after, 0);
    expect(after.stderr).not.toContain('skipped key slot');
  });
});

describe('key slot parsing', () => {
  const slot = {
    version: 1,
    kind: 'full',
    created: '2026-01-02T03:04:05.678Z',
    host: 'db1',
    username: 'postgres',
    kdf: { name: 'scrypt', N: 2 ** 16, r: 8, p: 1, salt: randomBytes(32).toString('base64') },
    data: randomBytes(200).toString('base64'),
  };
  const bytesOf = (value: unknown) => Buffer.from(JSON.stringify(value) ?? 'undefined');

  it('accepts the slots strongbox writes', () => {
    expect(parseKeySlot(bytesOf(slot))).toEqual({ slot });
  });

  it('never throws: any bytes give a slot or a problem', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 2000 }), fc.jsonValue().map(bytesOf)), (bytes) => {
        const parsed = parseKeySlot(bytes);
        expect('slot' in parsed || typeof parsed.problem === 'string').toBe(true);
      }),
    );
  });

  it('accepts a changed slot only when its scrypt costs are within the limits', () => {
    const anyValue = fc.oneof(
      fc.jsonValue(),
      fc.integer(),
      fc.constantFrom(...[10, 14, 16, 20, 22, 31, 53].map((e) => 2 ** e)),
    );
    const changed = fc.record(
      {
        version: anyValue,
        kind: fc.oneof(anyValue, fc.constantFrom('full', 'write-only')),
        host: fc.oneof(anyValue, fc.string()),
        N: fc.oneof(anyValue, fc.constantFrom(2 ** 14, 2 ** 20, 2 ** 21)),
        r: fc.oneof(anyValue, fc.integer({ min: 0, max: 40 })),
        p: fc.oneof(anyValue, fc.integer({ min: 0, max: 10 })),
        salt: fc.oneof(
          anyValue,
          fc.uint8Array({ maxLength: 80 }).map((b) => Buffer.from(b).toString('base64')),
        ),
        extra: anyValue,
      },
      { requiredKeys: [] },
    );
    fc.assert(
      fc.property(changed, ({ N, r, p, salt, extra, ...top }) => {
        const kdf = { ...slot.kdf, ...definedOnly({ N, r, p, salt }) };
        const value = { ...slot, ...definedOnly(top), kdf, ...(extra === undefined ? {} : { extra }) };
        const parsed = parseKeySlot(bytesOf(value));
        if (!('slot' in parsed)) return;
        const accepted = parsed.slot.kdf;
        expect(accepted.N).toBeGreaterThanOrEqual(SCRYPT_LIMITS.minN);
        expect(accepted.N).toBeLessThanOrEqual(SCRYPT_LIMITS.maxN);
        expect(128 * accepted.N * accepted.r).toBeLessThanOrEqual(2 ** 30);
        expect(accepted.N * accepted.r * accepted.p).toBeLessThanOrEqual(SCRYPT_LIMITS.maxWork);
        expect(extra).toBeUndefined();
      }),
    );
  });

  it('derives no key for costs outside the limits, whatever reaches scrypt', async () => {
    const params: ScryptParams = { ...(slot.kdf as ScryptParams), N: 2 ** 22 };
    await expect(derivePassphraseKey('password', params)).rejects.toThrow(RangeError);
    await expect(derivePassphraseKey('password', { ...params, N: 2 ** 16, salt: '' })).rejects.toThrow(
      RangeError,
    );
  });
});

function definedOnly(record: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(record).filter(([, value]) => value !== undefined));
}
