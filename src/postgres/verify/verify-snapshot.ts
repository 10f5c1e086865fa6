import type { Repository, SnapshotFilter } from '../../repository/repository.ts';
import { resolveConnection } from '../connection.ts';
import { checksFor } from './checks.ts';
import { findTools } from '../tools.ts';
import { verifyDatabase, type DatabaseVerification } from './verify.ts';
import { findDatabaseSnapshot } from '../database-snapshot.ts';

export interface PostgresVerifyOptions {
  /** The database to check: postgres://…/database; else the PG* and DB_* environment variables. */
  to?: string;
  /** The database password, given to the PostgreSQL programs as PGPASSWORD, never as an argument. */
  password?: string;
  pgBin?: string;
  filter?: SnapshotFilter;
}

export interface PostgresVerifyResult {
  snapshot: string;
  /** The database of the snapshot compared with: its name, or one of a cluster snapshot's. */
  database: string;
  target: string;
  verification: DatabaseVerification;
}

/**
 * Compares a database with the fingerprints a PostgreSQL snapshot recorded: every table's row
 * count and content hash. Any difference is a VerificationError (exit 7) naming the tables.
 */
export async function verifyPostgres(
  repository: Repository,
  reference: string,
  options: PostgresVerifyOptions = {},
): Promise<PostgresVerifyResult> {
  return repository.withReadLock('verify postgres', async () => {
    const connection = resolveConnection(options.to, process.env, options.password);
    const {
      snapshot,
      database,
      details: recorded,
    } = await findDatabaseSnapshot(repository, reference, options.filter, connection.database);
    const tools = await findTools(connection, options.pgBin);
    const expected = {
      tables: recorded?.tables ?? [],
      catalog: recorded?.catalog,
      expect: { sequences: true, objects: true },
      checks: checksFor(recorded, {
        schema: true,
        largeObjects: true,
        database: true,
        owners: true,
        materializedViewRows: true,
      }),
    };
    const verification = await verifyDatabase(connection, tools, connection.database, expected, {
      snapshot: snapshot.id,
      hint: 'Restore the database again from the snapshot, or find out what changed it.',
    });
    return { snapshot: snapshot.id, database, target: connection.display, verification };
  });
}
