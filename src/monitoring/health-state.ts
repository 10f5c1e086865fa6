import { createHash } from 'node:crypto';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { defaultStateDirectory } from '../repository/local-state.ts';
import { writeFileAtomically } from '../util/atomic-file.ts';
import { HEALTH_STATUSES, type HealthStatus } from './health.ts';

/**
 * What the last `strongbox health` of a repository found, remembered on this machine so that the
 * next one knows whether the state changed (the health-changed notification). One file per
 * repository location under the local state directory (local-state.ts), mode 0600.
 */
export interface RememberedHealth {
  status: HealthStatus;
  /** When it was found (ISO time). */
  time: string;
  /** Its problems, one line each, as the notification named them. */
  problems: string[];
}

const SCHEMA = z.strictObject({
  version: z.literal(1),
  location: z.string().max(4096),
  status: z.enum(HEALTH_STATUSES),
  time: z.iso.datetime({ offset: true }),
  problems: z.array(z.string().max(4096)).max(1000),
});

/** A file larger than any this module writes is not read. */
const MAX_BYTES = 4 << 20;

function fileOf(location: string, directory: string): string {
  const digest = createHash('sha256').update(location).digest('hex').slice(0, 32);
  return path.join(directory, 'health', `${digest}.json`);
}

/** The last health state of `location`; none when none was remembered or the file is unreadable. */
export async function recallHealth(
  location: string,
  directory = defaultStateDirectory(),
): Promise<RememberedHealth | undefined> {
  let text: string;
  try {
    text = await readFile(fileOf(location, directory), 'utf8');
  } catch {
    return undefined;
  }
  if (text.length > MAX_BYTES) return undefined;
  let parsed: z.output<typeof SCHEMA>;
  try {
    parsed = SCHEMA.parse(JSON.parse(text));
  } catch {
    // A damaged memory is a forgotten one: the next change is announced as from nothing known.
    return undefined;
  }
  if (parsed.location !== location) return undefined;
  const { status, time, problems } = parsed;
  return { status, time, problems };
}

export async function rememberHealth(
  location: string,
  health: RememberedHealth,
  directory = defaultStateDirectory(),
): Promise<void> {
  const file = fileOf(location, directory);
  await mkdir(path.dirname(file), { recursive: true, mode: 0o700 });
  await writeFileAtomically(file, `${JSON.stringify({ version: 1, location, ...health })}\n`, 0o600);
}
