import { ArchiveReader, type TocEntry } from '../logical/archive-reader.ts';
import type { ArchiveBlocks } from '../logical/dump-follower.ts';

/**
 * A parallel restore from an archive that can only be read front to back.
 *
 * pg_restore --jobs needs a seekable file, and a dump kept in a repository is a stream that this
 * project never copies whole to disk. So the restore is split into pg_restore runs of its own,
 * each fed the archive's header and table of contents followed by just the data blocks it
 * restores, and told which entries to restore with a list file (-L):
 *
 *   1. before: the schema (pre-data), in one run;
 *   2. units, `jobs` at a time, largest first: a table's data, then the indexes and constraints
 *      that need only that table (the expensive part of post-data), each a run of its own, so
 *      that one big table's indexes are built side by side and while other tables still load;
 *      small tables are batched together, their indexes in the same run as their data;
 *   3. foreign keys, each in a run of its own as soon as both its tables are complete (units
 *      and foreign keys share the `jobs` lanes), never two at once on the same table: adding one
 *      locks both its tables, and two waiting on each other could deadlock;
 *   4. after: the rest (triggers, index attachments, materialized view data, privileges…), in
 *      one run.
 *
 * A pg_restore reading a pipe restores its data blocks in the order they come, so each run's
 * list keeps the archive's order (pg_restore follows the order of a list file).
 */
export interface ParallelRestorePlan {
  /** Bytes of header and table of contents at the start of the archive, sent to every run. */
  prefixLength: number;
  before: number[];
  units: RestoreUnit[];
  foreignKeys: ForeignKey[];
  after: number[];
}

export interface ForeignKey {
  id: number;
  /** Dump ids of the tables it locks: its own first, then the one it references. */
  tables: number[];
}

export interface RestoreUnit {
  /** Dump ids of the entries to restore, in archive order. */
  ids: number[];
  /** Indexes and constraints to build once `ids` are restored, each in a run of its own. */
  builds: number[];
  /** The data blocks they need, as [offset, length], in archive order. */
  blocks: [offset: number, length: number][];
  /** "schema.table" of each table whose data the unit restores, for verification. */
  tables: string[];
  /** Dump ids of the tables whose data and builds the unit restores. */
  tableIds: number[];
  /** Relative cost, for scheduling the largest first. */
  weight: number;
}

export interface ParallelPlanOptions {
  jobs: number;
  schemaOnly?: boolean;
  dataOnly?: boolean;
}

/** An index or constraint build costs about half as much as loading its table. */
const BUILD_WEIGHT = 0.5;
/**
 * Checking a foreign key scans its table, about as long as loading it. Counting it makes the
 * tables that keys are on start early, so that the chain (data, key, foreign keys, tail) that
 * ends the restore starts early too.
 */
const FOREIGN_KEY_WEIGHT = 1;
/** Per pg_restore run: a process, a connection and a read of the table of contents. */
const RUN_WEIGHT = 256 * 1024;
/** Entries restored with the schema's privileges step, after everything else, as pg_restore does. */
const LATE_ENTRIES = new Set(['ACL', 'DEFAULT ACL', 'MATERIALIZED VIEW DATA', 'EVENT TRIGGER']);
/** Post-data entries that depend on one table only, and are worth running beside other tables. */
const TABLE_BUILDS = new Set(['INDEX', 'CONSTRAINT']);
const FOREIGN_KEY = 'FK CONSTRAINT';

export function planParallelRestore(
  entries: readonly TocEntry[],
  blocks: ArchiveBlocks,
  options: ParallelPlanOptions,
): ParallelRestorePlan {
  const byId = new Map(entries.map((entry) => [entry.dumpId, entry]));
  const blockOf = new Map(blocks.map(([dumpId, offset, length]) => [dumpId, [offset, length] as const]));
  const withSchema = !options.dataOnly;
  const withData = !options.schemaOnly;
  /** Units by the dump id of the table they belong to; 0 for data that belongs to no table. */
  const unitsByTable = new Map<number, RestoreUnit>();
  const unitFor = (table: number) => {
    let unit = unitsByTable.get(table);
    if (!unit) {
      unit = {
        ids: [],
        builds: [],
        blocks: [],
        tables: [],
        tableIds: table ? [table] : [],
        weight: RUN_WEIGHT,
      };
      unitsByTable.set(table, unit);
    }
    return unit;
  };
  const before: number[] = [];
  const after: number[] = [];
  const foreignKeys: ForeignKey[] = [];
  const inAfter = new Set<number>();

  for (const entry of entries) {
    if (entry.section === 'data') {
      if (!withData) continue;
      const unit = unitFor(entry.desc === 'TABLE DATA' ? (entry.table?.dumpId ?? 0) : 0);
      unit.ids.push(entry.dumpId);
      const block = blockOf.get(entry.dumpId);
      if (block) {
        unit.blocks.push([block[0], block[1]]);
        unit.weight += block[1];
      }
      if (entry.desc === 'TABLE DATA' && entry.table)
        unit.tables.push(`${entry.table.schema}.${entry.table.name}`);
      continue;
    }
    if (!withSchema) continue;
    const table =
      TABLE_BUILDS.has(entry.desc) && entry.section === 'post-data' ? builtOn(entry, byId) : undefined;
    const locks = entry.desc === FOREIGN_KEY ? lockedBy(entry, byId, inAfter) : undefined;
    if (table !== undefined) unitFor(table).builds.push(entry.dumpId);
    else if (locks) foreignKeys.push({ id: entry.dumpId, tables: locks });
    else if (entry.section === 'post-data' || LATE_ENTRIES.has(entry.desc)) {
      after.push(entry.dumpId);
      inAfter.add(entry.dumpId);
    } else before.push(entry.dumpId);
  }

  const units = [...unitsByTable.values()].filter((unit) => unit.ids.length + unit.builds.length > 0);
  for (const [table, unit] of unitsByTable) {
    const data = unit.weight - RUN_WEIGHT;
    const keysOn = foreignKeys.filter((key) => key.tables[0] === table).length;
    unit.weight += data * (BUILD_WEIGHT * unit.builds.length + FOREIGN_KEY_WEIGHT * keysOn);
  }
  return {
    prefixLength: blocks[0]?.[1] ?? Infinity,
    before,
    units: batchSmallUnits(units, options.jobs, new Map(entries.map((entry, i) => [entry.dumpId, i]))),
    foreignKeys,
    after,
  };
}

/**
 * The table an index or constraint is built on, when that is all it needs from the restore:
 * every dependency is restored before the units start (schema) or is that table. A partition's
 * index or key also depends on its parent table's (built ONLY on the parent), but the two stay
 * apart until INDEX ATTACH, in the tail, joins them: either may be built first.
 */
function builtOn(entry: TocEntry, byId: ReadonlyMap<number, TocEntry>): number | undefined {
  let table: number | undefined;
  for (const id of entry.dependencies) {
    const dependency = byId.get(id);
    if (!dependency) return undefined;
    if (dependency.desc === 'TABLE') {
      if (table !== undefined && table !== id) return undefined;
      table = id;
    } else if (TABLE_BUILDS.has(dependency.desc) && dependency.section === 'post-data') {
      continue;
    } else if (dependency.section === 'post-data' || dependency.section === 'data') {
      return undefined;
    }
  }
  return table;
}

/**
 * The tables a foreign key locks, found through its dependencies: its own table, and the
 * constraint or index it references, on the other table. Undefined when it needs something
 * restored only with the rest (it then stays there) or its tables cannot be told.
 */
function lockedBy(
  entry: TocEntry,
  byId: ReadonlyMap<number, TocEntry>,
  inAfter: ReadonlySet<number>,
): number[] | undefined {
  const own = new Set<number>();
  const referenced = new Set<number>();
  for (const id of entry.dependencies) {
    const dependency = byId.get(id);
    if (!dependency || inAfter.has(id)) return undefined;
    if (dependency.desc === 'TABLE') own.add(id);
    else if (TABLE_BUILDS.has(dependency.desc)) {
      for (const table of dependency.dependencies)
        if (byId.get(table)?.desc === 'TABLE') referenced.add(table);
    }
  }
  if (own.size === 0) return undefined;
  // pg_dump tags a foreign key "table constraint": that table goes first.
  const onTable = [...own].find((id) => {
    const table = byId.get(id)!;
    return table.namespace === entry.namespace && entry.tag.startsWith(`${table.tag} `);
  });
  return [...new Set([...(onTable === undefined ? [] : [onTable]), ...own, ...referenced])];
}

/**
 * Units larger than a share of the whole run alone; smaller ones are put together up to that
 * share, so a database of thousands of small tables does not start thousands of pg_restores,
 * and the largest still start first. Ids and blocks stay in archive order within a batch.
 */
function batchSmallUnits(
  units: RestoreUnit[],
  jobs: number,
  archiveOrder: ReadonlyMap<number, number>,
): RestoreUnit[] {
  const total = units.reduce((sum, unit) => sum + unit.weight, 0);
  const share = Math.max(16 * RUN_WEIGHT, total / (8 * Math.max(1, jobs)));
  const sorted = [...units].sort((a, b) => b.weight - a.weight);
  const result: RestoreUnit[] = [];
  let batch: RestoreUnit | undefined;
  for (const unit of sorted) {
    if (unit.weight >= share) {
      result.push(unit);
      continue;
    }
    if (!batch) batch = { ids: [], builds: [], blocks: [], tables: [], tableIds: [], weight: 0 };
    batch.ids.push(...unit.ids, ...unit.builds);
    batch.blocks.push(...unit.blocks);
    batch.tables.push(...unit.tables);
    batch.tableIds.push(...unit.tableIds);
    batch.weight += unit.weight;
    if (batch.weight >= share) {
      result.push(batch);
      batch = undefined;
    }
  }
  if (batch) result.push(batch);
  return result
    .map((unit) => ({
      ...unit,
      ids: unit.ids.sort((a, b) => archiveOrder.get(a)! - archiveOrder.get(b)!),
      blocks: unit.blocks.sort((a, b) => a[0] - b[0]),
    }))
    .sort((a, b) => b.weight - a.weight);
}

/** Reads the table of contents from the start of an archive; stops at its first data block. */
export async function readTableOfContents(prefix: AsyncIterable<Uint8Array>): Promise<TocEntry[]> {
  const entries: TocEntry[] = [];
  const reader = new ArchiveReader({ tocEntry: (entry) => entries.push(entry) });
  for await (const piece of prefix) reader.push(piece);
  return entries;
}

/** A list file for pg_restore -L naming `ids`, in the order given. */
export function listFile(ids: readonly number[]): string {
  return ids.map((id) => `${id};\n`).join('');
}
