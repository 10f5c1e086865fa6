import path from 'node:path';
import { pgBackRest } from './pgbackrest.ts';
import { strongboxPhysical } from './strongbox-physical.ts';
import { PGBACKREST, type PhysicalContender } from './physical.ts';
import { missingBaselines } from './tools.ts';

/**
 * The tools the physical section measures, those installed, each with a directory of its own
 * under `workDir`: strongbox (the built CLI `cli`) and pgBackRest, its baseline.
 */
export function physicalContenders(
  workDir: string,
  cli: string,
): {
  contenders: PhysicalContender[];
  missing: Record<string, string>;
} {
  const missing = missingBaselines(['pgbackrest']);
  const strongbox = strongboxPhysical(cli, path.join(workDir, 'strongbox'));
  if (missing) return { contenders: [strongbox], missing: { [PGBACKREST]: missing } };
  return { contenders: [strongbox, pgBackRest(path.join(workDir, 'pgbackrest'))], missing: {} };
}
