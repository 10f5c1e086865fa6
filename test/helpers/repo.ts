import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import {
  backup,
  catFile,
  initRepository,
  openRepository,
  stdinSource,
  type Repository,
} from '../../src/index.ts';
import type { RepositoryOptions } from '../../src/repository/config.ts';

export const PASSWORD = 'correct horse battery staple';

export interface TestRepo {
  dir: string;
  location: string;
  repository: Repository;
  reopen(passphrase?: string): Promise<Repository>;
  cleanup(): Promise<void>;
}

/** A fresh repository in a temp directory, opened with a full key. */
export async function createTestRepo(options: RepositoryOptions = {}): Promise<TestRepo> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'strongbox-repo-'));
  const location = path.join(dir, 'repo');
  const stateDirectory = path.join(dir, 'state');
  const repository = await initRepository({
    repo: location,
    passphrase: PASSWORD,
    stateDirectory,
    ...options,
  });
  return {
    dir,
    location,
    repository,
    reopen: (passphrase = PASSWORD) => openRepository({ repo: location, passphrase, stateDirectory }),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
}

/** Backs up `data` as a stdin snapshot named `name`. */
export function backupBuffer(repository: Repository, data: Buffer, name = 'data.bin', pieceSize = 64 * 1024) {
  const pieces = function* () {
    for (let at = 0; at < data.length; at += pieceSize) yield data.subarray(at, at + pieceSize);
  };
  return backup(repository, stdinSource(name, Readable.from(pieces())), { threads: 1 });
}

export async function readAll(repository: Repository, snapshot: string, file?: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const part of catFile(repository, snapshot, file)) parts.push(part);
  return Buffer.concat(parts);
}
