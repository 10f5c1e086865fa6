import type { Command } from 'commander';
import type { AuditLogEntry } from '../../repository/audit-log.ts';
import { objectId, parseStampedId, stampTime } from '../../repository/layout.ts';
import { count } from '../../util/plural.ts';
import { printable } from '../../util/printable.ts';
import { positiveInteger } from '../arguments.ts';
import { globalOptions, outputFor, withRepository } from '../context.ts';

export function registerLog(program: Command): void {
  program
    .command('log')
    .description('show the audit log: who ran what on the repository, from where, and how it ended')
    .option('--last <n>', 'only the newest n records', positiveInteger('--last'))
    .option('--operation <name>', 'only records of this operation (backup, forget, key add…)')
    .action(async (options: { last?: number; operation?: string }, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      const entries = await withRepository(global, (repository) =>
        repository.readAuditLog({
          ...(options.last ? { last: options.last } : {}),
          ...(options.operation ? { operation: options.operation } : {}),
        }),
      );
      if (global.json) return output.data(entries);
      for (const entry of entries) output.line(describe(entry));
      const unreadable = entries.filter((entry) => !('record' in entry)).length;
      output.info(
        `${count(entries.length - unreadable, 'record')}` +
          (unreadable
            ? `, and ${unreadable} that cannot be believed (damaged or not signed by a writer)`
            : ''),
      );
    });
}

/** One line: time, host, user, key, the command line, and how it ended. */
function describe(entry: AuditLogEntry): string {
  if (!('record' in entry)) {
    const stamp = parseStampedId(objectId('audit', entry.name))?.stamp;
    const time = stamp ? shownTime(stampTime(stamp).toISOString()) : '-';
    return `${time}  ${printable(entry.name, 80)}  ${entry.status}: ${entry.problem}`;
  }
  const { record, key } = entry;
  const writer = `${key.id.slice(0, 8)}${key.kind === 'write-only' ? ' (w)' : ''}${entry.status === 'retired' ? ' (retired)' : ''}`;
  const commandLine = [record.operation, ...record.arguments].map((word) => printable(word)).join(' ');
  const ended =
    record.result === 'success'
      ? `success${record.snapshot ? `, snapshot ${record.snapshot.slice(0, 8)}` : ''}`
      : record.result === 'interrupted'
        ? 'interrupted'
        : `failure (exit ${record.exitCode ?? '?'})${record.message ? `: ${printable(record.message)}` : ''}`;
  const time = shownTime(record.started);
  return `${time}  ${printable(record.host, 64)}  ${printable(record.user, 64)}  key ${writer}  ${commandLine}  → ${ended}`;
}

/** An ISO time as `2026-05-01 10:00:01`, in UTC. */
function shownTime(iso: string): string {
  return new Date(iso).toISOString().replace('T', ' ').slice(0, 19);
}
