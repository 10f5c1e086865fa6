import { promises as fs } from 'node:fs';
import path from 'node:path';
import { ConfigError } from '../../errors.ts';
import { parseWalFileName } from './segments.ts';

/**
 * A directory where the WAL daemon leaves an empty file named for each WAL file it pushed ahead
 * of PostgreSQL, once that file is durable in the repository. archive_command then answers from
 * the shell, `rm DIR/%f 2>/dev/null || strongbox wal push %p`: a file found there is archived,
 * and removing it is the whole call (a millisecond, where starting Node costs a hundred or more),
 * as pgBackRest's asynchronous archive-push answers from its spool directory. Anything else falls
 * through to `wal push`, which asks the daemon or pushes on its own. While a file is pushed ahead
 * it has a `<name>.pushing` beside its mark-to-be, and `daemon.pid` names the daemon:
 * `strongbox-wal-push` (bin/) waits for the mark then, instead of starting Node, whose CPU on a
 * busy machine would be taken from the push itself.
 *
 * Whoever can write here can make PostgreSQL drop WAL unarchived: the directory must be the
 * daemon's user's alone. It is emptied when the daemon starts, so only this run's marks count.
 */
/** Beside a file's mark-to-be while the daemon pushes it ahead. */
const PUSHING = '.pushing';
/** The daemon's process id, for the shell to tell whether a push it waits for can still end. */
const DAEMON_PID = 'daemon.pid';

export class WalAcknowledgements {
  private constructor(readonly directory: string) {}

  /** Creates the directory (0700) or takes an existing one of this user's, and empties it. */
  static async open(directory: string): Promise<WalAcknowledgements> {
    const resolved = path.resolve(directory);
    await fs.mkdir(resolved, { mode: 0o700 }).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST') throw error;
    });
    const stat = await fs.lstat(resolved);
    const problem = !stat.isDirectory()
      ? 'is not a directory'
      : process.getuid !== undefined && stat.uid !== process.getuid()
        ? `belongs to uid ${stat.uid}, not to the daemon's user`
        : (stat.mode & 0o022) !== 0
          ? 'may be written by other users'
          : undefined;
    if (problem)
      throw new ConfigError(`the acknowledgement directory ${resolved} ${problem}`, {
        hint: 'Anyone who can write there could make PostgreSQL drop WAL: name a directory only the daemon writes (mode 0700).',
      });
    for (const entry of await fs.readdir(resolved)) {
      const name = entry.endsWith(PUSHING) ? entry.slice(0, -PUSHING.length) : entry;
      if (parseWalFileName(name) !== undefined) await fs.rm(path.join(resolved, entry), { force: true });
    }
    // Who marks files here: archive_command's shell waits for a mark only while this process lives.
    await fs.writeFile(path.join(resolved, DAEMON_PID), `${process.pid}\n`, { mode: 0o600 });
    return new WalAcknowledgements(resolved);
  }

  /** Marks `name` as being pushed ahead: a shell asking for it may wait for its mark. */
  async pushing(name: string): Promise<void> {
    await fs.writeFile(this.pathOf(name) + PUSHING, '', { mode: 0o600 });
  }

  /** The push ahead of `name` ended without storing it: no mark is coming. */
  async abandon(name: string): Promise<void> {
    await fs.rm(this.pathOf(name) + PUSHING, { force: true });
  }

  /** Marks `name` durable. Called only once the repository holds it. */
  async record(name: string): Promise<void> {
    try {
      await fs.writeFile(this.pathOf(name), '', { mode: 0o600 });
    } finally {
      // After the mark: a shell that sees the push end finds the mark, or (if it could not be
      // written) goes on to `wal push`.
      await this.abandon(name);
    }
  }

  /** Removes the mark of a file PostgreSQL archived through `wal push` instead. */
  async forget(name: string): Promise<void> {
    await fs.rm(this.pathOf(name), { force: true });
  }

  private pathOf(name: string): string {
    // Names come from pg_wal/archive_status, filtered to WAL file names: no separator can reach here.
    if (parseWalFileName(name) === undefined) throw new Error(`not a WAL file name: ${name}`);
    return path.join(this.directory, name);
  }
}
