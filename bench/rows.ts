import type { ChunkerFigures } from './chunker.ts';
import type { DrillResults } from './drill.ts';
import type { TwoBackups } from './contenders.ts';
import type { PostgresResults } from './postgres.ts';
import type { Measurement } from './process.ts';
import type { BackupDuringPrune, RetentionResults, RetentionRun } from './retention.ts';
import type { Baseline, Row } from './report.ts';

/** A baseline's measurement, or why it could not be made (its programs are missing). */
export type Outcome<T> = { ok: T } | { missing: string };

export interface Results {
  dumpBytes: { before: number; after: number };
  chunker: ChunkerFigures;
  pgDump: Measurement;
  strongbox: TwoBackups;
  restic: Outcome<TwoBackups>;
  zstdAge: Outcome<Measurement>;
  postgres: PostgresResults;
}

const MB = 1e6;
const MiB = 1024 * 1024;

const rate = (bytes: number, seconds: number) => bytes / MB / seconds;
const share = (backups: TwoBackups) => (100 * backups.second.stored) / backups.first.stored;

function baseline<T>(what: string, outcome: Outcome<T>, value: (result: T) => number): Baseline {
  return 'ok' in outcome ? { what, value: value(outcome.ok) } : { what, missing: outcome.missing };
}

function chunkerRow({ chunker }: Results): Row {
  return {
    measure: 'chunker throughput (FastCDC, 1 MiB pieces)',
    unit: 'MB/s',
    strongbox: rate(chunker.bytes, chunker.chunkerSeconds),
    baseline: {
      what: 'SHA-256 of the same pieces, in process',
      value: rate(chunker.bytes, chunker.sha256Seconds),
    },
    goal: { op: '>=', value: 500 },
  };
}

function ingestRows({ dumpBytes, pgDump, strongbox, restic, zstdAge }: Results): Row[] {
  const measure = 'ingest, 1st backup (dump bytes / wall time)';
  const strongboxRate = rate(dumpBytes.before, strongbox.first.seconds);
  return [
    {
      measure,
      unit: 'MB/s',
      strongbox: strongboxRate,
      baseline: { what: 'pg_dump -Fc -Z0 > /dev/null', value: rate(dumpBytes.after, pgDump.seconds) },
      goal: { op: '>=', value: 250 },
    },
    {
      measure,
      unit: 'MB/s',
      strongbox: strongboxRate,
      baseline: baseline('zstd -3 -T2 | age > /dev/null', zstdAge, (m) => rate(dumpBytes.before, m.seconds)),
    },
    {
      measure,
      unit: 'MB/s',
      strongbox: strongboxRate,
      baseline: baseline('restic backup --stdin, 1st run', restic, (r) =>
        rate(dumpBytes.before, r.first.seconds),
      ),
    },
    {
      measure: 'ingest, 2nd backup (after day.sql)',
      unit: 'MB/s',
      strongbox: rate(dumpBytes.after, strongbox.second.seconds),
      baseline: baseline('restic, 2nd run', restic, (r) => rate(dumpBytes.after, r.second.seconds)),
    },
  ];
}

function memoryRows({ strongbox, restic }: Results): Row[] {
  return [
    {
      measure: 'peak RSS, 1st backup',
      unit: 'MiB',
      strongbox: strongbox.first.maxRssBytes / MiB,
      baseline: baseline('restic, 1st run', restic, (r) => r.first.maxRssBytes / MiB),
      goal: { op: '<', value: 256 },
    },
    {
      measure: 'peak RSS, 2nd backup',
      unit: 'MiB',
      strongbox: strongbox.second.maxRssBytes / MiB,
      baseline: baseline('restic, 2nd run', restic, (r) => r.second.maxRssBytes / MiB),
    },
  ];
}

function storedRows({ strongbox, restic }: Results): Row[] {
  const reported = strongbox.second.reportedStored! / strongbox.first.reportedStored!;
  return [
    {
      measure: 'stored by 1st backup (repository growth)',
      unit: 'MB',
      strongbox: strongbox.first.stored / MB,
      baseline: baseline('restic, 1st run', restic, (r) => r.first.stored / MB),
    },
    {
      measure: 'stored by 2nd backup / 1st (repository growth)',
      unit: '%',
      strongbox: share(strongbox),
      baseline: baseline('restic, same pair', restic, share),
      goal: { op: '<=', value: 4 },
    },
    {
      measure: 'stored by 2nd backup / 1st (--json "stored")',
      unit: '%',
      strongbox: 100 * reported,
      baseline: baseline('restic, repository growth', restic, share),
      goal: { op: '<=', value: 4 },
    },
  ];
}

/** The baseline of the `backup postgres` rows: restic fed by pg_dump, as a script would do it. */
const PG_DUMP_RESTIC = 'pg_dump -Fc -Z0 | restic backup --stdin';

function postgresBackupRows({
  pgDump,
  pgDumpZstd,
  strongbox,
  restic,
  schemaFingerprintSeconds,
}: PostgresResults): Row[] {
  const measure = 'backup postgres, 1st (wall time)';
  return [
    {
      measure: 'schema fingerprint and materialized views, in a backup (wall time)',
      unit: 's',
      strongbox: schemaFingerprintSeconds,
      baseline: { what: 'backup postgres, 1st (the share it adds)', value: strongbox.first.seconds },
      goal: { op: '<=', value: 0.02, relative: true },
    },
    {
      measure,
      unit: 's',
      strongbox: strongbox.first.seconds,
      baseline: { what: 'pg_dump -Fc -Z0 > /dev/null, same database', value: pgDump.seconds },
      goal: { op: '<=', value: 1.15, relative: true },
    },
    {
      measure,
      unit: 's',
      strongbox: strongbox.first.seconds,
      baseline: baseline(
        'pg_dump -Fc -Z0 | zstd -1 > /dev/null, compression alone',
        pgDumpZstd,
        (r) => r.seconds,
      ),
    },
    {
      measure,
      unit: 's',
      strongbox: strongbox.first.seconds,
      baseline: baseline(`${PG_DUMP_RESTIC}, 1st run`, restic, (r) => r.first.seconds),
    },
    {
      measure: 'backup postgres, 2nd (after day.sql)',
      unit: 's',
      strongbox: strongbox.second.seconds,
      baseline: baseline(`${PG_DUMP_RESTIC}, 2nd run`, restic, (r) => r.second.seconds),
    },
  ];
}

function postgresStoredRows({ strongbox, restic }: PostgresResults): Row[] {
  const reported = strongbox.second.reportedStored! / strongbox.first.reportedStored!;
  return [
    {
      measure: 'stored by backup postgres, 1st (repository growth)',
      unit: 'MB',
      strongbox: strongbox.first.stored / MB,
      baseline: baseline(`${PG_DUMP_RESTIC}, 1st run`, restic, (r) => r.first.stored / MB),
    },
    {
      measure: 'stored by backup postgres, 2nd / 1st (repository growth)',
      unit: '%',
      strongbox: share(strongbox),
      baseline: baseline(`${PG_DUMP_RESTIC}, same pair`, restic, share),
      goal: { op: '<=', value: 1 },
    },
    {
      measure: 'stored by backup postgres, 2nd / 1st (--json "stored")',
      unit: '%',
      strongbox: 100 * reported,
      baseline: baseline(`${PG_DUMP_RESTIC}, repository growth`, restic, share),
      goal: { op: '<=', value: 1 },
    },
  ];
}

function restoreRows({ restores }: PostgresResults): Row[] {
  const measure = 'restore into a new database (wall time)';
  return [
    {
      measure,
      unit: 's',
      strongbox: restores.strongbox.seconds,
      baseline: { what: 'pg_restore -j 2 of the before dump', value: restores.pgRestoreParallel.seconds },
      goal: { op: '<=', value: 1, relative: true },
    },
    {
      measure,
      unit: 's',
      strongbox: restores.strongbox.seconds,
      baseline: {
        what: 'pg_restore -j 2, then every table read back (COPY TO, 2 at a time)',
        value: restores.pgRestoreReadBack.seconds,
      },
    },
    {
      measure,
      unit: 's',
      strongbox: restores.strongbox.seconds,
      baseline: { what: 'pg_restore (serial) of the before dump', value: restores.pgRestoreSerial.seconds },
    },
  ];
}

function postgresMemoryRows({ strongbox, restic, restores }: PostgresResults): Row[] {
  const goal = { op: '<', value: 256 } as const;
  return [
    {
      measure: 'peak RSS, backup postgres 1st',
      unit: 'MiB',
      strongbox: strongbox.first.maxRssBytes / MiB,
      baseline: baseline(`${PG_DUMP_RESTIC}, 1st run`, restic, (r) => r.first.maxRssBytes / MiB),
      goal,
    },
    {
      measure: 'peak RSS, backup postgres 2nd',
      unit: 'MiB',
      strongbox: strongbox.second.maxRssBytes / MiB,
      baseline: baseline(`${PG_DUMP_RESTIC}, 2nd run`, restic, (r) => r.second.maxRssBytes / MiB),
      goal,
    },
    {
      measure: 'peak RSS, restore',
      unit: 'MiB',
      strongbox: restores.strongbox.maxRssBytes / MiB,
      baseline: { what: 'pg_restore -j 2', value: restores.pgRestoreParallel.maxRssBytes / MiB },
      goal,
    },
  ];
}

export function rows(results: Results): Row[] {
  const { postgres } = results;
  return [
    chunkerRow(results),
    ...ingestRows(results),
    ...memoryRows(results),
    ...storedRows(results),
    ...postgresBackupRows(postgres),
    ...postgresStoredRows(postgres),
    ...restoreRows(postgres),
    ...postgresMemoryRows(postgres),
  ];
}

/** forget to 7 daily + 4 weekly and prune 30 daily backups, beside `restic forget --prune`. */
export function retentionRows({ history, runs, backupsDuringPrune }: RetentionResults): Row[] {
  const dumps = `${history.days} daily dumps, ${(history.dumpBytes / 1e9).toFixed(1)} GB`;
  const first = runs[0]!;
  return [
    {
      measure: `repository size, before forget (${dumps})`,
      unit: 'MB',
      strongbox: first.strongbox.sizeBefore / MB,
      baseline: baseline('restic, same dumps', first.restic, (r) => r.sizeBefore / MB),
    },
    ...runs.flatMap(pruneRows),
    ...backupsDuringPrune.map(waitRow),
  ];
}

function waitRow({ moment, during, alone, pruneOutlastedBackup }: BackupDuringPrune): Row {
  return {
    measure: `wait of a backup started while prune is ${moment}${pruneOutlastedBackup ? '' : ' (prune ended first)'}`,
    unit: 's',
    strongbox: during.seconds - alone.seconds,
    baseline: { what: 'the same backup alone, right after', value: alone.seconds },
    goal: { op: '<', value: 2 },
  };
}

function pruneRows({ setting, strongbox, restic }: RetentionRun): Row[] {
  const prune = setting === 'default' ? 'prune' : `prune ${setting}`;
  const resticRun = `restic forget --prune${setting === 'default' ? '' : ` ${setting}`}, same policy`;
  return [
    {
      measure: `forget 30 daily backups to 7 daily + 4 weekly --${prune} (wall time)`,
      unit: 's',
      strongbox: strongbox.forgetPrune.seconds,
      baseline: baseline(resticRun, restic, (r) => r.forgetPrune.seconds),
      goal: { op: '<', value: 1, relative: true },
    },
    {
      measure: `peak RSS, forget --${prune}`,
      unit: 'MiB',
      strongbox: strongbox.forgetPrune.maxRssBytes / MiB,
      baseline: baseline(resticRun, restic, (r) => r.forgetPrune.maxRssBytes / MiB),
      goal: { op: '<', value: 256 },
    },
    {
      measure: `forget, then ${prune}, two processes (wall time)`,
      unit: 's',
      strongbox: strongbox.forget.seconds + strongbox.prune.seconds,
      baseline: baseline(resticRun, restic, (r) => r.forgetPrune.seconds),
    },
    {
      measure: `${prune} alone, after forget (wall time)`,
      unit: 's',
      strongbox: strongbox.prune.seconds,
      baseline: baseline(`${resticRun}, its forget included`, restic, (r) => r.forgetPrune.seconds),
    },
    {
      measure: `peak RSS, ${prune}`,
      unit: 'MiB',
      strongbox: strongbox.prune.maxRssBytes / MiB,
      baseline: baseline(resticRun, restic, (r) => r.forgetPrune.maxRssBytes / MiB),
      goal: { op: '<', value: 256 },
    },
    {
      measure: `peak RSS, forget (before ${prune} alone)`,
      unit: 'MiB',
      strongbox: strongbox.forget.maxRssBytes / MiB,
      baseline: baseline(resticRun, restic, (r) => r.forgetPrune.maxRssBytes / MiB),
    },
    {
      measure: `repository size, after forget --${prune}`,
      unit: 'MB',
      strongbox: strongbox.sizeAfter / MB,
      baseline: baseline(resticRun, restic, (r) => r.sizeAfter / MB),
      goal: { op: '<=', value: 1, relative: true },
    },
  ];
}

/** The drill's RTO and wall time beside the verified restore of the same snapshot it is built on. */
export function drillRows({ restore, drill, rtoSeconds, phases }: DrillResults): Row[] {
  const baseline = {
    what: 'strongbox restore latest --jobs 2 (verified), same snapshot',
    value: restore.seconds,
  };
  const phase = (name: keyof typeof phases) => `${name} ${phases[name]?.toFixed(2) ?? '—'} s`;
  return [
    {
      measure: `drill RTO: fetch + restore + verify, from its --json (${phase('fetch')}, ${phase('restore')}, ${phase('verify')})`,
      unit: 's',
      strongbox: rtoSeconds,
      baseline,
    },
    {
      measure: `drill, wall time (the RTO, the ${phase('checks')}, the drop, the process's start and key derivation)`,
      unit: 's',
      strongbox: drill.seconds,
      baseline,
    },
    {
      measure: 'peak RSS, drill',
      unit: 'MiB',
      strongbox: drill.maxRssBytes / MiB,
      baseline: { what: 'strongbox restore latest --jobs 2', value: restore.maxRssBytes / MiB },
      goal: { op: '<', value: 256 },
    },
  ];
}
