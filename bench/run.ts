import { existsSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { measureChunker } from './chunker.ts';
import { measureDrill, type DrillResults } from './drill.ts';
import { ageRecipient, pgDump, restic, strongbox, twoBackups, zstdAge } from './contenders.ts';
import { ensureDataset, type Dataset } from './dataset.ts';
import { fileSize, warmFile } from './files.ts';
import { measurePhysical, type PhysicalResults } from './physical.ts';
import { physicalContenders } from './physical-contenders.ts';
import { physicalRows } from './physical-rows.ts';
import { measurePostgres } from './postgres.ts';
import { formatTable, judge } from './report.ts';
import { measureRetention, type RetentionResults } from './retention.ts';
import { drillRows, retentionRows, rows, type Outcome, type Results } from './rows.ts';
import { missingBaselines, missingRequirements, SETUP_HINT } from './tools.ts';

const repoRoot = fileURLToPath(new URL('..', import.meta.url));
const cacheDir = path.join(repoRoot, '.bench-cache');
const sqlDir = path.resolve(repoRoot, '../shared/bench');
const cli = path.join(repoRoot, 'dist/bin/strongbox.js');

const log = (line: string) => process.stderr.write(`bench: ${line}\n`);

function scaleFromEnv(): string {
  const scale = process.env.BENCH_SCALE ?? '10';
  if (!(Number(scale) > 0)) throw new Error(`BENCH_SCALE must be a positive number, not ${scale}`);
  return scale;
}

/**
 * The parts of the table: backups and restores of the two dumps and the database, retention,
 * the restore drill beside the restore it is built on, and physical backups and WAL archiving.
 */
const SECTIONS = ['backup', 'retention', 'drill', 'physical'] as const;
type Section = (typeof SECTIONS)[number];

/** `BENCH_ONLY=retention` (or a comma-separated list of sections) runs those alone. */
function sectionsFromEnv(): Set<Section> {
  const only = process.env.BENCH_ONLY;
  if (!only) return new Set(SECTIONS);
  const named = only.split(',').map((name) => name.trim());
  const unknown = named.filter((name) => !(SECTIONS as readonly string[]).includes(name));
  if (unknown.length > 0)
    throw new Error(`BENCH_ONLY names ${unknown.join(', ')}: the sections are ${SECTIONS.join(', ')}`);
  return new Set(named as Section[]);
}

function checkPrerequisites(): void {
  const missing = missingRequirements();
  if (missing.length > 0) throw new Error(`missing ${missing.join(', ')}: ${SETUP_HINT}`);
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run npm run build (npm run bench does)`);
}

/** Runs `measure` unless one of `programs` is missing, which the table then reports. */
async function ifInstalled<T>(programs: string[], measure: () => Promise<T>): Promise<Outcome<T>> {
  const missing = missingBaselines(programs);
  return missing ? { missing } : { ok: await measure() };
}

async function measureAll(dataset: Dataset, workDir: string): Promise<Results> {
  log('reading both dumps once, so every contender finds them in the page cache');
  await warmFile(dataset.before);
  await warmFile(dataset.after);
  log('chunker');
  const chunker = await measureChunker(dataset.before);
  log('pg_dump');
  const pgDumpRun = await pgDump(dataset);
  log('strongbox: two backups');
  const strongboxRuns = await twoBackups(strongbox(cli, workDir), dataset);
  log('restic: two backups');
  const resticRuns = await ifInstalled(['restic'], () => twoBackups(restic(workDir), dataset));
  log('zstd | age');
  const zstdAgeRun = await ifInstalled(['zstd', 'age', 'age-keygen'], async () =>
    zstdAge(dataset.before, await ageRecipient(cacheDir)),
  );
  const postgresDir = path.join(workDir, 'postgres');
  await mkdir(postgresDir);
  const postgres = await measurePostgres({ cli, dataset, sqlDir, workDir: postgresDir, log });
  return {
    dumpBytes: { before: await fileSize(dataset.before), after: await fileSize(dataset.after) },
    chunker,
    pgDump: pgDumpRun,
    strongbox: strongboxRuns,
    restic: resticRuns,
    zstdAge: zstdAgeRun,
    postgres,
  };
}

async function main(): Promise<void> {
  checkPrerequisites();
  const scale = scaleFromEnv();
  const sections = sectionsFromEnv();
  await mkdir(cacheDir, { recursive: true });
  const dataset = await ensureDataset(cacheDir, scale, sqlDir, log);
  const workDir = path.join(cacheDir, 'run');
  await rm(workDir, { recursive: true, force: true });
  await mkdir(workDir);
  let results: Results | undefined;
  let retention: RetentionResults | undefined;
  let drill: DrillResults | undefined;
  let physical: PhysicalResults | undefined;
  try {
    if (sections.has('backup')) results = await measureAll(dataset, workDir);
    if (sections.has('retention')) {
      const retentionDir = path.join(workDir, 'retention');
      await mkdir(retentionDir);
      retention = await measureRetention({ cli, cacheDir, dataset, sqlDir, workDir: retentionDir, log });
    }
    if (sections.has('drill')) {
      const drillDir = path.join(workDir, 'drill');
      await mkdir(drillDir);
      drill = await measureDrill({ cli, dataset, sqlDir, workDir: drillDir, log });
    }
    if (sections.has('physical')) {
      const physicalDir = path.join(workDir, 'physical');
      await mkdir(physicalDir);
      const { contenders, missing } = physicalContenders(physicalDir, cli);
      physical = await measurePhysical({ dataset, sqlDir, workDir: physicalDir, log }, contenders, missing);
    }
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
  const judged = [
    ...(results ? rows(results) : []),
    ...(retention ? retentionRows(retention) : []),
    ...(drill ? drillRows(drill) : []),
    ...(physical ? physicalRows(physical) : []),
  ].map(judge);
  const machine = { cpus: os.cpus().length, node: process.version };
  const report = {
    date: new Date().toISOString(),
    scale,
    machine,
    rows: judged,
    results,
    retention,
    drill,
    physical,
  };
  await writeFile(path.join(cacheDir, 'results.json'), JSON.stringify(report, null, 2) + '\n');
  process.stdout.write(`strongbox benchmark, scale ${scale}, ${report.date}\n\n${formatTable(judged)}\n`);
  log(`written to ${path.relative(process.cwd(), path.join(cacheDir, 'results.json'))}`);
}

main().catch((error: unknown) => {
  process.stderr.write(`bench: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exitCode = 1;
});
