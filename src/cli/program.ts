import { Command, CommanderError } from 'commander';
import { ExitCode, StrongboxError, WalFileMissingError } from '../errors.ts';
import { fetchExitCode } from '../postgres/wal/protocol.ts';
import { runInterruptCleanups } from '../util/interrupt.ts';
import { VERSION } from '../version.ts';
import { registerBackup } from './commands/backup.ts';
import { registerCat } from './commands/cat.ts';
import { registerCheck } from './commands/check.ts';
import { registerCopy } from './commands/copy.ts';
import { registerDrill } from './commands/drill.ts';
import { registerDump } from './commands/dump.ts';
import { registerInit } from './commands/init.ts';
import { registerGenerate } from './commands/generate.ts';
import { registerHealth } from './commands/health.ts';
import { registerKey } from './commands/key.ts';
import { registerMetrics } from './commands/metrics.ts';
import { registerLog } from './commands/log.ts';
import { registerMigrate } from './commands/migrate.ts';
import { registerForget } from './commands/forget.ts';
import { registerPrune } from './commands/prune.ts';
import { registerRepair } from './commands/repair.ts';
import { registerRestore } from './commands/restore.ts';
import { registerSnapshots } from './commands/snapshots.ts';
import { registerTag } from './commands/tag.ts';
import { registerUnlock } from './commands/unlock.ts';
import { registerVerify } from './commands/verify.ts';
import { registerWal } from './commands/wal.ts';
import { globalOptions, loadedConfig } from './context.ts';
import { hintFor } from './hints.ts';
import { pushgatewayOption } from './metrics-sink.ts';
import { beginOutcome, finishOutcome, runningCommand } from './outcome.ts';
import { OUTCOME_SINKS } from './outcome-sinks.ts';
import { captureArguments } from './public-arguments.ts';

function buildProgram(): Command {
  const program = new Command('strongbox')
    .description('Backups of PostgreSQL and files into an encrypted, deduplicating repository.')
    .version(VERSION)
    .option('-r, --repo <location>', 'repository location (env STRONGBOX_REPO)')
    .option(
      '--password-file <file>',
      'read the repository password from a file (env STRONGBOX_PASSWORD_FILE)',
    )
    .option(
      '--password-command <command>',
      'run a command that prints the password (env STRONGBOX_PASSWORD_COMMAND)',
    )
    .option(
      '--identity-file <file>',
      'open the repository with an identity file instead of a password (env STRONGBOX_IDENTITY_FILE)',
    )
    .option('--config <file>', 'read settings and named policies from this YAML file (env STRONGBOX_CONFIG)')
    .option(
      '--metrics-textfile <dir>',
      "write the command's metrics into node_exporter's textfile directory (env STRONGBOX_METRICS_TEXTFILE)",
    )
    .option(
      '--pushgateway <url>',
      "push the command's metrics to a Prometheus Pushgateway (env PUSHGATEWAY_URL)",
      pushgatewayOption,
    )
    .option('--json', 'print data as JSON')
    .option('-q, --quiet', 'print no progress or informational messages')
    .option('--debug', 'print stack traces of errors')
    .option(
      '--no-lock',
      'commands that only read (restore, verify, check) take no lock: for a repository that cannot be written',
    )
    .showHelpAfterError('(add --help for usage)')
    .exitOverride()
    // Every command fails early on a bad configuration file, not only those that use it.
    .hook('preAction', async (_program, command) => {
      await loadedConfig(globalOptions(command));
      beginOutcome(command);
    });
  program.configureOutput({ writeErr: (text) => process.stderr.write(text) });
  for (const register of [
    registerInit,
    registerBackup,
    registerSnapshots,
    registerForget,
    registerTag,
    registerPrune,
    registerRestore,
    registerCat,
    registerDump,
    registerCheck,
    registerCopy,
    registerKey,
    registerMigrate,
    registerRepair,
    registerUnlock,
    registerVerify,
    registerMetrics,
    registerGenerate,
    registerHealth,
    registerLog,
    registerDrill,
    registerWal,
  ]) {
    register(program);
  }
  for (const command of program.commands) applyExitOverride(command);
  captureArguments(program);
  return program;
}

function applyExitOverride(command: Command): void {
  command.exitOverride();
  for (const sub of command.commands) applyExitOverride(sub);
}

/** The only place errors become exit codes. */
function report(error: unknown, debug: boolean): number {
  if (error instanceof CommanderError) {
    // --help, --version and `help` exit 0; help shown because a subcommand is missing does not.
    return error.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
  }
  if (error instanceof StrongboxError) {
    process.stderr.write(`strongbox: ${error.message}\n`);
    const hint = hintFor(error);
    if (hint) process.stderr.write(`  ${hint}\n`);
    if (debug) process.stderr.write(`${error.stack}\n`);
    return error.exitCode;
  }
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'EPIPE') return ExitCode.general;
  process.stderr.write(
    `strongbox: unexpected error: ${error instanceof Error ? error.message : String(error)}\n`,
  );
  process.stderr.write(
    debug
      ? `${(error as Error)?.stack}\n`
      : '  Run again with --debug for details, and report it if it persists.\n',
  );
  return ExitCode.general;
}

/** 128 + the signal's number, as shells report a process a signal ended. */
const SIGNAL_EXIT_CODES = { SIGINT: 130, SIGTERM: 143 } as const;
/** How long the cleanups of an interrupt may take (a lock to delete on a slow storage) before exiting anyway. */
const CLEANUP_TIMEOUT_MS = 15_000;

let interrupted = false;

/**
 * SIGINT or SIGTERM: one line, then what the library registered (locks, children, databases to
 * put back in service) is undone, and the process exits. Whatever the interrupted command was
 * doing fails meanwhile, unreported: the line said why. A second signal exits at once.
 */
function interrupt(signal: keyof typeof SIGNAL_EXIT_CODES): void {
  const code = SIGNAL_EXIT_CODES[signal];
  if (interrupted) process.exit(code);
  interrupted = true;
  // On a terminal, over a progress line being redrawn.
  process.stderr.write(`${process.stderr.isTTY ? '\r\x1b[K' : ''}strongbox: interrupted by ${signal}\n`);
  const timeout = new Promise<void>((resolve) => setTimeout(resolve, CLEANUP_TIMEOUT_MS));
  void Promise.race([runInterruptCleanups(), timeout]).finally(() => process.exit(code));
}

process.on('SIGINT', () => interrupt('SIGINT'));
process.on('SIGTERM', () => interrupt('SIGTERM'));

const debug = process.argv.includes('--debug');
let failure: unknown;
try {
  await buildProgram().parseAsync(process.argv);
} catch (error) {
  failure = error;
  if (!interrupted) {
    const code = report(error, debug);
    // restore_command's exit code says whether the archive ended or recovery must stop.
    process.exitCode =
      runningCommand()?.operation === 'wal fetch' && !(error instanceof WalFileMissingError)
        ? fetchExitCode(code)
        : code;
  }
}
// Metrics, notifications and the audit log hear of failures too; an interrupt exits on its own.
if (!interrupted) await finishOutcome(failure, OUTCOME_SINKS);
