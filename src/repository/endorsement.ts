import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { StorageBackend } from '../storage/backend.ts';
import { ObjectNotFoundError } from '../storage/backend.ts';
import { objectName } from './layout.ts';
import type { KeyKind } from './keys.ts';

/**
 * An endorsement (`endorsements/<sha256>`): snapshots, index files and WAL objects that no current writer
 * signed but that the administrator vouches for, by content hash. Written when keys are retired
 * (their earlier work stays trusted, anything they sign later does not) and by `migrate` for
 * format-1 objects, which carry no signature. The signed config lists each endorsement by its
 * hash, so an endorsement cannot be changed or added without the administrator key.
 */
export interface Endorsement {
  version: 1;
  created: string;
  reason: 'rotation' | 'key-removed' | 'migration';
  /** The retired writers whose objects are listed, so that listings can still name them. */
  writers: { id: string; kind: KeyKind; publicKey: string }[];
  snapshots: string[];
  indexes: string[];
  /**
   * WAL objects, by the SHA-256 of their signature trailer (signed-object.ts trailerDigest).
   * Absent when there are none, so that endorsements of repositories without WAL stay readable by
   * strongbox versions that know no WAL.
   */
  wal?: string[];
}

const HEX_64 = z.string().regex(/^[0-9a-f]{64}$/);
const MAX_OBJECTS = 10_000_000;
export const MAX_ENDORSEMENT_BYTES = 1024 * 1024 * 1024;

const ENDORSEMENT_SCHEMA = z.strictObject({
  version: z.literal(1),
  created: z.iso.datetime({ offset: true }),
  reason: z.enum(['rotation', 'key-removed', 'migration']),
  writers: z
    .array(
      z.strictObject({
        id: z.string().regex(/^[0-9a-f]{16}$/),
        kind: z.enum(['full', 'write-only']),
        publicKey: z.string().max(64),
      }),
    )
    .max(100_000),
  snapshots: z.array(HEX_64).max(MAX_OBJECTS),
  indexes: z.array(HEX_64).max(MAX_OBJECTS),
  wal: z.array(HEX_64).max(MAX_OBJECTS).optional(),
});

export function encodeEndorsement(endorsement: Endorsement): { id: string; name: string; bytes: Buffer } {
  const bytes = Buffer.from(JSON.stringify(endorsement) + '\n');
  const id = createHash('sha256').update(bytes).digest('hex');
  return { id, name: objectName('endorsement', id), bytes };
}

/** Why an endorsement the config lists cannot be used. */
export class EndorsementUnavailable extends Error {
  constructor(
    readonly endorsement: string,
    readonly problem: 'missing' | 'altered' | 'malformed',
  ) {
    super(`endorsement ${endorsement.slice(0, 8)} is ${problem}`);
  }
}

export async function readEndorsement(backend: StorageBackend, id: string): Promise<Endorsement> {
  let bytes: Buffer;
  try {
    bytes = await backend.get(objectName('endorsement', id));
  } catch (error) {
    if (error instanceof ObjectNotFoundError) throw new EndorsementUnavailable(id, 'missing');
    throw error;
  }
  if (createHash('sha256').update(bytes).digest('hex') !== id)
    throw new EndorsementUnavailable(id, 'altered');
  let value: unknown;
  try {
    value = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new EndorsementUnavailable(id, 'malformed');
  }
  const parsed = ENDORSEMENT_SCHEMA.safeParse(value);
  if (!parsed.success) throw new EndorsementUnavailable(id, 'malformed');
  return parsed.data;
}
