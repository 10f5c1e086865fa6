import path from 'node:path';
import type { Command } from 'commander';
import { ConfigError, InvalidWalNameError, WalFileMissingError } from '../../errors.ts';
import { resolveConnection } from '../../postgres/connection.ts';
import { findTools, psql } from '../../postgres/tools.ts';
import { WalArchiver } from '../../postgres/wal/archiver.ts';
import { startWalDaemon } from '../../postgres/wal/daemon.ts';
import { WalFetcher } from '../../postgres/wal/fetcher.ts';
import { walSocketPath } from '../../postgres/wal/protocol.ts';
import { parseWalFileName } from '../../postgres/wal/segments.ts';
import { ARCHIVER_STATS, parseArchiverStats, type WalStatus } from '../../postgres/wal/status.ts';
import { WAL_KIND } from '../../monitoring/metrics.ts';
import { archivedWal, walSamples } from '../../monitoring/wal-metrics.ts';
import { onInterrupt } from '../../util/interrupt.ts';
import { count } from '../../util/plural.ts';
import { formatElapsed } from '../../util/duration.ts';
import { databaseCredentials, databasePasswordOption, type DatabasePasswordOptions } from '../database.ts';
import { globalOptions, outputFor, withRepository } from '../context.ts';
import { formatBytes, table } from '../output.ts';
import { publishState } from '../metrics-sink.ts';
import { describeOutcome, publicLocation } from '../outcome.ts';

const positiveInteger = (what: string) => (value: string) => {
  const number = Number(value);
  if (!Number.isInteger(number) || number < 0 || number > 64)
    throw new ConfigError(`${what} must be a whole number from 0 to 64, not ${value}`);
  return number;
};

export function registerWal(program: Command): void {
  const wal = program
    .command('wal')
    .description("PostgreSQL's WAL archive: archive_command, restore_command, the daemon, its status");

  wal
    .command('push')
    .argument('<path>', 'the WAL file PostgreSQL archives (%p)')
    .description("archive one WAL file: archive_command = 'strongbox wal push %p'")
    .action(async (file: string, _options: unknown, command: Command) => {
      const global = globalOptions(command);
      const name = walFileName(file);
      describeOutcome({ subject: { kind: 'wal', name } });
      await withRepository(global, (repository) =>
        new WalArchiver(repository.wal).push(name, path.resolve(file)),
      );
    });

  wal
    .command('fetch')
    .argument('<name>', 'the WAL file PostgreSQL asks for (%f)')
    .argument('<path>', 'where to write it (%p)')
    .description(
      "restore one WAL file: restore_command = 'strongbox wal fetch %f %p' (exit 1: not in the archive)",
    )
    .action(async (name: string, target: string, _options: unknown, command: Command) => {
      const global = globalOptions(command);
      walFileName(name);
      const found = await withRepository(global, (repository) =>
        new WalFetcher(repository.wal, { ahead: 0 }).fetch(name, path.resolve(target)),
      );
      if (!found) throw new WalFileMissingError(name);
    });

  wal
    .command('daemon')
    .description(
      'answer wal push and wal fetch of one cluster through a local socket, pushing waiting segments ahead and fetching the next ones early',
    )
    .option('--pgdata <dir>', "the cluster's data directory (env PGDATA)")
    .option('--socket <path>', 'listen here (env STRONGBOX_WAL_SOCKET; default: one per data directory)')
    .option(
      '--parallel <n>',
      'files encoded at once, never more than the cores (default: the cores, at most 4)',
      positiveInteger('--parallel'),
    )
    .option('--prefetch <n>', 'segments fetched ahead of replay', positiveInteger('--prefetch'), 4)
    .option(
      '--acknowledge-dir <dir>',
      "mark files pushed ahead here, for an archive_command that answers from the shell: 'rm DIR/%f 2>/dev/null || strongbox wal push %p'",
    )
    .action(
      async (
        options: {
          pgdata?: string;
          socket?: string;
          parallel?: number;
          prefetch: number;
          acknowledgeDir?: string;
        },
        command: Command,
      ) => {
        const global = globalOptions(command);
        const output = outputFor(global);
        const pgdata = options.pgdata ?? process.env.PGDATA;
        if (!pgdata && !options.socket && !process.env.STRONGBOX_WAL_SOCKET)
          throw new ConfigError('no data directory given', {
            hint: 'Pass --pgdata (or set PGDATA), whose archive_command the daemon answers.',
          });
        const socket = options.socket ?? walSocketPath(pgdata!);
        await withRepository(global, async (repository) => {
          const server = await startWalDaemon(repository.wal, {
            socket,
            ...(pgdata ? { pgdata: path.resolve(pgdata) } : {}),
            ...(options.parallel !== undefined ? { parallel: options.parallel } : {}),
            prefetch: options.prefetch,
            ...(options.acknowledgeDir ? { acknowledgements: options.acknowledgeDir } : {}),
            onPushed: (event) =>
              output.info(
                `${event.stored ? 'archived' : 'already archived'} ${event.name} (${formatBytes(event.bytes)}, ${formatElapsed(event.seconds)}${event.ahead ? ', ahead' : ''})`,
              ),
            onFetched: (event) =>
              output.info(`restored ${event.name}${event.prefetched ? ' (prefetched)' : ''}`),
            onError: (message) => output.warn(`strongbox: ${message}`),
            onWarning: (message) => output.warn(`warning: ${message}`),
          });
          output.info(`WAL daemon listening on ${server.socket}`);
          // Runs until SIGINT or SIGTERM, which closes the socket once the pushes in flight end.
          await new Promise<never>(() => {
            onInterrupt(() => server.close());
          });
        });
      },
    );

  databasePasswordOption(
    wal
      .command('status')
      .description(
        'the WAL archive: newest segment and its age, the recovery window per timeline, gaps, and PostgreSQL failing to archive; with --metrics-textfile or --pushgateway, published as metrics',
      )
      .option('--url <url>', 'also ask the server what it says of archiving (pg_stat_archiver)'),
  ).action(async (options: { url?: string } & DatabasePasswordOptions, command: Command) => {
    const global = globalOptions(command);
    const output = outputFor(global);
    const credentials = await databaseCredentials(options.url, options, output);
    const archiver = options.url
      ? parseArchiverStats(await serverArchiverStats(options.url, credentials.password))
      : undefined;
    const { status, timelines } = await withRepository(global, (repository) =>
      archivedWal(repository, archiver ? { archiver } : {}),
    );
    if (global.json) output.data(status);
    else output.line(describeStatus(status));
    const location = publicLocation(global.repo ?? process.env.STRONGBOX_REPO) ?? '';
    await publishState(
      {
        what: 'archive',
        group: { repository: location, kind: WAL_KIND },
        samples: walSamples(location, timelines, archiver),
      },
      global,
      output,
    );
  });
}

/** The name of the file PostgreSQL archives, checked as the repository will. */
function walFileName(file: string): string {
  const name = path.basename(file);
  if (!parseWalFileName(name)) throw new InvalidWalNameError(name);
  return name;
}

async function serverArchiverStats(url: string, password: string | undefined): Promise<string> {
  const connection = resolveConnection(url, process.env, password);
  const tools = await findTools(connection);
  return psql(connection, tools.binDir, ARCHIVER_STATS);
}

function describeStatus(status: WalStatus): string {
  const lines: string[] = [];
  if (!status.newest) lines.push('no WAL archived');
  else
    lines.push(
      `newest segment ${status.newest.name}, archived ${status.newest.archived} (${formatElapsed(status.newest.ageSeconds)} ago)`,
    );
  if (status.timelines.length > 0) {
    const rows = [['TIMELINE', 'SEGMENTS', 'FIRST', 'LAST', 'GAPS', 'RECOVERY WINDOW']];
    for (const timeline of status.timelines)
      rows.push([
        String(timeline.timeline),
        String(timeline.segments),
        timeline.first,
        timeline.last,
        String(timeline.gaps.length),
        timeline.window ? `${timeline.window.from} to ${timeline.window.to}` : 'no base backup',
      ]);
    lines.push(table(rows));
  }
  for (const timeline of status.timelines)
    for (const gap of timeline.gaps)
      lines.push(
        `gap on timeline ${timeline.timeline}: ${count(gap.segments, 'segment')} missing, ${gap.from} to ${gap.to}`,
      );
  if (status.archiver) {
    const a = status.archiver;
    lines.push(
      `PostgreSQL: ${a.archivedCount} archived (last ${a.lastArchivedWal ?? 'none'}), ${a.failedCount} failed${a.lastFailedWal ? ` (last ${a.lastFailedWal} at ${a.lastFailedTime})` : ''}`,
    );
  }
  return lines.join('\n');
}
