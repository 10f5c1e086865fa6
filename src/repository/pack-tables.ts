import { AuthenticationFailure } from '../crypto/aead.ts';
import { STANZA_LENGTH, unwrapKey, type Identity } from '../crypto/key-wrap.ts';
import { StorageError } from '../errors.ts';
import { ObjectNotFoundError, type StorageBackend } from '../storage/backend.ts';
import { packName, type PackBlobEntry } from './blob.ts';
import { sameLocation, type IndexedBlob, type PackListing } from './master-index.ts';
import {
  MalformedPack,
  openPackTable,
  packHeaderLength,
  PACK_HEADER_LENGTH,
  sealedTableLength,
  TRAILER_LENGTH,
} from './pack-format.ts';

/**
 * A pack's own blob table, opened with the pack's data key. Index files are written with the
 * metadata key, which every writer holds; a table is sealed with a data key that only the pack's
 * writer knew and only full keys can unwrap. So an index entry is trusted only where the table of
 * the pack it names says the same (docs/FORMAT.md, "Index file").
 */
export class PackTable {
  private readonly byOffset = new Map<number, PackBlobEntry>();

  constructor(
    readonly pack: string,
    /** The pack's size, as the table's place at its end confirms. */
    readonly size: number,
    readonly dataKey: Buffer,
    /** Stanzas that unwrap to the data key: what an index file lists as the pack's keys. */
    readonly stanzas: Buffer,
    readonly entries: readonly PackBlobEntry[],
  ) {
    for (const entry of entries) this.byOffset.set(entry.offset, entry);
  }

  /** Whether the table says of blob `id` what `copy` says: place, length, type, compression, base. */
  agrees(id: string, copy: IndexedBlob): boolean {
    const entry = this.byOffset.get(copy.offset);
    return entry !== undefined && entry.id === id && sameLocation({ ...entry, pack: this.pack }, copy);
  }
}

/** Why a pack's table could not be read: the pack is not in storage, or no data key opens its table. */
export type PackTableFailure = 'missing' | 'unauthenticated';

/** Bytes read from a pack's end in one request: the table of a pack of a few hundred blobs. */
const TAIL_GUESS = 32 * 1024;
/** Bytes read from a pack's start in one request: a header with up to four recipients' stanzas. */
const HEAD_GUESS = PACK_HEADER_LENGTH + 4 * STANZA_LENGTH;
/** Table entries kept in memory (about 200 bytes each): a few thousand packs' tables. */
const CACHED_ENTRIES = 100_000;

/**
 * Reads and authenticates pack tables by range (the end of the pack, and its header when no listed
 * data key opens the table), each once per session: the tables read are kept up to a bound,
 * least recently used dropped first; failures, which are few, are kept for the session.
 */
export class PackTables {
  private readonly tables = new Map<string, PackTable>();
  private readonly reading = new Map<string, Promise<PackTable | PackTableFailure>>();
  private readonly failures = new Map<string, PackTableFailure>();
  private cachedEntries = 0;

  constructor(
    private readonly backend: StorageBackend,
    private readonly identities: () => readonly Identity[],
    private readonly entryLimit = CACHED_ENTRIES,
  ) {}

  /** The pack's authenticated table, or why there is none; `listings` are what index files say of it. */
  async get(pack: string, listings: readonly PackListing[]): Promise<PackTable | PackTableFailure> {
    const known = this.peek(pack) ?? this.failures.get(pack);
    if (known) return known;
    let reading = this.reading.get(pack);
    if (!reading) {
      reading = readPackTable(this.backend, pack, listings, this.identities());
      this.reading.set(pack, reading);
    }
    const settled = () => this.reading.get(pack) === reading && this.reading.delete(pack);
    let result: PackTable | PackTableFailure;
    try {
      result = await reading;
    } catch (error) {
      // A storage failure is not an answer about the pack: the next read asks again.
      settled();
      throw error;
    }
    if (settled()) this.remember(pack, result);
    return result;
  }

  /** The table of `pack` if it was read and is still kept. */
  peek(pack: string): PackTable | undefined {
    const table = this.tables.get(pack);
    if (table) {
      // Most recently used last: the map's order is the eviction order.
      this.tables.delete(pack);
      this.tables.set(pack, table);
    }
    return table;
  }

  /** Authenticates the table of a pack read whole (check --read-data), keeping the result as `get` does. */
  fromBytes(pack: string, bytes: Buffer, listings: readonly PackListing[]): PackTable | PackTableFailure {
    const known = this.peek(pack) ?? this.failures.get(pack);
    if (known) return known;
    const result = tableFromBytes(pack, bytes, listings, this.identities());
    this.remember(pack, result);
    return result;
  }

  private remember(pack: string, result: PackTable | PackTableFailure): void {
    if (!(result instanceof PackTable)) {
      this.failures.set(pack, result);
      return;
    }
    if (this.tables.has(pack)) return;
    this.tables.set(pack, result);
    this.cachedEntries += result.entries.length;
    for (const [oldest, table] of this.tables) {
      if (this.cachedEntries <= this.entryLimit || oldest === pack) break;
      this.tables.delete(oldest);
      this.cachedEntries -= table.entries.length;
    }
  }
}

/**
 * Reads a pack's table: its end at each size index files give it (then at its stored size), its
 * data key from the stanzas they list (then from the pack's own header). A key that opens the
 * table is the pack writer's: nobody else can seal a table under it.
 */
export async function readPackTable(
  backend: StorageBackend,
  pack: string,
  listings: readonly PackListing[],
  identities: readonly Identity[],
): Promise<PackTable | PackTableFailure> {
  const name = packName(pack);
  const listedKeys = listings.map((listing) => listing.keys);
  let headerKeys: Buffer | undefined;
  const tableAt = async (size: number): Promise<PackTable | undefined> => {
    const sealedTable = await readSealedTable(backend, name, size);
    if (!sealedTable) return undefined;
    for (const stanzas of listedKeys) {
      const table = openWith(pack, size, sealedTable, stanzas, identities);
      if (table) return table;
    }
    headerKeys ??= await readHeaderKeys(backend, name, size);
    return openWith(pack, size, sealedTable, headerKeys, identities);
  };
  const sizes = [...new Set(listings.map((listing) => listing.size))];
  const failed = new Map<number, unknown>();
  try {
    for (const size of sizes) {
      try {
        const table = await tableAt(size);
        if (table) return table;
      } catch (error) {
        // A listed size past the pack's end fails as a storage error: whether it was that is
        // known once the stored size is.
        if (!(error instanceof StorageError) || error instanceof ObjectNotFoundError) throw error;
        failed.set(size, error);
      }
    }
    const stored = await backend.stat(name);
    if (!stored) return 'missing';
    if (failed.has(stored.size)) throw failed.get(stored.size);
    if (sizes.includes(stored.size)) return 'unauthenticated';
    return (await tableAt(stored.size)) ?? 'unauthenticated';
  } catch (error) {
    if (error instanceof ObjectNotFoundError) return 'missing';
    throw error;
  }
}

function tableFromBytes(
  pack: string,
  bytes: Buffer,
  listings: readonly PackListing[],
  identities: readonly Identity[],
): PackTable | PackTableFailure {
  const size = bytes.length;
  let sealedTable: Buffer;
  try {
    if (size < PACK_HEADER_LENGTH + TRAILER_LENGTH) return 'unauthenticated';
    const sealedLength = sealedTableLength(bytes.subarray(size - TRAILER_LENGTH), size);
    sealedTable = bytes.subarray(size - TRAILER_LENGTH - sealedLength, size - TRAILER_LENGTH);
  } catch (error) {
    if (error instanceof MalformedPack) return 'unauthenticated';
    throw error;
  }
  for (const stanzas of [
    bytes.subarray(PACK_HEADER_LENGTH, headerLengthOf(bytes, size)),
    ...listings.map((listing) => listing.keys),
  ]) {
    const table = openWith(pack, size, sealedTable, stanzas, identities);
    if (table) return table;
  }
  return 'unauthenticated';
}

/** The length of a pack's header from its start, stanzas included; 0 when it is damaged. */
function headerLengthOf(start: Buffer, size: number): number {
  try {
    const length = packHeaderLength(start);
    return length > size ? 0 : length;
  } catch (error) {
    if (error instanceof MalformedPack) return 0;
    throw error;
  }
}

function openWith(
  pack: string,
  size: number,
  sealedTable: Buffer,
  stanzas: Buffer,
  identities: readonly Identity[],
): PackTable | undefined {
  try {
    const dataKey = unwrapKey(stanzas, identities);
    return new PackTable(pack, size, dataKey, stanzas, openPackTable(sealedTable, dataKey, size));
  } catch (error) {
    if (error instanceof AuthenticationFailure || error instanceof MalformedPack) return undefined;
    throw error;
  }
}

/** The sealed table at the end of a pack of `size` bytes; undefined when no trailer is there. */
async function readSealedTable(
  backend: StorageBackend,
  name: string,
  size: number,
): Promise<Buffer | undefined> {
  if (size < PACK_HEADER_LENGTH + TRAILER_LENGTH) return undefined;
  const guess = Math.min(size, TAIL_GUESS);
  const tail = await backend.getRange(name, size - guess, guess);
  let sealedLength: number;
  try {
    sealedLength = sealedTableLength(tail.subarray(guess - TRAILER_LENGTH), size);
  } catch (error) {
    if (error instanceof MalformedPack) return undefined;
    throw error;
  }
  if (sealedLength + TRAILER_LENGTH <= guess)
    return tail.subarray(guess - TRAILER_LENGTH - sealedLength, guess - TRAILER_LENGTH);
  return backend.getRange(name, size - TRAILER_LENGTH - sealedLength, sealedLength);
}

/** The stanzas of the pack's own header, read by range; none when it is damaged. */
async function readHeaderKeys(backend: StorageBackend, name: string, size: number): Promise<Buffer> {
  const start = await backend.getRange(name, 0, Math.min(size, HEAD_GUESS));
  const length = headerLengthOf(start, size);
  if (length === 0) return Buffer.alloc(0);
  // More recipients than the first read covered: read the rest.
  const header = length <= start.length ? start : await backend.getRange(name, 0, length);
  return header.subarray(PACK_HEADER_LENGTH, length);
}
