import { largeObjectsCheck } from '../logical/large-objects.ts';
import { databaseChecker } from '../database-properties.ts';
import type { PostgresSnapshotDetails } from '../logical/logical.ts';
import { schemaCheck } from '../logical/schema-fingerprint.ts';
import type { Checker } from './verify.ts';

/** Which of a backup's records a restore with its options is expected to reproduce, beyond rows. */
export interface CheckExpectations {
  /** Every schema object's definition: not after --data-only, nor a --table restore. */
  schema: boolean;
  /** Large objects' bytes, owners, ACLs, comments: not after --schema-only, nor a --table restore. */
  largeObjects: boolean;
  /** The database's own properties (owner, ACL, comment, settings…). */
  database: boolean;
  /** Owners (and the grantors in ACLs) as backed up: not after --no-owner. */
  owners: boolean;
  /** Materialized views populated, with the rows they had: not after --schema-only. */
  materializedViewRows: boolean;
}

/** The comparisons, beyond rows, sequences and object counts, that a backup's records allow. */
export function checksFor(
  recorded: PostgresSnapshotDetails | undefined,
  expect: CheckExpectations,
): Checker[] {
  const checks: Checker[] = [];
  if (!recorded) return checks;
  if (expect.schema && recorded.schema)
    checks.push(
      schemaCheck(recorded.schema, {
        owners: expect.owners,
        // A schema-only dump restores materialized views unpopulated.
        viewRows: expect.materializedViewRows && recorded.schema.data,
      }),
    );
  if (expect.largeObjects && recorded.largeObjects)
    checks.push(largeObjectsCheck(recorded.largeObjects, expect));
  if (expect.database && recorded.databaseProperties)
    checks.push(databaseChecker(recorded.databaseProperties, { owners: expect.owners }));
  return checks;
}
