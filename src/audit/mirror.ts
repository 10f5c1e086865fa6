import { spawn } from 'node:child_process';
import { appendFile } from 'node:fs/promises';
import type { AuditSettings } from '../config-file/config-file.ts';

/**
 * Copies of audit records kept outside the repository (docs/CLI.md, "Audit log"): a file of JSON
 * lines and the system log. The repository's own records are what anyone with a key reads back
 * with `strongbox log`; these are for a log collector, and for what a repository cannot hold: an
 * attempt whose key did not open the repository, a record the storage refused.
 */

/** How long logger(1) may take to hand the lines over (a TCP server that does not answer). */
const LOGGER_TIMEOUT_MS = 10_000;
/** The largest message logger(1) sends; a longer line is cut there by logger (the file keeps it whole). */
const SYSLOG_MESSAGE_BYTES = 8192;

export interface MirroredRecord {
  result: string;
  [field: string]: unknown;
}

/**
 * Appends each record as a line of JSON to the file and sends it to syslog, as the settings say.
 * Never throws: each place that could not take the records is reported through `onProblem`.
 */
export async function mirrorAuditRecords(
  records: readonly MirroredRecord[],
  settings: AuditSettings | undefined,
  onProblem: (message: string) => void,
): Promise<void> {
  if (!settings || records.length === 0) return;
  const lines = records.map((record) => JSON.stringify(record));
  if (settings.file !== undefined) {
    try {
      await appendFile(settings.file, lines.map((line) => `${line}\n`).join(''), { mode: 0o600 });
    } catch (error) {
      onProblem(
        `the audit record was not written to ${settings.file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`,
      );
    }
  }
  if (settings.syslog !== undefined) {
    const failed = records.some((record) => record.result !== 'success');
    const problem = await sendToSyslog(lines, settings.syslog, failed ? 'user.err' : 'user.notice');
    if (problem) onProblem(`the audit record was not sent to syslog: ${problem}`);
  }
}

/**
 * Hands the lines to logger(1) (util-linux), one message each: it speaks to the local syslog
 * through /dev/log, which Node cannot reach without a native module, and to remote servers in
 * RFC 5424. Returns what went wrong, if anything.
 */
function sendToSyslog(
  lines: readonly string[],
  syslog: NonNullable<AuditSettings['syslog']>,
  priority: string,
): Promise<string | undefined> {
  const target =
    syslog === 'local'
      ? ['--socket-errors=on']
      : [
          '--server',
          syslog.host,
          '--port',
          String(syslog.port),
          syslog.protocol === 'tcp' ? '--tcp' : '--udp',
        ];
  const args = [
    '--tag',
    'strongbox',
    '--priority',
    priority,
    '--size',
    String(SYSLOG_MESSAGE_BYTES),
    ...target,
  ];
  return new Promise((resolve) => {
    const child = spawn('logger', args, { stdio: ['pipe', 'ignore', 'pipe'], timeout: LOGGER_TIMEOUT_MS });
    let stderr = '';
    child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
    child.on('error', (error: NodeJS.ErrnoException) =>
      resolve(error.code === 'ENOENT' ? 'logger (util-linux) is not installed' : error.message),
    );
    child.on('close', (code, signal) => {
      if (code === 0) resolve(undefined);
      else
        resolve(
          stderr.trim().split('\n')[0] ||
            (signal ? `logger was stopped by ${signal}` : `logger exited ${code}`),
        );
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(lines.map((line) => `${line}\n`).join(''));
  });
}
