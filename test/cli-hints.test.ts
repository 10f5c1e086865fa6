import { describe, expect, it } from 'vitest';
import { hintFor } from '../src/cli/hints.ts';
import {
  ConflictingOptionsError,
  DatabaseChoiceError,
  MissingToolError,
  NoRepositoryError,
  ReplaceNotConfirmedError,
  SnapshotFilterMismatchError,
  SourceSnapshotNotFoundError,
  TargetExistsError,
  TargetNotEmptyError,
  UnreadableFileError,
  WrongPasswordError,
  type StrongboxError,
} from '../src/errors.ts';

const ID = 'ab'.repeat(32);

/** Each library error that says what would resolve it, and the hint the command line words from it. */
const cases: [StrongboxError, string][] = [
  [
    new WrongPasswordError('/srv/repo', []),
    'Check STRONGBOX_PASSWORD, --password-file or --password-command.',
  ],
  [new NoRepositoryError('/srv/repo'), 'Check --repo / STRONGBOX_REPO, or create one with `strongbox init`.'],
  [new DatabaseChoiceError('several', ['app', 'shop']), 'Choose one with --name DATABASE.'],
  [
    new DatabaseChoiceError('none such', ['app', 'shop'], 'nosuch'),
    'Choose one of them with --name DATABASE.',
  ],
  [
    new SnapshotFilterMismatchError('not selected', ID, ['name']),
    'Leave out --name when naming this snapshot by id.',
  ],
  [
    new SnapshotFilterMismatchError('not selected', ID, ['host', 'tags', 'before']),
    'Leave out --host, --tag/--env and --at when naming this snapshot by id.',
  ],
  [
    new TargetExistsError('app', 'localhost:5432', 'replace'),
    'Restore into a new database, or pass --replace to swap it for the restored one.',
  ],
  [
    new TargetExistsError('app', 'localhost:5432', 'replace-alone'),
    'Drop it, or restore it alone with --name and --replace.',
  ],
  [new ReplaceNotConfirmedError('app'), 'Type the database name when asked, or pass --yes.'],
  [
    new ConflictingOptionsError('conflict', ['jobs', 'singleTransaction']),
    'Leave out --jobs, or --single-transaction.',
  ],
  [
    new TargetNotEmptyError('/tmp/out'),
    'Choose an empty directory, or pass --overwrite to replace what is there.',
  ],
  [
    new MissingToolError('pg_dump was not found', 'pg_dump'),
    'Install the PostgreSQL client programs (Debian: postgresql-client), or point --pg-bin at them.',
  ],
  [
    new MissingToolError('pg_dump 17 or later is needed', 'pg_dump', 17),
    'Install the PostgreSQL 17 client programs (Debian: postgresql-client-17), or point --pg-bin at them.',
  ],
  [
    new UnreadableFileError('/etc/shadow', 'EACCES', new Error('EACCES')),
    'Run the backup as a user that can read it, or leave it out with --exclude.',
  ],
  [
    new UnreadableFileError('/data/file', 'EIO', new Error('EIO')),
    'Check the disk and filesystem, or leave it out with --exclude.',
  ],
  [
    new SourceSnapshotNotFoundError('latest', '/srv/source'),
    'Check the filters, or list them with `strongbox snapshots --repo SOURCE`.',
  ],
  [
    new SourceSnapshotNotFoundError('deadbeef', '/srv/source'),
    'List them with `strongbox snapshots --repo SOURCE` (the filters given apply too).',
  ],
];

describe('hints', () => {
  it.each(cases)('words %s with the command line’s flags', (error, hint) => {
    expect(hintFor(error)).toBe(hint);
  });

  it.each(cases)('leaves flags and environment variables out of the library’s own hint for %s', (error) => {
    expect(error.hint ?? '').not.toMatch(/--[a-z]|STRONGBOX_/);
  });
});
