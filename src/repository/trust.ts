import { createHash } from 'node:crypto';
import type { StorageBackend } from '../storage/backend.ts';
import type { RepositoryConfig } from './config.ts';
import { readEndorsement, EndorsementUnavailable } from './endorsement.ts';
import type { KeyKind } from './keys.ts';
import {
  signatureValid,
  SIGNATURE_TRAILER_LENGTH,
  trailerDigest,
  writerId,
  type SignedKind,
  type SignedParts,
} from './signed-object.ts';

/** The key that wrote an object, as far as the repository can tell. */
export interface WriterInfo {
  /** The writer's short id (signed-object.ts writerId); absent for a format-1 object. */
  id?: string;
  kind?: KeyKind;
  /** A current writer signed it; otherwise an endorsement vouches for it. */
  current: boolean;
}

export type Verdict = { trusted: true; writer: WriterInfo } | { trusted: false; problem: string };

/**
 * Decides whether a snapshot or index file may be believed: signed by a writer the signed config
 * lists, or listed by an endorsement the config names. Anything else (no signature, a signature
 * that fails, a retired or foreign key) is refused: a key that was retired, or a write-only key
 * with storage access, cannot make another key accept what it forged.
 */
export class WriterTrust {
  private endorsed: { list: readonly string[]; objects: Promise<EndorsedObjects> } | undefined;

  constructor(
    /** The config in force: key management replaces it within a session. */
    private readonly currentConfig: () => RepositoryConfig,
    private readonly backend: StorageBackend,
    private readonly onWarning: (message: string) => void,
  ) {}

  async judge(
    kind: SignedKind,
    id: string,
    bytes: Uint8Array,
    signed: SignedParts | undefined,
  ): Promise<Verdict> {
    const config = this.currentConfig();
    if (signed && signatureValid(kind, config.id, signed)) {
      const publicKey = signed.signer.toString('base64');
      const writer = config.writers.find((entry) => entry.publicKey === publicKey);
      if (writer) return { trusted: true, writer: { id: writer.id, kind: writer.kind, current: true } };
    }
    const endorsed = await this.endorsedObjects();
    const hash = createHash('sha256').update(bytes).digest('hex');
    const endorsable =
      kind === 'snapshot' ? endorsed.snapshots : kind === 'index' ? endorsed.indexes : undefined;
    if (hash === id && endorsable?.has(id)) {
      const signer = signed ? writerId(signed.signer) : undefined;
      return {
        trusted: true,
        writer: { ...(signer ? { id: signer, kind: endorsed.writers.get(signer) } : {}), current: false },
      };
    }
    if (!signed) return { trusted: false, problem: 'it carries no signature' };
    if (!signatureValid(kind, config.id, signed))
      return { trusted: false, problem: 'its signature does not verify' };
    return {
      trusted: false,
      problem: `it is signed by key ${writerId(signed.signer)}, which is not a writer of this repository`,
    };
  }

  /**
   * Records that remove or condemn data (removal records, prune plans) are believed only when a
   * current full key signed them: a write-only key may add backups, never take them away. So are
   * drill and check results: a database host must not be able to vouch for its own backups.
   * `refusal` says what a write-only key may not do, after "which".
   */
  judgeFullWriter(
    kind: SignedKind,
    signed: SignedParts | undefined,
    refusal = 'may not remove data',
  ): Verdict {
    const signer = this.signerOf(kind, signed);
    if ('problem' in signer) return { trusted: false, problem: signer.problem };
    const { writer } = signer;
    if (!writer) return notAWriter(signer.id);
    if (writer.kind !== 'full')
      return { trusted: false, problem: `it is signed by write-only key ${writer.id}, which ${refusal}` };
    return { trusted: true, writer: { id: writer.id, kind: writer.kind, current: true } };
  }

  /**
   * Audit records: whoever signed them, as far as the repository can tell. A current writer, full
   * or write-only, or a retired one that an endorsement names (which may have signed it after it
   * retired, so `current` is false); anything else is not trusted.
   */
  async judgeWriter(kind: SignedKind, signed: SignedParts | undefined): Promise<Verdict> {
    const signer = this.signerOf(kind, signed);
    if ('problem' in signer) return { trusted: false, problem: signer.problem };
    const { writer } = signer;
    if (writer) return { trusted: true, writer: { id: writer.id, kind: writer.kind, current: true } };
    const retired = (await this.endorsedObjects()).writerKeys.get(signer.publicKey);
    if (retired) return { trusted: true, writer: { id: signer.id, kind: retired, current: false } };
    return notAWriter(signer.id);
  }

  /**
   * WAL objects (wal-store.ts): signed by a current writer, write-only keys included (database
   * hosts archive their WAL), or by a retired one whose endorsement names this very signature.
   * Unlike snapshots, an endorsed WAL object must still carry a signature that verifies.
   */
  async judgeWal(bytes: Uint8Array, signed: SignedParts | undefined): Promise<Verdict> {
    const signer = this.signerOf('wal', signed);
    if ('problem' in signer) return { trusted: false, problem: signer.problem };
    const { writer } = signer;
    if (writer) return { trusted: true, writer: { id: writer.id, kind: writer.kind, current: true } };
    const endorsed = await this.endorsedObjects();
    if (endorsed.wal.has(trailerDigest(bytes.subarray(bytes.length - SIGNATURE_TRAILER_LENGTH))))
      return {
        trusted: true,
        writer: { id: signer.id, kind: endorsed.writers.get(signer.id), current: false },
      };
    return notAWriter(signer.id);
  }

  /** Who signed an object whose signature verifies, and their entry if they are a current writer. */
  private signerOf(
    kind: SignedKind,
    signed: SignedParts | undefined,
  ): { problem: string } | { id: string; publicKey: string; writer: WriterEntry | undefined } {
    const config = this.currentConfig();
    if (!signed) return { problem: 'it carries no signature' };
    if (!signatureValid(kind, config.id, signed)) return { problem: 'its signature does not verify' };
    const publicKey = signed.signer.toString('base64');
    return {
      id: writerId(signed.signer),
      publicKey,
      writer: config.writers.find((entry) => entry.publicKey === publicKey),
    };
  }

  private endorsedObjects(): Promise<EndorsedObjects> {
    const list = this.currentConfig().endorsements;
    if (this.endorsed?.list !== list) this.endorsed = { list, objects: this.loadEndorsements(list) };
    return this.endorsed.objects;
  }

  private async loadEndorsements(list: readonly string[]): Promise<EndorsedObjects> {
    const objects: EndorsedObjects = {
      snapshots: new Set(),
      indexes: new Set(),
      wal: new Set(),
      writers: new Map(),
      writerKeys: new Map(),
    };
    for (const id of list) {
      try {
        const endorsement = await readEndorsement(this.backend, id);
        for (const snapshot of endorsement.snapshots) objects.snapshots.add(snapshot);
        for (const index of endorsement.indexes) objects.indexes.add(index);
        for (const wal of endorsement.wal ?? []) objects.wal.add(wal);
        for (const writer of endorsement.writers) {
          objects.writers.set(writer.id, writer.kind);
          objects.writerKeys.set(writer.publicKey, writer.kind);
        }
      } catch (error) {
        if (!(error instanceof EndorsementUnavailable)) throw error;
        this.onWarning(
          `${error.message}: the objects it vouches for are not trusted; run \`strongbox check\``,
        );
      }
    }
    return objects;
  }
}

type WriterEntry = RepositoryConfig['writers'][number];

function notAWriter(id: string): Verdict {
  return { trusted: false, problem: `it is signed by key ${id}, which is not a writer of this repository` };
}

interface EndorsedObjects {
  snapshots: Set<string>;
  indexes: Set<string>;
  /** WAL objects by the digest of their signature trailer. */
  wal: Set<string>;
  writers: Map<string, KeyKind>;
  /** Retired writers by their public key (base64). */
  writerKeys: Map<string, KeyKind>;
}
