import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { toolEnvironment } from '../tools.ts';

const run = promisify(execFile);

export interface AmcheckReport {
  databases: string[];
  /** pg_amcheck's report of corruption, one line each; empty when every database is sound. */
  problems: string[];
  /** pg_amcheck could not run (its error), as opposed to finding corruption. */
  error?: string;
}

/**
 * pg_amcheck on every database of a restored server, tables with every index entry checked
 * (heapallindexed). amcheck is installed where it is missing and dropped again from there, so the
 * databases are left as restored.
 */
export async function amcheckAll(server: {
  binDir: string;
  socketDirectory: string;
  port: number;
  user: string;
}): Promise<AmcheckReport> {
  const connection = ['-h', server.socketDirectory, '-p', String(server.port), '-U', server.user];
  const env = toolEnvironment({ PGCONNECT_TIMEOUT: '10' });
  const psql = async (database: string, sql: string) =>
    (
      await run(
        path.join(server.binDir, 'psql'),
        ['-X', '-w', '-A', '-t', ...connection, '-d', database, '-c', sql],
        {
          env,
        },
      )
    ).stdout
      .split('\n')
      .filter(Boolean);
  const databases = await psql('postgres', 'select datname from pg_database where datallowconn order by 1');
  const lacking: string[] = [];
  for (const database of databases)
    if ((await psql(database, `select count(*) from pg_extension where extname = 'amcheck'`))[0] === '0')
      lacking.push(database);
  try {
    await run(
      path.join(server.binDir, 'pg_amcheck'),
      ['-w', ...connection, '--all', '--heapallindexed', '--install-missing'],
      { env, maxBuffer: 64 * 1024 * 1024 },
    );
    return { databases, problems: [] };
  } catch (cause) {
    const output = `${(cause as { stdout?: string }).stdout ?? ''}${(cause as { stderr?: string }).stderr ?? ''}`;
    const lines = output.split('\n').filter(Boolean);
    // pg_amcheck exits 2 when it found corruption, 1 when it could not run.
    if ((cause as { code?: number }).code === 2) return { databases, problems: lines.slice(0, 1000) };
    return { databases, problems: [], error: lines.at(-1) ?? (cause as Error).message };
  } finally {
    for (const database of lacking)
      await psql(database, 'drop extension if exists amcheck').catch(() => undefined);
  }
}
