import { hostname } from 'node:os';
import { mirrorAuditRecords, type MirroredRecord } from '../audit/mirror.ts';
import type { StrongboxConfig } from '../config-file/config-file.ts';
import type { AuditEntry } from '../repository/audit-log.ts';
import type { Repository } from '../repository/repository.ts';
import { currentUsername } from '../util/host.ts';
import { onInterrupt } from '../util/interrupt.ts';
import { VERSION } from '../version.ts';
import { globalOptions, loadedConfig, outputFor } from './context.ts';
import { publicLocation, runningCommand, type CommandOutcome, type OutcomeSink } from './outcome.ts';
import type { Output } from './output.ts';
import { publicArguments } from './public-arguments.ts';

/**
 * The audit log's end of the command line (docs/ARCHITECTURE.md, "Audit log"). A command that
 * reads or changes a repository leaves each repository it opened open when its action ends; once
 * the command has ended, and so its result and exit code are known, `auditSink` appends the
 * record to each of them (signed by the key that opened it), mirrors it as the configuration
 * says, and closes them. A command interrupted by SIGINT or SIGTERM records that instead.
 */

/** Commands that only list: they leave no record (an hourly `health` would bury the rest). */
const NOT_AUDITED = new Set([
  'snapshots',
  'key list',
  'log',
  'metrics',
  'health',
  'generate alerts',
  'generate grafana',
  // PostgreSQL runs these once per WAL file, hundreds a minute; the daemon's run is recorded.
  'wal push',
  'wal fetch',
  'wal status',
]);

export function isAudited(operation: string): boolean {
  return !NOT_AUDITED.has(operation);
}

/** Repositories opened by the command running, kept open for its audit record. */
const opened = new Set<Repository>();
let interruptRegistered = false;

/** A repository the command opened: kept for the audit record if the command is audited. */
export function auditOpened(repository: Repository): void {
  const running = runningCommand();
  if (!running || !isAudited(running.operation)) return;
  opened.add(repository);
  if (!interruptRegistered) {
    interruptRegistered = true;
    onInterrupt(recordInterrupted);
  }
}

/** Where a command is done with a repository: closed now, unless its audit record is still to come. */
export async function releaseRepository(repository: Repository): Promise<void> {
  if (!opened.has(repository)) await repository.close();
}

/** The outcome sink of the audit log (outcome-sinks.ts). */
export const auditSink: OutcomeSink = async (outcome, { config, output }) => {
  if (!isAudited(outcome.operation)) return;
  await record(entryOf(outcome), outcome.subject.repository, config, output);
};

function entryOf(outcome: CommandOutcome): AuditEntry {
  return {
    started: outcome.started,
    finished: outcome.finished,
    host: hostname(),
    user: currentUsername(),
    operation: outcome.operation,
    arguments: outcome.arguments,
    result: outcome.result,
    exitCode: outcome.error?.exitCode ?? 0,
    ...(outcome.error ? { message: outcome.error.message } : {}),
    ...(outcome.snapshot ? { snapshot: outcome.snapshot } : {}),
    program: `strongbox ${VERSION}`,
  };
}

async function recordInterrupted(): Promise<void> {
  const running = runningCommand();
  if (!running) return;
  const options = globalOptions(running.command);
  const entry: AuditEntry = {
    started: running.started,
    finished: new Date(),
    host: hostname(),
    user: currentUsername(),
    operation: running.operation,
    arguments: publicArguments(running.command),
    result: 'interrupted',
    message: 'interrupted by a signal',
    ...(running.snapshot ? { snapshot: running.snapshot } : {}),
    program: `strongbox ${VERSION}`,
  };
  const location = publicLocation(options.repo ?? process.env.STRONGBOX_REPO);
  await record(entry, location, await loadedConfig(options), outputFor(options));
}

/**
 * Appends the record to every repository kept for it (not with --no-lock: a repository not to be
 * written), mirrors it, and closes them. A record that cannot be stored is a warning, never a
 * failure of the command; the mirrors then say so (`stored: null`).
 */
async function record(
  entry: AuditEntry,
  location: string | undefined,
  config: StrongboxConfig,
  output: Output,
): Promise<void> {
  const repositories = [...opened];
  opened.clear();
  const mirrored: MirroredRecord[] = [];
  try {
    for (const repository of repositories) {
      let stored: string | null = null;
      if (!repository.readLocking.skip) {
        try {
          stored = await repository.appendAudit(entry);
        } catch (error) {
          output.warn(
            `warning: the audit record was not stored in ${repository.backend.location}: ${error instanceof Error ? error.message : String(error)}`,
          );
        }
      }
      mirrored.push(
        mirrorRecord(entry, {
          repository: repository.backend.location,
          key: { id: repository.writerId, kind: repository.keyKind },
          stored,
        }),
      );
    }
    // The command never opened a repository (a wrong password, a storage that failed): the mirrors
    // are the only place that hears of it.
    if (repositories.length === 0)
      mirrored.push(mirrorRecord(entry, { repository: location ?? null, key: null, stored: null }));
    await mirrorAuditRecords(mirrored, config.audit, (problem) => output.warn(`warning: ${problem}`));
  } finally {
    for (const repository of repositories) await repository.close().catch(() => undefined);
  }
}

function mirrorRecord(
  entry: AuditEntry,
  where: {
    repository: string | null;
    key: { id: string; kind: string } | null;
    /** The record's name in the repository, or null where it was not stored. */
    stored: string | null;
  },
): MirroredRecord {
  const { started, finished, ...rest } = entry;
  return { started: started.toISOString(), finished: finished.toISOString(), ...where, ...rest };
}
