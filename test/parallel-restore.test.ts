import { describe, expect, it } from 'vitest';
import type { TocEntry, TocSection } from '../src/postgres/logical/archive-reader.ts';
import type { ArchiveBlocks } from '../src/postgres/logical/dump-follower.ts';
import { ContentRanges } from '../src/ops/read-content.ts';
import { listFile, planParallelRestore } from '../src/postgres/restore/parallel-plan.ts';

/** A table of contents in pg_dump's order: schema, data, then post-data. */
function entry(
  dumpId: number,
  desc: string,
  section: TocSection,
  dependencies: number[] = [],
  tag = `e${dumpId}`,
): TocEntry {
  const table = desc === 'TABLE DATA' ? { schema: 'public', name: tag, dumpId: dependencies[0] } : undefined;
  return {
    dumpId,
    desc,
    section,
    tag,
    namespace: 'public',
    owner: 'postgres',
    copyStatement: desc === 'TABLE DATA' ? `COPY public.${tag} (id) FROM stdin;\n` : null,
    dependencies,
    hasData: section === 'data',
    ...(table ? { table } : {}),
  };
}

const toc: TocEntry[] = [
  entry(1, 'SCHEMA', 'pre-data'),
  entry(2, 'TABLE', 'pre-data', [1], 'big'),
  entry(3, 'TABLE', 'pre-data', [1], 'small_a'),
  entry(4, 'TABLE', 'pre-data', [1], 'small_b'),
  entry(5, 'SEQUENCE', 'pre-data', [1]),
  entry(20, 'TABLE DATA', 'data', [2], 'big'),
  entry(21, 'TABLE DATA', 'data', [3], 'small_a'),
  entry(22, 'TABLE DATA', 'data', [4], 'small_b'),
  entry(23, 'SEQUENCE SET', 'data', [5]),
  entry(30, 'CONSTRAINT', 'post-data', [2], 'big_pkey'),
  entry(31, 'INDEX', 'post-data', [2], 'big_idx'),
  entry(32, 'CONSTRAINT', 'post-data', [3], 'small_a_pkey'),
  entry(33, 'FK CONSTRAINT', 'post-data', [2, 30, 4], 'small_b small_b_big_fk'),
  entry(34, 'TRIGGER', 'post-data', [2]),
  entry(35, 'ACL', 'none', [2]),
  // An index that needs something only the tail restores stays in the tail.
  entry(36, 'INDEX', 'post-data', [2, 34], 'odd_idx'),
];
const MiB = 1024 * 1024;
// Data blocks lie in archive order after a 1000-byte table of contents.
const blocks: ArchiveBlocks = [
  [20, 1000, 100 * MiB],
  [21, 1000 + 100 * MiB, 1000],
  [22, 2000 + 100 * MiB, 2000],
];

describe('parallel restore plan', () => {
  const plan = planParallelRestore(toc, blocks, { jobs: 2 });

  it('restores the schema first, and the tail after foreign keys', () => {
    expect(plan.prefixLength).toBe(1000);
    expect(plan.before).toEqual([1, 2, 3, 4, 5]);
    expect(plan.foreignKeys).toEqual([{ id: 33, tables: [4, 2] }]);
    expect(plan.after).toEqual([34, 35, 36]);
  });

  it('gives a big table a unit of its own with its indexes, and batches the small ones', () => {
    expect(plan.units[0]).toEqual({
      ids: [20],
      builds: [30, 31],
      blocks: [[1000, 100 * MiB]],
      tables: ['public.big'],
      tableIds: [2],
      weight: expect.any(Number) as number,
    });
    expect(plan.units).toHaveLength(2);
    // The rest in archive order: the sequence value, the small tables' data, then the constraint.
    expect(plan.units[1]!.ids).toEqual([21, 22, 23, 32]);
    expect(plan.units[1]!.blocks).toEqual([
      [1000 + 100 * MiB, 1000],
      [2000 + 100 * MiB, 2000],
    ]);
    expect(plan.units[1]!.tables.sort()).toEqual(['public.small_a', 'public.small_b']);
  });

  it('restores every entry exactly once', () => {
    const all = [
      ...plan.before,
      ...plan.units.flatMap((unit) => [...unit.ids, ...unit.builds]),
      ...plan.foreignKeys.map((key) => key.id),
      ...plan.after,
    ];
    expect(all.sort((a, b) => a - b)).toEqual(toc.map((e) => e.dumpId).sort((a, b) => a - b));
  });

  it('leaves out data for --schema-only and the schema for --data-only', () => {
    const schemaOnly = planParallelRestore(toc, blocks, { jobs: 2, schemaOnly: true });
    expect(schemaOnly.units.flatMap((unit) => unit.blocks)).toEqual([]);
    expect(schemaOnly.units.flatMap((unit) => unit.ids).sort((a, b) => a - b)).toEqual([30, 31, 32]);
    const dataOnly = planParallelRestore(toc, blocks, { jobs: 2, dataOnly: true });
    expect(dataOnly.before).toEqual([]);
    expect(dataOnly.after).toEqual([]);
    expect(dataOnly.foreignKeys).toEqual([]);
    expect(dataOnly.units.flatMap((unit) => unit.ids).sort((a, b) => a - b)).toEqual([20, 21, 22, 23]);
  });

  it('writes list files pg_restore reads, one dump id a line', () => {
    expect(listFile([20, 30, 31])).toBe('20;\n30;\n31;\n');
  });
});

describe('byte ranges of a file read from its blobs', () => {
  // A stand-in repository of three blobs: ranges are computed from lengths alone.
  const blobs = new Map([
    ['a', Buffer.from('0123')],
    ['b', Buffer.from('456')],
    ['c', Buffer.from('789ab')],
  ]);
  const read: string[] = [];
  const repository = {
    blobLength: (id: string) => Promise.resolve(blobs.get(id)!.length),
    readBlob: (id: string) => {
      read.push(id);
      return Promise.resolve(blobs.get(id)!);
    },
  };
  const ranges = ContentRanges.of(repository, ['a', 'b', 'c']);
  const text = async (start: number, end: number) => {
    read.length = 0;
    const pieces: Buffer[] = [];
    for await (const piece of (await ranges).read(start, end)) pieces.push(piece);
    return Buffer.concat(pieces).toString();
  };

  it('reads only the blobs that hold the range', async () => {
    expect(await text(0, 12)).toBe('0123456789ab');
    expect(await text(4, 7)).toBe('456');
    expect(read).toEqual(['b']);
    expect(await text(3, 8)).toBe('34567');
    expect(read).toEqual(['a', 'b', 'c']);
    expect(await text(11, 12)).toBe('b');
    expect(read).toEqual(['c']);
    expect(await text(5, 5)).toBe('');
  });

  it('refuses a range past the end', async () => {
    await expect(text(10, 13)).rejects.toThrow(/past the end of the content \(12 bytes\)/);
  });
});
