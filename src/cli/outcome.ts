import type { Command } from 'commander';
import type { StrongboxConfig } from '../config-file/config-file.ts';
import { ExitCode, StrongboxError } from '../errors.ts';
import type { NotificationTarget } from '../notify/schema.ts';
import { globalOptions, loadedConfig, outputFor, type GlobalOptions } from './context.ts';
import type { Output } from './output.ts';
import { publicArguments, WITHHELD } from './public-arguments.ts';

/**
 * What a command did, for whoever watches the backups: metrics, notifications, the audit log.
 * program.ts starts one per run before the command's action, the action adds what it knows (the
 * subject before it begins, so that a failure is labelled too; figures once done), and program.ts
 * hands the finished outcome to every sink (outcome-sinks.ts) whether the command succeeded or not.
 */
export interface CommandOutcome {
  /** The command's path as typed: 'backup postgres', 'forget', 'prune', 'check'. */
  operation: string;
  /** Its options and arguments, values that may hold secrets withheld (public-arguments.ts). */
  arguments: string[];
  started: Date;
  finished: Date;
  result: 'success' | 'failure';
  /** Of a failure: its one-line message and the exit code the process ends with. */
  error?: { message: string; exitCode: number };
  /** What the operation was about, as metrics label it and notifications name it. */
  subject: OutcomeSubject;
  /** The operation's figures: size, stored, duration… by name, in bytes and seconds. */
  figures: Record<string, number>;
  /** The snapshot it wrote or read, if one. */
  snapshot?: string;
}

export interface OutcomeSubject {
  /** The repository location, without credentials. */
  repository?: string;
  host?: string;
  kind?: string;
  name?: string;
  env?: string;
}

export interface OutcomeContext {
  options: GlobalOptions;
  config: StrongboxConfig;
  output: Output;
  /**
   * Of the notifications sent about the outcome, by channel, how many could not be delivered (0
   * for a channel sent to without fault): the notify sink counts them, the metrics sink after it
   * publishes them. Empty when none was sent.
   */
  notificationFailures: Partial<Record<NotificationTarget['type'], number>>;
}

/**
 * Publishes an outcome somewhere. A sink that fails must not fail the command: its error is
 * printed as a warning and the exit code stays the command's.
 */
export type OutcomeSink = (outcome: CommandOutcome, context: OutcomeContext) => Promise<void>;

interface RunningOutcome {
  command: Command;
  operation: string;
  started: Date;
  subject: OutcomeSubject;
  figures: Record<string, number>;
  snapshot?: string;
}

let running: RunningOutcome | undefined;

/** The command path below the program: `backup postgres`, `key add`. */
function operationOf(command: Command): string {
  const names: string[] = [];
  for (let at: Command | null = command; at?.parent; at = at.parent) names.unshift(at.name());
  return names.join(' ');
}

/** program.ts, before a command's action runs. */
export function beginOutcome(command: Command): void {
  running = { command, operation: operationOf(command), started: new Date(), subject: {}, figures: {} };
}

/** The command running now, for what must know it before it ends (the audit log, on an interrupt). */
export function runningCommand():
  { command: Command; operation: string; started: Date; snapshot?: string } | undefined {
  return running && { ...running };
}

/** A command's action: what its outcome is about and what it measured; later calls add to earlier ones. */
export function describeOutcome(details: {
  subject?: OutcomeSubject;
  figures?: Record<string, number>;
  snapshot?: string;
}): void {
  if (!running) return;
  Object.assign(running.subject, withoutUndefined(details.subject ?? {}));
  Object.assign(running.figures, details.figures ?? {});
  if (details.snapshot) running.snapshot = details.snapshot;
}

function withoutUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, field]) => field !== undefined)) as Partial<T>;
}

/**
 * A location (a repository, a database server) as messages, records and metrics may show it: no
 * user, password, query string or fragment. A password with a slash in it, typed without
 * %-encoding (s3://KEY:se/cret@host/bucket), is no URL to the parser, or one whose path holds the
 * secret: such text shows only what follows its last @.
 */
export function publicLocation(location: string | undefined): string | undefined {
  if (!location) return undefined;
  // Two letters at least: `C://…` is a Windows drive, not a scheme.
  const scheme = /^[a-z][a-z0-9+.-]+:\/\//i.exec(location)?.[0];
  if (!scheme) return location;
  if (URL.canParse(location)) {
    const url = new URL(location);
    if (!url.pathname.includes('@')) return `${url.protocol}//${url.host}${url.pathname}`;
  }
  const rest = location.slice(scheme.length);
  const at = rest.lastIndexOf('@');
  const withoutQuery = (text: string) => text.replace(/[?#][^]*$/, '');
  if (at === -1) return scheme + withoutQuery(rest);
  // A ? or # before that @ may start a query or be part of a password: which part is which is unknowable.
  if (/[?#]/.test(rest.slice(0, at))) return scheme + WITHHELD;
  return `${scheme}${WITHHELD}@${withoutQuery(rest.slice(at + 1))}`;
}

/**
 * program.ts, once the command ended: builds the outcome and gives it to every sink in turn. Returns
 * nothing and throws nothing; a command that never began (bad usage, --help) has no outcome.
 */
export async function finishOutcome(error: unknown, sinks: readonly OutcomeSink[]): Promise<void> {
  const current = running;
  running = undefined;
  if (!current || sinks.length === 0) return;
  const options = globalOptions(current.command);
  const output = outputFor(options);
  const outcome: CommandOutcome = {
    operation: current.operation,
    arguments: publicArguments(current.command),
    started: current.started,
    finished: new Date(),
    result: error === undefined ? 'success' : 'failure',
    ...(error === undefined ? {} : { error: failureOf(error) }),
    subject: {
      repository: publicLocation(options.repo ?? process.env.STRONGBOX_REPO),
      ...current.subject,
    },
    figures: current.figures,
    ...(current.snapshot ? { snapshot: current.snapshot } : {}),
  };
  let config: StrongboxConfig;
  try {
    config = await loadedConfig(options);
  } catch {
    return; // the command itself already failed on it, and said so
  }
  const context: OutcomeContext = { options, config, output, notificationFailures: {} };
  for (const sink of sinks) {
    try {
      await sink(outcome, context);
    } catch (sinkError) {
      output.warn(
        `warning: ${sinkError instanceof Error ? sinkError.message : String(sinkError)} (the ${outcome.operation} itself ${outcome.result === 'success' ? 'succeeded' : 'failed as reported'})`,
      );
    }
  }
}

function failureOf(error: unknown): { message: string; exitCode: number } {
  if (error instanceof StrongboxError) return { message: error.message, exitCode: error.exitCode };
  return { message: error instanceof Error ? error.message : String(error), exitCode: ExitCode.general };
}
