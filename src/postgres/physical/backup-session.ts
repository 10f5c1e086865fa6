import { constants, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { errnoCode, SourceError } from '../../errors.ts';
import type { PostgresConnection } from '../connection.ts';
import { PsqlSession } from '../session.ts';
import { CONTROL_FILE } from './data-directory.ts';

/**
 * The server side of a backup that reads the data directory itself: pg_backup_start and
 * pg_backup_stop in one session (a non-exclusive backup lives as long as its session: if
 * strongbox dies, the server ends the backup), and the proof that the files read here are the
 * server's own.
 */

/** What pg_backup_stop hands back: the files a restore needs, which are not in the directory. */
export interface BackupStop {
  stopLsn: string;
  backupLabel: string;
  tablespaceMap: string;
}

/** Why the data directory cannot be read here; absent when it can. */
export async function whyFilesUnreadable(facts: {
  systemIdentifier: string;
  serverVersion: number;
  dataDirectory: string | null;
  mayReadFiles: boolean;
  tablespaces: { location: string }[];
}): Promise<string | undefined> {
  if (facts.serverVersion < 150000) return 'the server is older than PostgreSQL 15 (pg_backup_start)';
  // Pages are checked as little-endian words, as they are written on such hosts.
  if (os.endianness() !== 'LE') return 'this host is big-endian';
  if (!facts.mayReadFiles)
    return 'the role may not run pg_backup_start, pg_backup_stop and pg_read_binary_file';
  if (facts.dataDirectory === null) return 'the role may not read data_directory (pg_read_all_settings)';
  // An in-place tablespace (a developer setting) lies inside pg_tblspc, where links are expected.
  if (facts.tablespaces.some((tablespace) => !path.isAbsolute(tablespace.location)))
    return 'a tablespace lies inside the data directory';
  const control = path.join(facts.dataDirectory, CONTROL_FILE);
  let bytes: Buffer;
  try {
    await fs.access(facts.dataDirectory, constants.R_OK | constants.X_OK);
    bytes = await fs.readFile(control);
  } catch (error) {
    return errnoCode(error) === 'ENOENT'
      ? `${facts.dataDirectory} is not on this host`
      : `${facts.dataDirectory} cannot be read here (${errnoCode(error) ?? (error as Error).message})`;
  }
  if (bytes.length < 8 || bytes.readBigUInt64LE(0).toString() !== facts.systemIdentifier)
    return `${facts.dataDirectory} on this host is another cluster's`;
  return undefined;
}

/** Comparisons of pg_control as the server reads it and as it is here, a checkpoint apart at most. */
const CONTROL_ATTEMPTS = 3;

export class BackupSession {
  private constructor(
    private readonly session: PsqlSession,
    readonly startLsn: string,
  ) {}

  /** Starts the backup with a fast checkpoint, and returns once it is done. */
  static async start(
    connection: PostgresConnection,
    binDir: string,
    cluster: string,
  ): Promise<BackupSession> {
    const session = new PsqlSession(connection, binDir);
    try {
      // Nothing may end the session while the files are read: the backup would end with it.
      await session.query(
        `set statement_timeout = 0; set idle_session_timeout = 0; set idle_in_transaction_session_timeout = 0`,
      );
      const startLsn = (await session.query(`select pg_backup_start('strongbox', true)`)).trim();
      if (!/^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/.test(startLsn))
        throw new SourceError(
          `pg_backup_start on ${cluster} answered ${JSON.stringify(startLsn.slice(0, 80))}`,
        );
      return new BackupSession(session, startLsn);
    } catch (error) {
      await session.close();
      throw error;
    }
  }

  /**
   * Whether the pg_control in `dataDirectory` is byte for byte the one the server reads: after
   * the backup's checkpoint wrote it, no other cluster's file (a standby's at the same path on
   * this host, a copy) is the same.
   */
  async readsSameControlFile(dataDirectory: string): Promise<boolean> {
    for (let attempt = 0; attempt < CONTROL_ATTEMPTS; attempt++) {
      const theirs = (
        await this.session.query(`select encode(pg_read_binary_file('${CONTROL_FILE}'), 'hex')`)
      ).trim();
      const ours = (await fs.readFile(path.join(dataDirectory, CONTROL_FILE))).toString('hex');
      if (theirs === ours) return true;
    }
    return false;
  }

  /** Ends the backup once the WAL it needs is archived (when the server archives). */
  async stop(cluster: string): Promise<BackupStop> {
    const answer = await this.session.query(
      `select json_build_object('stopLsn', lsn::text, 'backupLabel', labelfile, 'tablespaceMap', coalesce(spcmapfile, '')) from pg_backup_stop(true)`,
    );
    let stop: BackupStop;
    try {
      stop = JSON.parse(answer) as BackupStop;
    } catch {
      stop = {} as BackupStop;
    }
    if (
      typeof stop.stopLsn !== 'string' ||
      !/^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/.test(stop.stopLsn) ||
      typeof stop.backupLabel !== 'string' ||
      typeof stop.tablespaceMap !== 'string'
    )
      throw new SourceError(
        `pg_backup_stop on ${cluster} answered what strongbox does not understand; no snapshot was written`,
      );
    return stop;
  }

  /** Ends the session; a backup still running on the server ends with it. */
  close(): Promise<void> {
    return this.session.close();
  }
}
