import {
  ConflictingOptionsError,
  DatabaseChoiceError,
  MissingToolError,
  NoRepositoryError,
  PasswordInUrlError,
  ReplaceNotConfirmedError,
  SnapshotFilterMismatchError,
  SnapshotKindError,
  SourceSnapshotNotFoundError,
  TargetExistsError,
  TargetNotEmptyError,
  UnreadableFileError,
  WrongPasswordError,
  type StrongboxError,
} from '../errors.ts';
import { ArchivingNotConfiguredError, FilesUnreadableError } from '../postgres/physical/physical.ts';
import { TablespaceInUseError } from '../postgres/pitr/restore-physical.ts';
import type { SnapshotFilter } from '../repository/repository.ts';

/**
 * The hint printed under an error. The library's errors say what is wrong and what would resolve
 * it, in its own terms; here that becomes this command line's flags and environment variables.
 * Any other error keeps the library's hint.
 */
export function hintFor(error: StrongboxError): string | undefined {
  if (error instanceof SnapshotKindError) return restoreHint(error);
  if (error instanceof PasswordInUrlError) return DATABASE_PASSWORD_HINT;
  if (error instanceof WrongPasswordError)
    return 'Check STRONGBOX_PASSWORD, --password-file or --password-command.';
  if (error instanceof NoRepositoryError)
    return 'Check --repo / STRONGBOX_REPO, or create one with `strongbox init`.';
  if (error instanceof DatabaseChoiceError) {
    return error.named === undefined
      ? 'Choose one with --name DATABASE.'
      : 'Choose one of them with --name DATABASE.';
  }
  if (error instanceof SnapshotFilterMismatchError) {
    const flags = error.filters.map((filter) => FILTER_FLAGS[filter]);
    return `Leave out ${listed(flags)} when naming this snapshot by id.`;
  }
  if (error instanceof TargetExistsError) {
    if (error.resolution === 'another-name')
      return 'A drill restores into a database of its own: name one that does not exist in --to.';
    return error.resolution === 'replace'
      ? 'Restore into a new database, or pass --replace to swap it for the restored one.'
      : 'Drop it, or restore it alone with --name and --replace.';
  }
  if (error instanceof ReplaceNotConfirmedError) return 'Type the database name when asked, or pass --yes.';
  if (error instanceof ConflictingOptionsError)
    return `Leave out ${error.options.map(flagOf).join(', or ')}.`;
  if (error instanceof TargetNotEmptyError)
    return orElse(error.hint, 'pass --overwrite to replace what is there');
  if (error instanceof MissingToolError) return orElse(error.hint, 'point --pg-bin at them');
  if (error instanceof ArchivingNotConfiguredError)
    return "Archive its WAL (archive_mode = on, archive_command = 'strongbox wal push %p'), or pass --include-wal.";
  if (error instanceof FilesUnreadableError)
    return "Run it on the database host as the server's user, with a role that may run pg_backup_start (docs/CLI.md), or pass --method pg_basebackup.";
  if (error instanceof TablespaceInUseError)
    return `Restore it elsewhere with --tablespace ${error.oid}=DIR (an empty directory); to overwrite ${error.location} deliberately, name it there with --tablespace ${error.oid}=${error.location} and --force.`;
  if (error instanceof UnreadableFileError) return orElse(error.hint, 'leave it out with --exclude');
  if (error instanceof SourceSnapshotNotFoundError) {
    return error.reference === 'latest'
      ? 'Check the filters, or list them with `strongbox snapshots --repo SOURCE`.'
      : 'List them with `strongbox snapshots --repo SOURCE` (the filters given apply too).';
  }
  return error.hint;
}

const DATABASE_PASSWORD_HINT =
  'Leave it out of the URL, and give it with --db-password-file FILE (or STRONGBOX_DB_PASSWORD_FILE), ' +
  'PGPASSWORD or DB_PASSWORD in the environment, or a ~/.pgpass file (PGPASSFILE).';

/** The options of commands that narrow which snapshots they see (commands/filters.ts, restore --at). */
const FILTER_FLAGS: Record<keyof SnapshotFilter, string> = {
  kind: '--kind',
  name: '--name',
  host: '--host',
  tags: '--tag/--env',
  before: '--at',
};

/** The flag of a library option: its name in kebab case (singleTransaction: --single-transaction). */
function flagOf(option: string): string {
  return `--${option.replace(/[A-Z]/g, (letter) => `-${letter.toLowerCase()}`)}`;
}

/** "a", "a and b", "a, b and c". */
function listed(items: readonly string[]): string {
  return items.length < 2 ? (items[0] ?? '') : `${items.slice(0, -1).join(', ')} and ${items.at(-1)}`;
}

/** The library's advice (one sentence, no flags), then what this command line offers besides. */
function orElse(advice: string | undefined, alternative: string): string | undefined {
  return advice === undefined ? undefined : `${advice.replace(/\.$/, '')}, or ${alternative}.`;
}

/** For a snapshot given to a command that does not take its kind: the command that does. */
function restoreHint({ kind, snapshot }: SnapshotKindError): string | undefined {
  const id = snapshot.slice(0, 8);
  switch (kind) {
    case 'postgres':
      return `Restore it with: strongbox restore ${id} --to postgres://…/DATABASE (or write its archive: strongbox dump ${id} > FILE).`;
    case 'postgres-cluster':
      return `Restore it with: strongbox restore --all ${id}, or one of its databases: strongbox restore ${id} --name DATABASE --to postgres://…/DATABASE.`;
    case 'files':
      return `Restore it with: strongbox restore files ${id} --target DIR.`;
    case 'stdin':
      return `Restore it with: strongbox cat ${id} > FILE, or strongbox restore files ${id} --target DIR.`;
    default:
      return undefined;
  }
}
