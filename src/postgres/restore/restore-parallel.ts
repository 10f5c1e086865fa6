import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { Repository } from '../../repository/repository.ts';
import type { ArchiveBlocks } from '../logical/dump-follower.ts';
import {
  listFile,
  planParallelRestore,
  readTableOfContents,
  type ParallelPlanOptions,
  type RestoreUnit,
} from './parallel-plan.ts';
import type { RestoreTarget } from './target.ts';
import { count } from '../../util/plural.ts';
import { tableComparer, type RecordedTable, type TableComparison } from '../verify/verify.ts';
import { ContentRanges, findFile, readBlobs } from '../../ops/read-content.ts';

export interface ArchiveRestore {
  repository: Repository;
  /** The snapshot's root tree. */
  tree: string;
  /** The archive's path in the snapshot; none for a snapshot of one database. */
  path?: string;
  target: RestoreTarget;
  database: string;
  /** pg_restore options for every run (--no-owner…). */
  args: string[];
  jobs: number;
  /** Where the archive's data blocks lie, as the backup recorded; without it the restore is serial. */
  blocks?: ArchiveBlocks | undefined;
  schemaOnly?: boolean | undefined;
  dataOnly?: boolean | undefined;
  /** The tables to compare as soon as each is restored (the rest is compared afterwards). */
  tables: readonly RecordedTable[];
  onStep?: (message: string) => void;
  /** Called as the archive's bytes are handed to pg_restore: so far, and the archive's size. */
  onProgress?: ((bytes: number, archiveBytes: number) => void) | undefined;
}

/**
 * Restores one database's archive from a snapshot: with one pg_restore reading the whole stream,
 * or, given jobs > 1 and the archive's layout, in parallel. Returns the tables compared already.
 */
export async function restoreArchive(restore: ArchiveRestore): Promise<TableComparison[]> {
  const { repository, target, database } = restore;
  const archive = await findFile(repository, restore.tree, restore.path);
  let restored = 0;
  const progress = (bytes: number) => {
    restored += bytes;
    restore.onProgress?.(restored, archive.size ?? 0);
  };
  if (restore.jobs <= 1 || !restore.blocks) {
    await target.restore(
      database,
      counted(readBlobs(repository, archive.content ?? []), progress),
      restore.args,
    );
    return [];
  }
  return restoreInParallel(
    {
      repository,
      content: archive.content ?? [],
      size: archive.size ?? 0,
      blocks: restore.blocks,
      target,
      database,
      args: restore.args,
      compare: {
        tables: restore.tables,
        table: await tableComparer(target.connection, target.tools, database),
      },
      ...(restore.onStep ? { onStep: restore.onStep } : {}),
      onBytes: progress,
    },
    { jobs: restore.jobs, schemaOnly: restore.schemaOnly, dataOnly: restore.dataOnly },
  );
}

/** `pieces`, each length told to `onBytes` as it passes. */
async function* counted(
  pieces: AsyncIterable<Uint8Array>,
  onBytes: (bytes: number) => void,
): AsyncGenerator<Uint8Array> {
  for await (const piece of pieces) {
    onBytes(piece.length);
    yield piece;
  }
}

export interface ParallelRestoreInput {
  repository: Repository;
  /** The archive's content blobs and its length. */
  content: readonly string[];
  size: number;
  blocks: ArchiveBlocks;
  target: RestoreTarget;
  database: string;
  /** pg_restore options for every run (--no-owner…). */
  args: string[];
  /** Compares one restored table with its fingerprint; run as soon as the table is complete. */
  compare?: { tables: readonly RecordedTable[]; table: (table: RecordedTable) => Promise<TableComparison> };
  onStep?: (message: string) => void;
  /** Told of the archive's bytes as they are handed over: the schema once, each data block once. */
  onBytes?: (bytes: number) => void;
}

/**
 * Restores an archive with `jobs` pg_restore runs at a time (parallel-plan.ts has the plan),
 * each fed from the repository only the bytes it needs. Tables are compared with their
 * fingerprints while other tables still load. The first failure stops every run.
 */
export async function restoreInParallel(
  input: ParallelRestoreInput,
  options: ParallelPlanOptions,
): Promise<TableComparison[]> {
  const { repository, content, target, database } = input;
  const step = input.onStep ?? (() => undefined);
  const onBytes = input.onBytes ?? (() => undefined);
  const prefixLength = Math.min(input.size, input.blocks[0]?.[1] ?? input.size);
  const ranges = await ContentRanges.of(repository, content);
  const prefix = () => ranges.read(0, prefixLength);
  const plan = planParallelRestore(await readTableOfContents(prefix()), input.blocks, options);
  const lists = await mkdtemp(path.join(os.tmpdir(), 'strongbox-restore-'));
  const abort = new AbortController();
  let listsWritten = 0;
  const run = async (ids: readonly number[], archive: AsyncIterable<Uint8Array>) => {
    const list = path.join(lists, `${listsWritten++}.list`);
    await writeFile(list, listFile(ids), { mode: 0o600 });
    await target.restore(database, archive, [...input.args, '-L', list], abort.signal);
  };
  const recorded = new Map(input.compare?.tables.map((table) => [`${table.schema}.${table.name}`, table]));
  const comparisons: TableComparison[] = [];
  try {
    if (plan.before.length > 0) {
      step('restore the schema');
      await run(plan.before, counted(prefix(), onBytes));
    }
    step(
      `restore ${count(plan.units.length, 'part')} of data, indexes and constraints and ${count(plan.foreignKeys.length, 'foreign key')}, ${options.jobs} at a time`,
    );
    const unitArchive = async function* (unit: RestoreUnit) {
      yield* prefix();
      for (const [offset, length] of unit.blocks) {
        yield* counted(ranges.read(offset, offset + length), onBytes);
      }
    };
    // A table is complete once its unit's data and builds are; a foreign key waits for both of its.
    const unfinished = new Map<number, number>();
    const pending = new Map<RestoreUnit, number>();
    for (const unit of plan.units) {
      pending.set(unit, (unit.ids.length > 0 ? 1 : 0) + unit.builds.length);
      for (const table of unit.tableIds) unfinished.set(table, (unfinished.get(table) ?? 0) + 1);
    }
    const finished = (unit: RestoreUnit) => {
      const left = pending.get(unit)! - 1;
      pending.set(unit, left);
      if (left > 0) return;
      for (const table of unit.tableIds) unfinished.set(table, unfinished.get(table)! - 1);
    };
    const tasks: Task[] = plan.units.map((unit) => ({
      run: async () => {
        if (unit.ids.length > 0) {
          await run(unit.ids, unitArchive(unit));
          finished(unit);
        }
        // The table's indexes go before more tables load: other lanes take them up at once, so
        // that one big table's indexes are built side by side. Comparisons go last: they fill the
        // lanes that chains of foreign keys and the tail leave idle.
        tasks.unshift(
          ...unit.builds.map((id) => ({
            run: async () => {
              await run([id], prefix());
              finished(unit);
            },
          })),
        );
        for (const name of unit.tables) {
          const table = recorded.get(name);
          const compare = input.compare?.table;
          if (table && compare) tasks.push({ run: async () => void comparisons.push(await compare(table)) });
        }
      },
    }));
    // Foreign keys first among what can start: a chain of them on shared tables runs one at a time.
    let keysLeft = plan.foreignKeys.length;
    tasks.unshift(
      ...plan.foreignKeys.map((key) => ({
        run: async () => {
          await run([key.id], prefix());
          keysLeft--;
        },
        locks: key.tables,
        ready: () => key.tables.every((table) => !unfinished.get(table)),
      })),
    );
    if (plan.after.length > 0) {
      // The tail, once every unit and key is in, beside the comparisons still running.
      tasks.unshift({
        run: async () => {
          step('restore triggers, privileges and the rest');
          await run(plan.after, prefix());
        },
        ready: () => keysLeft === 0 && [...pending.values()].every((left) => left === 0),
      });
    }
    await runAtMost(options.jobs, tasks, abort);
    return comparisons;
  } finally {
    abort.abort();
    await rm(lists, { recursive: true, force: true });
  }
}

interface Task {
  run: () => Promise<void>;
  /** Tables it must not share with a task running at the same time. */
  locks?: readonly number[];
  /** Whether it may start yet; tasks that end may make it so. */
  ready?: () => boolean;
}

/**
 * Runs `tasks` (a queue that running tasks may add to) with at most `limit` at once: each lane
 * takes the first task that is ready and holds no lock a running task holds. On the first
 * failure it aborts the others through `abort` and throws that failure.
 */
async function runAtMost(limit: number, tasks: Task[], abort: AbortController): Promise<void> {
  let failure: { error: unknown } | undefined;
  const held = new Set<number>();
  let running = 0;
  let waiting: (() => void)[] = [];
  const lane = async () => {
    while (!failure) {
      const next = tasks.findIndex(
        (task) => (task.ready?.() ?? true) && !task.locks?.some((lock) => held.has(lock)),
      );
      if (next < 0) {
        // Nothing can start: done, unless a running task may still queue, unlock or ready more.
        if (running === 0) {
          if (tasks.length > 0)
            failure ??= { error: new Error('parallel restore: tasks wait on each other') };
          return;
        }
        await new Promise<void>((resolve) => waiting.push(resolve));
        continue;
      }
      const [task] = tasks.splice(next, 1);
      for (const lock of task!.locks ?? []) held.add(lock);
      running++;
      try {
        await task!.run();
      } catch (error) {
        failure ??= { error };
        abort.abort();
      } finally {
        running--;
        for (const lock of task!.locks ?? []) held.delete(lock);
        const wake = waiting;
        waiting = [];
        for (const resolve of wake) resolve();
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, limit) }, lane));
  if (failure) throw failure.error;
}
