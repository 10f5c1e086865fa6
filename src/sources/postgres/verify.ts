import { spawn } from 'node:child_process';
import path from 'node:path';
import { SourceError, VerificationError } from '../../errors.ts';
import type { PostgresConnection } from './connection.ts';
import { TableFingerprint } from './fingerprint.ts';
import { copyOutStatement, databaseEncoding, sessionLikePgDump } from './queries.ts';
import { firstError, psql, type PostgresTools } from './tools.ts';

/** What a backup recorded of one table, to compare a restore against. */
export interface RecordedTable {
  schema: string;
  name: string;
  /** pg_dump's COPY … FROM stdin statement for the table: its columns, in order. */
  copyStatement: string;
  rows: number;
  hash: string;
}

export interface TableComparison {
  schema: string;
  name: string;
  expectedRows: number;
  actualRows: number;
  matches: boolean;
}

export interface DatabaseVerification {
  tables: number;
  rows: number;
  /** Tables whose row count or fingerprint differs from the snapshot's. */
  mismatched: TableComparison[];
}

/** Compares `database` with the recorded tables; throws VerificationError (exit 7) naming every table that differs. */
export async function verifyDatabase(
  connection: PostgresConnection,
  tools: PostgresTools,
  database: string,
  tables: readonly RecordedTable[],
  onMismatch: { snapshot: string; hint: string },
): Promise<DatabaseVerification> {
  const comparisons = await compareTables(connection, tools, database, tables);
  const mismatched = comparisons.filter((comparison) => !comparison.matches);
  if (mismatched.length > 0) {
    const list = mismatched
      .map(
        (table) =>
          `${table.schema}.${table.name} (${table.expectedRows} rows backed up, ${table.actualRows} found${table.expectedRows === table.actualRows ? ', contents differ' : ''})`,
      )
      .join(', ');
    throw new VerificationError(
      `${database} differs from snapshot ${onMismatch.snapshot.slice(0, 8)} in ${mismatched.length} table(s): ${list}`,
      {
        hint: onMismatch.hint,
      },
    );
  }
  return {
    tables: comparisons.length,
    rows: comparisons.reduce((sum, comparison) => sum + comparison.actualRows, 0),
    mismatched,
  };
}

/**
 * Reads every recorded table back from a restored database, COPY text in a session set up as
 * pg_dump's, and fingerprints it the way the backup did (fingerprint.ts), one row at a time.
 */
export async function compareTables(
  connection: PostgresConnection,
  tools: PostgresTools,
  database: string,
  tables: readonly RecordedTable[],
): Promise<TableComparison[]> {
  const encoding = (await psql(connection, tools.binDir, databaseEncoding(database))).trim();
  const env = { ...connection.env, PGDATABASE: database, PGTZ: 'UTC', PGCLIENTENCODING: encoding };
  const comparisons: TableComparison[] = [];
  for (const table of tables) {
    const fingerprint = await fingerprintTable(env, tools, table.copyStatement);
    comparisons.push({
      schema: table.schema,
      name: table.name,
      expectedRows: table.rows,
      actualRows: fingerprint.rows,
      matches: fingerprint.rows === table.rows && fingerprint.digest() === table.hash,
    });
  }
  return comparisons;
}

async function fingerprintTable(
  env: Record<string, string>,
  tools: PostgresTools,
  copyStatement: string,
): Promise<TableFingerprint> {
  const args = ['-X', '-q', '-v', 'ON_ERROR_STOP=1'];
  for (const sql of [...sessionLikePgDump(), copyOutStatement(copyStatement)]) args.push('-c', sql);
  const child = spawn(path.join(tools.binDir, 'psql'), args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
  const fingerprint = new TableFingerprint();
  let partial: Buffer[] = [];
  for await (const piece of child.stdout as AsyncIterable<Buffer>) {
    let start = 0;
    for (let newline = piece.indexOf(0x0a); newline >= 0; newline = piece.indexOf(0x0a, start)) {
      const line = piece.subarray(start, newline);
      fingerprint.addRow(partial.length ? Buffer.concat([...partial, line]) : line);
      partial = [];
      start = newline + 1;
    }
    if (start < piece.length) partial.push(Buffer.from(piece.subarray(start)));
  }
  const code = await new Promise<number | null>((resolve) =>
    child.exitCode !== null ? resolve(child.exitCode) : child.once('close', resolve),
  );
  if (code !== 0 || partial.length > 0) {
    throw new SourceError(
      `cannot read back ${copyStatement
        .split('(')[0]
        ?.replace(/^COPY /, '')
        .trim()}: ${firstError(stderr, 'psql') ?? `psql exit ${code}`}`,
    );
  }
  return fingerprint;
}
