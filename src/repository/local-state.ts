import { createHash, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { ConfigError, ConfigRollbackError } from '../errors.ts';

/**
 * What this client remembers about each repository it opens (docs/FORMAT.md, "Local state"):
 * the newest config it has trusted, so that storage rolled back to an older config (one a
 * rotation retired) is refused, and the snapshots it has seen, so that deleting one from the
 * storage does not go unnoticed. One JSON file per repository location (a mirror of a repository,
 * which has its id, is another location and may rightly lag behind), mode 0600.
 */
export interface LocalStateFile {
  version: 1;
  repository: string;
  location: string;
  epoch: number;
  /** SHA-256 of the config bytes trusted at `epoch`. */
  config: string;
  /** Snapshots seen, by id, with what filters select them by. */
  snapshots: Record<string, SeenSnapshot>;
}

/** What the state keeps of a snapshot's header: enough to tell whether a filter would select it. */
export interface SeenSnapshot {
  time: string;
  host: string;
  kind: string;
  name: string;
  tags: string[];
}

const STATE_SCHEMA = z.strictObject({
  version: z.literal(1),
  repository: z.string().regex(/^[0-9a-f]{64}$/),
  location: z.string().max(4096),
  epoch: z.number().int().min(0),
  config: z.string().regex(/^[0-9a-f]{64}$/),
  snapshots: z.record(
    z.string().regex(/^[0-9a-f]{64}$/),
    z.strictObject({
      time: z.string().max(64),
      host: z.string().max(1024),
      kind: z.string().max(64),
      name: z.string().max(4096),
      tags: z.array(z.string().max(1024)).max(1024),
    }),
  ),
});

export { defaultStateDirectory } from '../util/state-directory.ts';

export class LocalState {
  private removed = new Set<string>();
  private dirty = false;

  private constructor(
    readonly file: string,
    private state: LocalStateFile,
    /** Told once when the file cannot be read or written: the run goes on without detection. */
    private readonly onWarning: (message: string) => void,
    private disabled = false,
  ) {}

  static async load(
    directory: string,
    repository: string,
    location: string,
    onWarning: (message: string) => void,
  ): Promise<LocalState> {
    const file = path.join(directory, `${repository}.${sha256(Buffer.from(location)).slice(0, 16)}.json`);
    const empty = emptyState(repository, location);
    try {
      return new LocalState(file, (await readState(file, repository)) ?? empty, onWarning);
    } catch (error) {
      if (!isFileSystemError(error)) throw error;
      onWarning(unavailable(file, error));
      return new LocalState(file, empty, onWarning, true);
    }
  }

  /** Refuses a config older than the newest trusted, or another config at the same epoch. */
  checkConfig(epoch: number, configBytes: Uint8Array): void {
    const hash = sha256(configBytes);
    const trusted = this.state;
    if (epoch < trusted.epoch || (epoch === trusted.epoch && hash !== trusted.config))
      throw new ConfigRollbackError(trusted.epoch, epoch, this.file);
    if (epoch > trusted.epoch) {
      this.state = { ...trusted, epoch, config: hash };
      this.dirty = true;
    }
  }

  /** Remembers snapshots seen in a listing or just written. */
  see(snapshots: Iterable<{ id: string; header: SeenSnapshot }>): void {
    for (const { id, header } of snapshots) {
      if (this.state.snapshots[id] === undefined) {
        const { time, host, kind, name, tags } = header;
        this.state.snapshots[id] = { time, host, kind, name, tags };
        this.dirty = true;
      }
    }
  }

  /** Forgets snapshots a full key removed (forget), so they are not reported as disappeared. */
  forgetSnapshots(ids: Iterable<string>): void {
    for (const id of ids) {
      this.removed.add(id);
      if (id in this.state.snapshots) {
        delete this.state.snapshots[id];
        this.dirty = true;
      }
    }
  }

  /** Snapshots seen before that `present` no longer holds, oldest first. */
  disappeared(present: ReadonlySet<string>): { id: string; header: SeenSnapshot }[] {
    return Object.entries(this.state.snapshots)
      .filter(([id]) => !present.has(id))
      .map(([id, header]) => ({ id, header }))
      .sort((a, b) => a.header.time.localeCompare(b.header.time) || a.id.localeCompare(b.id));
  }

  /**
   * Writes what changed, merged with what another process of this client may have written
   * meanwhile: the newer config wins, snapshots seen by either are kept.
   */
  async save(): Promise<void> {
    if (!this.dirty || this.disabled) return;
    try {
      await this.write();
    } catch (error) {
      if (!isFileSystemError(error)) throw error;
      this.disabled = true;
      this.onWarning(unavailable(this.file, error));
    }
  }

  private async write(): Promise<void> {
    const onDisk = await readState(this.file, this.state.repository);
    const merged: LocalStateFile = { ...this.state, snapshots: { ...this.state.snapshots } };
    if (onDisk) {
      if (onDisk.epoch > merged.epoch) Object.assign(merged, { epoch: onDisk.epoch, config: onDisk.config });
      for (const [id, seen] of Object.entries(onDisk.snapshots))
        if (!this.removed.has(id)) merged.snapshots[id] ??= seen;
    }
    await fs.mkdir(path.dirname(this.file), { recursive: true, mode: 0o700 });
    const temporary = `${this.file}.tmp-${randomBytes(6).toString('hex')}`;
    await fs.writeFile(temporary, JSON.stringify(merged) + '\n', { mode: 0o600 });
    await fs.rename(temporary, this.file);
    this.state = merged;
    this.dirty = false;
  }
}

function emptyState(repository: string, location: string): LocalStateFile {
  return {
    version: 1,
    repository,
    location,
    epoch: 0,
    config: '0'.repeat(64),
    snapshots: Object.create(null),
  };
}

/** The state file, or undefined when there is none; a damaged one is an error, not a fresh start. */
async function readState(file: string, repository: string): Promise<LocalStateFile | undefined> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw error;
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    value = undefined;
  }
  const parsed = STATE_SCHEMA.safeParse(value);
  if (!parsed.success || parsed.data.repository !== repository)
    throw new ConfigError(`the local state file ${file} is damaged`, {
      hint: 'Remove it to start afresh (this client then forgets which config and snapshots it trusted).',
    });
  return { ...parsed.data, snapshots: Object.assign(Object.create(null), parsed.data.snapshots) };
}

function isFileSystemError(error: unknown): error is NodeJS.ErrnoException {
  return error instanceof Error && typeof (error as NodeJS.ErrnoException).code === 'string';
}

function unavailable(file: string, error: NodeJS.ErrnoException): string {
  return `cannot keep the local state ${file} (${error.code}): a rolled-back config or deleted snapshots go unnoticed in this run`;
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
