import type { Command } from 'commander';
import { ExitCode, NoRepositoryError, StrongboxError, ThresholdError } from '../../errors.ts';
import type { AlertThresholds } from '../../monitoring/alert-rules.ts';
import {
  checkHealth,
  leftoversFinding,
  worstStatus,
  type GroupName,
  type HealthFinding,
  type HealthStatus,
} from '../../monitoring/health.ts';
import { recallHealth, rememberHealth, type RememberedHealth } from '../../monitoring/health-state.ts';
import { RECORDED_RESULT_READERS } from '../../monitoring/recorded-results.ts';
import { sendNotification } from '../../notify/send.ts';
import { cleanupRestores } from '../../postgres/restore/cleanup.ts';
import { count } from '../../util/plural.ts';
import { printable } from '../../util/printable.ts';
import { formatElapsed } from '../../util/duration.ts';
import { globalOptions, loadedConfig, outputFor, withRepository } from '../context.ts';
import { databaseCredentials, databasePasswordOption, type DatabasePasswordOptions } from '../database.ts';
import { publicLocation } from '../outcome.ts';
import { formatBytes, type Output } from '../output.ts';
import { thresholdOptions, thresholdsOf, type ThresholdOptions } from '../thresholds.ts';

interface HealthCliOptions extends ThresholdOptions, DatabasePasswordOptions {
  nagios?: boolean;
  server: string[];
  pgBin?: string;
}

/** Nagios's plugin exit codes, by state. */
const NAGIOS_EXIT: Record<HealthStatus, number> = { ok: 0, warning: 1, critical: 2, unknown: 3 };

/** `health` found a problem (exit 8), after printing what it found. */
export class UnhealthyError extends ThresholdError {
  constructor(
    readonly status: HealthStatus,
    readonly problems: string[],
  ) {
    super(
      `health: ${status.toUpperCase()}, ${count(problems.length, 'problem')}${problems.length > 0 ? `; the first: ${problems[0]}` : ''}`,
    );
  }
}

export function registerHealth(program: Command): void {
  databasePasswordOption(thresholdOptions(program.command('health')))
    .description(
      "check the backups as the alert rules do: snapshot ages and sizes, drills, checks, stale locks, the archived WAL's age and gaps, restore leftovers (exit 8 on a problem; --nagios: 0/1/2/3)",
    )
    .option(
      '--server <url>',
      'also report databases killed restores left on this PostgreSQL server (repeatable)',
      (value: string, previous: string[]) => [...previous, value],
      [] as string[],
    )
    .option('--pg-bin <dir>', 'directory of psql, for --server')
    .option('--nagios', 'print one status line with perfdata and exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN')
    .action(async (options: HealthCliOptions, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      const location = publicLocation(global.repo ?? process.env.STRONGBOX_REPO) ?? '';
      let thresholds: AlertThresholds;
      try {
        thresholds = await thresholdsOf(options, command);
      } catch (error) {
        if (options.nagios) return nagiosUnknown(error);
        throw error;
      }
      const time = new Date();
      const findings: HealthFinding[] = [];
      let unreachable: unknown;
      try {
        findings.push(
          ...(await withRepository(global, (repository) =>
            checkHealth(repository, { thresholds, readers: RECORDED_RESULT_READERS, now: time }),
          )),
        );
      } catch (error) {
        // A checker misconfigured (no location, no password) cannot say; a repository gone is critical.
        const misconfigured =
          error instanceof StrongboxError &&
          error.exitCode === ExitCode.usage &&
          !(error instanceof NoRepositoryError);
        if (misconfigured) {
          if (options.nagios) return nagiosUnknown(error);
          throw error;
        }
        unreachable = error;
        findings.push({ check: 'repository', status: 'critical', error: messageOf(error) });
      }
      for (const server of options.server) findings.push(await leftoversOn(server, options, output));
      const status = worstStatus(findings.map((finding) => finding.status));
      const problems = findings.filter((finding) => finding.status !== 'ok').map(describeFinding);
      await announceChange(location, { status, time: time.toISOString(), problems }, global, output);

      if (options.nagios) {
        process.stdout.write(nagiosText(status, problems, findings, thresholds));
        process.exitCode = NAGIOS_EXIT[status];
        return;
      }
      if (global.json)
        output.data({
          repository: location,
          time: time.toISOString(),
          status,
          thresholds,
          problems,
          findings,
        });
      else output.line(healthText(location, status, problems, findings));
      if (unreachable !== undefined) throw unreachable;
      if (status !== 'ok') throw new UnhealthyError(status, problems);
    });
}

/** What restores left on `server`, or why the server could not say. */
async function leftoversOn(
  server: string,
  options: HealthCliOptions,
  output: Output,
): Promise<HealthFinding> {
  const shown = publicLocation(server) ?? server;
  try {
    const credentials = await databaseCredentials(server, options, output);
    const result = await cleanupRestores({
      to: server,
      dryRun: true,
      ...credentials,
      ...(options.pgBin ? { pgBin: options.pgBin } : {}),
    });
    return leftoversFinding(result.server, result.found);
  } catch (error) {
    return leftoversFinding(shown, { error: messageOf(error) });
  }
}

/**
 * Tells the configuration file's notification targets when the state differs from the last one
 * this machine found for the repository; a first run that finds all well says nothing.
 */
async function announceChange(
  location: string,
  now: RememberedHealth,
  global: ReturnType<typeof globalOptions>,
  output: Output,
): Promise<void> {
  const previous = await recallHealth(location);
  try {
    await rememberHealth(location, now);
  } catch (error) {
    output.warn(`warning: the health state could not be remembered: ${messageOf(error)}`);
  }
  if (previous?.status === now.status || (previous === undefined && now.status === 'ok')) return;
  const targets = (await loadedConfig(global)).notifications ?? [];
  if (targets.length === 0) return;
  const report = await sendNotification(targets, {
    event: 'health-changed',
    time: new Date(now.time),
    operation: 'health',
    result: now.status === 'ok' ? 'success' : 'failure',
    subject: { repository: location },
    ...(now.status === 'ok'
      ? {}
      : { error: { message: `${now.status.toUpperCase()}: ${now.problems.join('; ')}` } }),
    details: {
      previous:
        previous === undefined ? 'unknown (first check on this machine)' : previous.status.toUpperCase(),
      current: now.status.toUpperCase(),
      problems: now.problems.length === 0 ? 'none' : now.problems.join('; '),
    },
  });
  for (const failure of report.failed)
    output.warn(`warning: notification to ${printable(failure.target)} failed: ${failure.message}`);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

function nagiosUnknown(error: unknown): void {
  process.stdout.write(`STRONGBOX UNKNOWN - ${messageOf(error).replaceAll('|', '/')}\n`);
  process.exitCode = NAGIOS_EXIT.unknown;
}

/** host/kind/name and env, as a finding names its group. */
function groupName(group: GroupName): string {
  return `${group.name} (${group.kind} on ${group.host}${group.env === undefined ? '' : `, env ${group.env}`})`;
}

const ago = (seconds: number | undefined) => (seconds === undefined ? '' : `${formatElapsed(seconds)} ago`);

/** One finding as a line: what it is about, then what was found. */
export function describeFinding(finding: HealthFinding): string {
  switch (finding.check) {
    case 'repository':
      return finding.error !== undefined
        ? `repository: not reachable: ${finding.error}`
        : `repository: reachable, ${count(finding.snapshots ?? 0, 'snapshot')} in ${count(finding.groups ?? 0, 'group')}`;
    case 'snapshots':
      return finding.damaged.length === 0
        ? 'snapshots: none damaged'
        : `snapshots: ${count(finding.damaged.length, 'snapshot')} damaged or not trusted (${finding.damaged.map((d) => d.id.slice(0, 8)).join(', ')}): run strongbox check`;
    case 'backup-age':
      return `${groupName(finding.group)}: newest snapshot ${finding.snapshot.slice(0, 8)} is ${formatElapsed(finding.ageSeconds)} old${finding.status === 'ok' ? '' : `, over the limit of ${formatElapsed(finding.limitSeconds)}`}`;
    case 'backup-size': {
      const name = groupName(finding.group);
      if (finding.averageBytes === undefined)
        return `${name}: newest snapshot ${formatBytes(finding.sizeBytes)}, no earlier one within ${formatElapsed(finding.windowSeconds)} to compare`;
      const change = finding.changePercent!;
      const off = Number.isFinite(change)
        ? `${Math.abs(change).toFixed(0)} % ${change >= 0 ? 'above' : 'below'}`
        : 'far above';
      return `${name}: newest snapshot ${formatBytes(finding.sizeBytes)}, ${off} the average of ${formatBytes(finding.averageBytes)} over ${count(finding.compared, 'snapshot')}${finding.status === 'ok' ? '' : ` (limit ${finding.limitPercent} %)`}`;
    }
    case 'drill': {
      const name = groupName(finding.group);
      const success = finding.newestSuccess
        ? `last successful drill ${ago(finding.successAgeSeconds)}${finding.newestSuccess.figures.rto_seconds === undefined ? '' : `, RTO ${formatElapsed(finding.newestSuccess.figures.rto_seconds)}`}`
        : 'no successful drill';
      switch (finding.problem) {
        case undefined:
          return `${name}: ${success}`;
        case 'never':
          return `${name}: never proven restorable: no successful drill recorded (run strongbox drill)`;
        case 'too-old':
          return `${name}: ${success}, over the limit of ${formatElapsed(finding.limitSeconds)}`;
        case 'failed':
          return `${name}: the newest drill failed (exit ${finding.newest!.exitCode}): ${finding.newest!.message ?? 'no message'}; ${success}`;
        case 'over-objective':
          return `${name}: the newest drill was over its objective: ${finding.newest!.message ?? ''}`;
        case 'rto':
        case 'rpo':
          return `${name}: the newest drill's ${finding.problem.toUpperCase()} of ${formatElapsed(finding.newest!.figures[`${finding.problem}_seconds`] ?? 0)} is over the objective of ${formatElapsed(finding.objectiveSeconds ?? 0)}`;
      }
      break;
    }
    case 'check': {
      const success =
        finding.successAgeSeconds === undefined
          ? 'no successful check'
          : `last successful check ${ago(finding.successAgeSeconds)}`;
      switch (finding.problem) {
        case undefined:
          return `check: ${success}`;
        case 'never':
          return 'check: no check recorded: run strongbox check (with a full key)';
        case 'too-old':
          return `check: ${success}, over the limit of ${formatElapsed(finding.limitSeconds)}`;
        case 'failed':
          return `check: the newest check failed (exit ${finding.newest!.exitCode}): ${finding.newest!.message ?? 'no message'}`;
      }
      break;
    }
    case 'locks':
      return finding.stale.length === 0
        ? 'locks: none stale'
        : `locks: ${count(finding.stale.length, 'stale lock')} (${finding.stale.map((lock) => (lock.info ? `${lock.info.operation} on ${lock.info.host}, pid ${lock.info.pid}` : lock.name)).join('; ')}): strongbox unlock removes them`;
    case 'wal-age':
      if (finding.error !== undefined) return `WAL: the archive could not be read: ${finding.error}`;
      return `WAL: newest segment ${finding.segment} archived ${ago(finding.ageSeconds)}${
        finding.status === 'critical'
          ? `, over the limit of ${formatElapsed(finding.limitSeconds)}: see strongbox wal status --url, the WAL daemon and pg_stat_archiver`
          : finding.status === 'warning'
            ? `, over half the limit of ${formatElapsed(finding.limitSeconds)}`
            : ''
      }`;
    case 'wal-gaps':
      return finding.gaps.length === 0
        ? 'WAL: no gap a recovery would stop at'
        : `WAL: ${count(finding.gaps.length, 'gap')} a recovery would stop at (${finding.gaps.map((gap) => `timeline ${gap.timeline}: ${gap.from} to ${gap.to}, ${count(gap.segments, 'segment')}`).join('; ')}): take a new base backup`;
    case 'leftovers':
      if (finding.error !== undefined)
        return `leftovers on ${finding.server}: could not be listed: ${finding.error}`;
      return finding.leftovers.length === 0
        ? `leftovers on ${finding.server}: none`
        : `leftovers on ${finding.server}: ${finding.leftovers.map((leftover) => `${leftover.database} (${leftover.kind}${leftover.target === undefined ? '' : ` of ${leftover.target}`})`).join(', ')}: strongbox restore --cleanup removes them`;
  }
  return finding satisfies never;
}

/** The plain report: the state, then one line per finding, problems first. */
function healthText(
  location: string,
  status: HealthStatus,
  problems: string[],
  findings: HealthFinding[],
): string {
  const lines = [
    `health of ${location}: ${status.toUpperCase()}${problems.length === 0 ? '' : `, ${count(problems.length, 'problem')}`}`,
  ];
  const order: HealthStatus[] = ['critical', 'warning', 'unknown', 'ok'];
  const sorted = [...findings].sort((a, b) => order.indexOf(a.status) - order.indexOf(b.status));
  for (const finding of sorted)
    lines.push(`  ${finding.status.toUpperCase().padEnd(8)}  ${describeFinding(finding)}`);
  return lines.join('\n');
}

/** A perfdata label: quoted, without the characters the format reserves. */
function perfLabel(text: string): string {
  return `'${text.replace(/['=|]/g, '_')}'`;
}

/**
 * Nagios plugin output: `STRONGBOX STATE - summary | perfdata` on the first line, then one line
 * per problem. Perfdata: ages and RTOs in seconds with their limits, sizes in bytes, counts.
 */
function nagiosText(
  status: HealthStatus,
  problems: string[],
  findings: HealthFinding[],
  thresholds: AlertThresholds,
): string {
  // A group is labelled by its name alone unless another group has the same name.
  const groupsByName = new Map<string, Set<string>>();
  for (const finding of findings) {
    if (!('group' in finding)) continue;
    const { host, kind, name, env } = finding.group;
    const keys = groupsByName.get(name) ?? new Set();
    groupsByName.set(name, keys.add(JSON.stringify([host, kind, env])));
  }
  const label = (group: GroupName, what: string) =>
    perfLabel(
      `${groupsByName.get(group.name)!.size > 1 ? `${group.host} ${group.kind} ${group.name}${group.env === undefined ? '' : ` ${group.env}`}` : group.name} ${what}`,
    );
  const perf: string[] = [];
  for (const finding of findings) {
    switch (finding.check) {
      case 'backup-age':
        perf.push(
          `${label(finding.group, 'age')}=${Math.round(finding.ageSeconds)}s;;${finding.limitSeconds};0`,
        );
        break;
      case 'backup-size':
        perf.push(`${label(finding.group, 'size')}=${finding.sizeBytes}B;;;0`);
        break;
      case 'drill':
        if (finding.successAgeSeconds !== undefined)
          perf.push(
            `${label(finding.group, 'drill age')}=${Math.round(finding.successAgeSeconds)}s;${thresholds.maxDrillAgeSeconds};;0`,
          );
        if (finding.newestSuccess?.figures.rto_seconds !== undefined)
          perf.push(
            `${label(finding.group, 'rto')}=${finding.newestSuccess.figures.rto_seconds.toFixed(3)}s;;;0`,
          );
        break;
      case 'check':
        if (finding.successAgeSeconds !== undefined)
          perf.push(`'check age'=${Math.round(finding.successAgeSeconds)}s;${finding.limitSeconds};;0`);
        break;
      case 'locks':
        perf.push(`'stale locks'=${finding.stale.length};1;;0`);
        break;
      case 'snapshots':
        perf.push(`'damaged snapshots'=${finding.damaged.length};;1;0`);
        break;
      case 'wal-age':
        if (finding.ageSeconds !== undefined)
          perf.push(
            `'wal age'=${Math.round(finding.ageSeconds)}s;${finding.warningSeconds};${finding.limitSeconds};0`,
          );
        break;
      case 'wal-gaps':
        perf.push(`'wal gaps'=${finding.gaps.length};;1;0`);
        break;
      case 'leftovers':
        perf.push(`${perfLabel(`leftovers ${finding.server}`)}=${finding.leftovers.length};1;;0`);
        break;
      case 'repository':
        if (finding.snapshots !== undefined) perf.push(`'snapshots'=${finding.snapshots};;;0`);
        break;
    }
  }
  const summary =
    problems.length === 0
      ? `${count(findings.filter((finding) => 'group' in finding).length, 'check')} of the backups passed`
      : problems.length === 1
        ? problems[0]!
        : `${count(problems.length, 'problem')}, the first: ${problems[0]}`;
  const clean = (line: string) => line.replaceAll('|', '/');
  return [
    `STRONGBOX ${status.toUpperCase()} - ${clean(summary)} | ${perf.join(' ')}`,
    ...(problems.length > 1 ? problems.map(clean) : []),
    '',
  ].join('\n');
}
