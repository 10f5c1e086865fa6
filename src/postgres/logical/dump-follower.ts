import { CHUNK_BOUNDARY, type ContentPiece } from '../../sources/source.ts';
import { ArchiveReader, type ArchiveHeader } from './archive-reader.ts';
import type { ArchivedLargeObjects } from './large-objects.ts';
import type { RecordedTable } from '../verify/verify.ts';

/**
 * Where each data block lies in the archive, as [dump id, offset, length], in archive order.
 * Everything before the first block is the header and table of contents. A restore uses it to
 * feed several pg_restore processes only the blocks each of them restores.
 */
export type ArchiveBlocks = [dumpId: number, offset: number, length: number][];

/**
 * Follows pg_dump's archive as it streams into the repository, reading it once: a chunk
 * boundary before each table's data (so a table's chunks do not depend on the table before
 * it), a fingerprint of every table from its rows as they pass, each large object's size and
 * SHA-256, and proof that the archive is complete (a truncated one fails the backup instead of
 * being recorded).
 */
export class DumpFollower {
  header: ArchiveHeader | undefined;
  readonly tables: RecordedTable[] = [];
  readonly blocks: ArchiveBlocks = [];
  readonly largeObjects: ArchivedLargeObjects = { declared: [], contents: new Map() };
  private boundaries: number[] = [];
  private blockStart = 0;
  private readonly reader = new ArchiveReader({
    header: (header) => (this.header = header),
    tocEntry: (entry) => {
      if (entry.desc === 'BLOB') this.largeObjects.declared.push(entry.tag);
    },
    largeObject: ({ oid, bytes, sha256 }) => this.largeObjects.contents.set(String(oid), { bytes, sha256 }),
    dataStart: ({ offset }) => {
      this.boundaries.push(offset);
      this.blockStart = offset;
    },
    dataEnd: ({ entry, offset, rows, fingerprint }) => {
      this.blocks.push([entry.dumpId, this.blockStart, offset - this.blockStart]);
      if (entry.desc !== 'TABLE DATA' || !entry.table || !entry.copyStatement || fingerprint === undefined)
        return;
      this.tables.push({
        schema: entry.table.schema,
        name: entry.table.name,
        copyStatement: entry.copyStatement,
        rows,
        hash: fingerprint,
      });
    },
  });

  /** Passes the archive through, with CHUNK_BOUNDARY before every data block. */
  async *follow(archive: AsyncIterable<Uint8Array>): AsyncGenerator<ContentPiece> {
    let offset = 0;
    for await (const piece of archive) {
      this.boundaries = [];
      this.reader.push(piece);
      let start = 0;
      for (const boundary of this.boundaries) {
        const at = boundary - offset;
        if (at > start) yield piece.subarray(start, at);
        yield CHUNK_BOUNDARY;
        start = at;
      }
      if (start < piece.length) yield start === 0 ? piece : piece.subarray(start);
      offset += piece.length;
    }
    this.reader.end();
  }
}
