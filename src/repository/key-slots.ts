import { z } from 'zod';
import { SEAL_OVERHEAD } from '../crypto/aead.ts';
import { SCRYPT_LIMITS, scryptCostProblem } from '../crypto/kdf.ts';
import { LegacyKeyError, WrongPasswordError } from '../errors.ts';
import { ObjectNotFoundError, type StorageBackend } from '../storage/backend.ts';
import { printable } from '../util/printable.ts';
import { base64Between, firstIssue } from '../util/schema.ts';
import { isLegacy, MalformedKeyMaterial, openKeySlot, type KeyMaterial, type KeySlot } from './keys.ts';
import { folderOf } from './layout.ts';

/**
 * Reading key slots (`keys/*`). Storage may be written by an attacker, so a slot is parsed
 * against a strict schema and its scrypt costs checked against SCRYPT_LIMITS before anything is
 * derived from it. A file that fails is skipped with a warning naming it: a planted or damaged
 * file can neither keep the repository from opening with an intact slot nor cost more to try
 * than the largest slot allowed.
 */
export const KEYS_FOLDER = folderOf('key');

/** A slot strongbox writes is under 1 KiB: a larger file is not read. */
export const MAX_KEY_SLOT_BYTES = 64 * 1024;

/** Sealed material: strongbox's is under 300 bytes; room for a richer one, never for a large one. */
const MAX_SEALED_MATERIAL_BYTES = 6 * 1024;

/** Host and user names are shown by `key list`: short, and free of terminal escapes. */
const shownText = z
  .string()
  .max(255)
  .regex(/^[^\p{Cc}\p{Cf}]*$/u, 'must hold no control characters');

const keySlotSchema = z.strictObject({
  version: z.literal(1),
  kind: z.enum(['full', 'write-only']),
  created: z.iso.datetime(),
  host: shownText,
  username: shownText,
  writer: z
    .string()
    .regex(/^[0-9a-f]{16}$/)
    .optional(),
  kdf: z
    .strictObject({
      name: z.literal('scrypt'),
      N: z.int(),
      r: z.int(),
      p: z.int(),
      salt: base64Between(SCRYPT_LIMITS.minSaltBytes, SCRYPT_LIMITS.maxSaltBytes),
    })
    .superRefine((kdf, context) => {
      const problem = scryptCostProblem(kdf);
      if (problem) context.addIssue({ code: 'custom', message: problem });
    }),
  data: base64Between(SEAL_OVERHEAD + 1, SEAL_OVERHEAD + MAX_SEALED_MATERIAL_BYTES),
}) satisfies z.ZodType<KeySlot>;

export type ParsedKeySlot = { slot: KeySlot } | { problem: string };

/** A key slot's bytes, parsed; never throws: what is wrong with a file that is not a valid slot is returned. */
export function parseKeySlot(bytes: Uint8Array): ParsedKeySlot {
  if (bytes.length > MAX_KEY_SLOT_BYTES) return { problem: tooLarge(bytes.length) };
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return { problem: 'it is not JSON' };
  }
  const parsed = keySlotSchema.safeParse(value);
  return parsed.success ? { slot: parsed.data } : { problem: firstIssue(parsed.error) };
}

function tooLarge(size: number): string {
  return `it is ${size} bytes; a key slot is at most ${MAX_KEY_SLOT_BYTES}`;
}

export interface StoredKeySlot {
  /** Its object name, `keys/<id>`. */
  name: string;
  slot: KeySlot;
}

/** A file under keys/ that is not used as a key slot, and why. */
export interface SkippedKeySlot {
  name: string;
  problem: string;
}

export function skippedKeySlotWarning({ name, problem }: SkippedKeySlot): string {
  return `skipped key slot ${printable(name)}: ${problem}`;
}

/**
 * Every file under keys/: the valid key slots, and apart from them the files that are not. A slot
 * removed between the listing and its reading (`key remove` elsewhere) is left out; storage
 * failures are thrown.
 */
export async function readKeySlots(
  backend: StorageBackend,
): Promise<{ slots: StoredKeySlot[]; skipped: SkippedKeySlot[] }> {
  const slots: StoredKeySlot[] = [];
  const skipped: SkippedKeySlot[] = [];
  for await (const object of backend.list(KEYS_FOLDER)) {
    if (object.size > MAX_KEY_SLOT_BYTES) {
      skipped.push({ name: object.name, problem: tooLarge(object.size) });
      continue;
    }
    let bytes: Buffer;
    try {
      bytes = await backend.get(object.name);
    } catch (error) {
      if (error instanceof ObjectNotFoundError) continue;
      throw error;
    }
    const parsed = parseKeySlot(bytes);
    if ('slot' in parsed) slots.push({ name: object.name, slot: parsed.slot });
    else skipped.push({ name: object.name, problem: parsed.problem });
  }
  return { slots, skipped };
}

export interface OpenedKeySlot {
  name: string;
  material: KeyMaterial;
  /** The files skipped on the way, each warned about. */
  skipped: string[];
}

/**
 * The material of the first slot `passphrase` opens for repository `repositoryId`, with a warning
 * for each file skipped. Slots are tried cheapest first, so that slots planted with the largest
 * costs allowed delay only a wrong password. A slot that fails in any way but a wrong password
 * (its material does not parse, scrypt cannot get its memory) is skipped too; a
 * WrongPasswordError counts every skipped file.
 */
export async function openWithPassphrase(
  backend: StorageBackend,
  passphrase: string,
  repositoryId: string,
  onWarning: (message: string) => void,
  /** Slots whose key the repository still lists win over others the password opens (a retired key's). */
  preferred: (material: KeyMaterial) => boolean = () => true,
): Promise<OpenedKeySlot> {
  const { slots, skipped } = await readKeySlots(backend);
  for (const file of skipped) onWarning(skippedKeySlotWarning(file));
  const skippedNames = skipped.map((file) => file.name);
  slots.sort((a, b) => work(a.slot) - work(b.slot) || a.name.localeCompare(b.name));
  let legacy = false;
  let fallback: OpenedKeySlot | undefined;
  for (const { name, slot } of slots) {
    let material: Awaited<ReturnType<typeof openKeySlot>>;
    try {
      material = await openKeySlot(slot, passphrase);
    } catch (error) {
      skippedNames.push(name);
      onWarning(skippedKeySlotWarning({ name, problem: whyUnopened(error) }));
      continue;
    }
    if (material?.repository !== repositoryId) continue;
    // A format-1 key left behind by `migrate`: it opens, but cannot sign.
    if (isLegacy(material)) legacy = true;
    else if (preferred(material)) return { name, material, skipped: skippedNames };
    else fallback ??= { name, material, skipped: skippedNames };
  }
  // A retired key alone opens with this password: opened, to be refused saying why.
  if (fallback) return fallback;
  if (legacy) throw new LegacyKeyError();
  throw new WrongPasswordError(backend.location, skippedNames);
}

function work({ kdf }: KeySlot): number {
  return kdf.N * kdf.r * kdf.p;
}

function whyUnopened(error: unknown): string {
  if (error instanceof MalformedKeyMaterial)
    return `it opens with this password, but the key material in it is not valid (${error.message})`;
  return `it cannot be opened: ${printable(error instanceof Error ? error.message : String(error))}`;
}
