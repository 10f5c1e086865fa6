import { execFileSync } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import path from 'node:path';
import { PG_BIN } from './cluster.ts';
import { GNU_TIME } from './process.ts';

export const SETUP_HINT = 'run bench/setup.sh (as root)';

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function onPath(program: string): boolean {
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter(Boolean);
  return dirs.some((dir) => isExecutable(path.join(dir, program)));
}

/** BusyBox and BSD `time` lack -f and -o. */
function isGnuTime(): boolean {
  try {
    return execFileSync(GNU_TIME, ['--version'], { encoding: 'utf8', stdio: 'pipe' }).includes('GNU');
  } catch {
    return false;
  }
}

/** What the harness cannot measure without: the dataset's server and the memory probe. */
export function missingRequirements(): string[] {
  const serverPrograms = ['initdb', 'pg_ctl', 'psql', 'createdb', 'dropdb', 'pg_dump', 'pg_restore'].map(
    (name) => path.join(PG_BIN, name),
  );
  const missing = serverPrograms.filter((program) => !isExecutable(program));
  if (!isGnuTime()) missing.push(`GNU time at ${GNU_TIME}`);
  return missing;
}

/** The baseline programs among `programs` that are not installed, for the table to name. */
export function missingBaselines(programs: string[]): string | undefined {
  const missing = programs.filter((program) => !onPath(program));
  return missing.length > 0 ? `${missing.join(', ')} not installed: ${SETUP_HINT}` : undefined;
}
