/**
 * strongbox as a library: the same operations the CLI runs, with typed results and typed errors.
 *
 *   const repository = await openRepository({ repo: '/var/backups/strongbox', passphrase });
 *   const result = await backup(repository, filesSource(['/etc/myapp']), { tags: ['env=production'] });
 */
import { Repository, type OpenOptions } from './repository/repository.ts';
import type { RepositoryOptions } from './repository/config.ts';
import { closingOnFailure, openBackend } from './storage/open.ts';
import { openRepositoryAt, type RepositoryKey } from './repository/open.ts';

export interface RepositoryLocation {
  /** A local path or file:// URL. */
  repo: string;
}

export async function openRepository(
  options: RepositoryLocation & RepositoryKey & OpenOptions,
): Promise<Repository> {
  return openRepositoryAt(options.repo, options, options);
}

export async function initRepository(
  options: RepositoryLocation & { passphrase: string } & RepositoryOptions & OpenOptions,
): Promise<Repository> {
  const backend = await openBackend(options.repo);
  return closingOnFailure(backend, () => Repository.init(backend, options.passphrase, options, options));
}

export {
  Repository,
  type KeySource,
  type OpenOptions,
  type SnapshotFilter,
  type KeyListing,
  type DamagedSnapshot,
  type SnapshotListing,
} from './repository/repository.ts';
export type { RepositoryOptions, RepositoryConfig } from './repository/config.ts';
export type { KeyKind, KeyMaterial } from './repository/keys.ts';
export { openRepositoryAt, readIdentityFile, type RepositoryKey } from './repository/open.ts';
export type { SnapshotHeader, SnapshotBody, SnapshotInfo } from './repository/snapshot.ts';
export type { Tree, TreeNode } from './repository/tree.ts';
export type {
  AuditEntry,
  AuditLogEntry,
  AuditLogQuery,
  AuditRecord,
  AuditResult,
} from './repository/audit-log.ts';
export type {
  CheckResultRecord,
  DrillResult as DrillResultRecord,
  ResultKind,
  ResultKinds,
  ResultListing,
  TrustedResult,
} from './repository/result-records.ts';
export type { Stored } from './repository/appended-records.ts';
export { backup, type BackupOptions, type BackupResult, type BackupProgress } from './ops/backup.ts';
export { restoreSnapshotFiles as restore, type RestoreFilesOptions } from './ops/restore.ts';
export {
  restorePostgres,
  type PostgresRestoreOptions,
  type PostgresRestoreResult,
} from './postgres/restore/restore-database.ts';
export {
  cleanupRestores,
  type RestoreCleanupOptions,
  type RestoreCleanupResult,
} from './postgres/restore/cleanup.ts';
export type { RestoreLeftover } from './postgres/restore/leftovers.ts';
export {
  restorePostgresCluster,
  type ClusterRestoreOptions,
  type ClusterRestoreResult,
} from './postgres/restore/restore-cluster.ts';
export {
  verifyPostgres,
  type PostgresVerifyOptions,
  type PostgresVerifyResult,
} from './postgres/verify/verify-snapshot.ts';
export {
  DatabaseMismatchError,
  type DatabaseVerification,
  type TableComparison,
} from './postgres/verify/verify.ts';
export {
  drill,
  drillError,
  DrillFailedError,
  DrillObjectiveError,
  type DrillOptions,
  type DrillRecord,
  type DrillResult,
} from './postgres/drill.ts';
export { drillReportMarkdown } from './postgres/drill-report.ts';
export { catFile } from './ops/read-content.ts';
export { findDatabaseSnapshot, type DatabaseSnapshot } from './postgres/database-snapshot.ts';
export {
  check,
  type CheckOptions,
  type CheckResult,
  type CheckProblem,
  type CheckName,
  type PackProblemCause,
  type UnindexedPack,
  type UnindexedPackCause,
} from './ops/check.ts';
export { unlock } from './ops/unlock.ts';
export {
  repairIndex,
  type RepairIndexOptions,
  type RepairIndexProgress,
  type RepairIndexResult,
} from './ops/repair-index.ts';
export {
  copySnapshots,
  type CopyOptions,
  type CopyResult,
  type CopiedSnapshot,
  type CopyProgress,
  type WalCopyProblem,
} from './ops/copy.ts';
export { filesSource } from './sources/files.ts';
export { stdinSource, commandSource, streamSource } from './sources/stdin.ts';
export { postgresSource, type PostgresBackupOptions } from './postgres/index.ts';
export {
  CHUNK_BOUNDARY,
  type BackupSource,
  type ContentSink,
  type ContentPiece,
  type SourceResult,
} from './sources/source.ts';
export type { StorageBackend, ObjectInfo } from './storage/backend.ts';
export { LocalBackend } from './storage/local.ts';
export { openBackend } from './storage/open.ts';
export { Chunker, gearTable, type ChunkerParams } from './chunking/fastcdc.ts';
export * from './errors.ts';
export {
  applyPolicy,
  describePolicy,
  groupSnapshots,
  isEmptyPolicy,
  parseRetentionDuration,
  UNLIMITED,
  type Decision,
  type GroupKey,
  type PolicySnapshot,
  type RetentionDuration,
  type RetentionPolicy,
} from './retention/policy.ts';
export {
  loadConfigFile,
  namedPolicy,
  type NamedPolicy,
  type StrongboxConfig,
} from './config-file/config-file.ts';
