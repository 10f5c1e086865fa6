import path from 'node:path';
import { pgBackRest } from './pgbackrest.ts';
import { PGBACKREST, type PhysicalContender } from './physical.ts';
import { missingBaselines } from './tools.ts';

/**
 * The tools the physical section measures, those installed, each with a directory of its own
 * under `workDir`. strongbox's physical backups and `wal push` join this list once they exist:
 * their figures then fill the strongbox column of the section's rows.
 */
export function physicalContenders(workDir: string): {
  contenders: PhysicalContender[];
  missing: Record<string, string>;
} {
  const missing = missingBaselines(['pgbackrest']);
  if (missing) return { contenders: [], missing: { [PGBACKREST]: missing } };
  return { contenders: [pgBackRest(path.join(workDir, 'pgbackrest'))], missing: {} };
}
