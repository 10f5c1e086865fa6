import {
  DatabaseMismatchError,
  verificationRows,
  type DatabaseVerification,
} from '../postgres/verify/verify.ts';
import type { Output } from './output.ts';

/**
 * The short table printed after a restore or a verify: what was compared with the backup's
 * fingerprints and whether it matched, with a line for each difference.
 *
 *   compared with the backup:
 *     tables     6 (12853334 rows)  all match
 *     sequences  4                  all match
 *     objects    3 schemas          1 differs
 *       schema shop: indexes: 3 backed up, 2 found
 */
export function verificationTable(
  verification: DatabaseVerification,
  title = 'compared with the backup',
): string {
  const rows = verificationRows(verification);
  if (rows.length === 0) return `${title}: nothing to compare`;
  const countWidth = Math.max(...rows.map((row) => row.compared.length));
  const lines = [`${title}:`];
  for (const { what, compared, differences, notes } of rows) {
    const verdict =
      differences.length === 0
        ? 'all match'
        : `${differences.length} ${differences.length === 1 ? 'differs' : 'differ'}`;
    lines.push(`  ${what.padEnd(WHAT_WIDTH)} ${compared.padEnd(countWidth)}  ${verdict}`);
    for (const difference of differences.slice(0, SHOWN_DIFFERENCES)) lines.push(`    ${difference}`);
    if (differences.length > SHOWN_DIFFERENCES)
      lines.push(`    … and ${differences.length - SHOWN_DIFFERENCES} more`);
    for (const note of notes) lines.push(`    note: ${note}`);
  }
  return lines.join('\n');
}

/** "large objects", the longest line name. */
const WHAT_WIDTH = 13;

/** Differences listed under each row; the error message and --json name them all. */
const SHOWN_DIFFERENCES = 10;

/**
 * `work`, printing the table of a database found to differ from its snapshot before the error
 * (exit 7) goes up: the message names every difference, the table shows what matched too.
 */
export async function showingMismatch<T>(
  output: Output,
  work: Promise<T>,
  title: (database: string) => string = () => 'compared with the backup',
): Promise<T> {
  try {
    return await work;
  } catch (error) {
    if (error instanceof DatabaseMismatchError)
      output.info(verificationTable(error.verification, title(error.database)));
    throw error;
  }
}
