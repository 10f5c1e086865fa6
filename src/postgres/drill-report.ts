import { verificationRows } from './verify/verify.ts';
import { formatElapsed } from '../util/duration.ts';
import { printable } from '../util/printable.ts';
import type { DrillPhase, DrillRecord, DrillResult } from './drill.ts';

/** What each phase's time covers, as the report explains it (docs/CLI.md, drill, says the same). */
export const PHASE_MEANINGS: Record<DrillPhase, string> = {
  fetch:
    'from the start of the restore to the first byte handed to pg_restore: the snapshot and index read, the database created, the first data fetched',
  restore: 'pg_restore, then the database given its backed-up properties',
  verify: 'every table, sequence and schema object compared with the fingerprints the backup recorded',
  checks: 'foreign keys, object counts and the configured checks (not part of the RTO)',
};

/** How the report and the summary word a drill's result. */
export const RESULT_WORDS: Record<DrillRecord['result'], string> = {
  passed: 'passed',
  failed: 'FAILED',
  'over-objective': 'passed, OVER OBJECTIVE',
};

/**
 * Text for a Markdown table cell or list item: made printable, with what Markdown would read as
 * markup (table pipes, emphasis, links, HTML, code) escaped. Names come from the restored
 * database and the repository, so none of it is trusted to be plain.
 */
function md(text: string): string {
  return printable(text, 500).replace(/[\\`*_[\]<>|]/g, (character) => `\\${character}`);
}

function table(header: string[], rows: string[][]): string[] {
  return [
    `| ${header.join(' | ')} |`,
    `| ${header.map(() => '---').join(' | ')} |`,
    ...rows.map((row) => `| ${row.join(' | ')} |`),
  ];
}

const seconds = (value: number | null) => (value === null ? 'not reached' : value.toFixed(2));

function objectiveCells(value: number | null, objective: number | null, exceeded: boolean): string[] {
  return [
    value === null ? 'not reached' : formatElapsed(value),
    objective === null ? '—' : formatElapsed(objective),
    objective === null || value === null ? '' : exceeded ? '**exceeded**' : 'met',
  ];
}

/** The drill's report as a Markdown document: what `drill --report FILE` writes. */
export function drillReportMarkdown(result: DrillResult): string {
  const { record } = result;
  const short = (id: string, time: string) => `${id.slice(0, 8)} (${time})`;
  const lines = [
    `# Restore drill of ${md(record.database)}: ${RESULT_WORDS[record.result]}`,
    '',
    ...table(
      ['', ''],
      [
        ['database', md(record.database)],
        ['host', md(record.host)],
        ...(record.env === null ? [] : [['environment', md(record.env)]]),
        ['snapshot', short(record.snapshot, record.snapshotTime)],
        ['newest snapshot', short(record.newestSnapshot, record.newestSnapshotTime)],
        [
          'restored into',
          `${md(result.target)}${result.keptAs === undefined ? ', dropped afterwards' : `, kept as ${md(result.keptAs)}`}`,
        ],
        ['started', record.started],
        ['finished', record.finished],
        ['result', `**${RESULT_WORDS[record.result]}**`],
      ],
    ),
    '',
    '## Recovery time and recovery point',
    '',
    ...table(
      ['measure', 'value', 'objective', ''],
      [
        [
          'RTO (fetch + restore + verify)',
          ...objectiveCells(record.rtoSeconds, record.objectives.rtoSeconds, record.exceeded.includes('rto')),
        ],
        [
          'RPO (age of the newest snapshot at the start)',
          ...objectiveCells(record.rpoSeconds, record.objectives.rpoSeconds, record.exceeded.includes('rpo')),
        ],
      ],
    ),
    '',
    '## Phases',
    '',
    ...table(
      ['phase', 'seconds', 'what it covers'],
      Object.entries(PHASE_MEANINGS).map(([phase, meaning]) => [
        phase,
        seconds(record.phases[phase as DrillPhase]),
        meaning,
      ]),
    ),
    '',
  ];
  if (result.verification) {
    lines.push(
      '## Compared with the backup',
      '',
      ...table(
        ['compared', 'count', 'result'],
        verificationRows(result.verification).map((row) => [
          md(row.what),
          md(row.compared),
          row.differences.length === 0 ? 'all match' : `**${row.differences.length} differ**`,
        ]),
      ),
      '',
    );
  }
  if (result.checks.length > 0) {
    lines.push(
      '## Checks',
      '',
      ...table(
        ['check', 'result', 'found'],
        result.checks.map((check) => [
          md(check.name),
          check.status === 'failed' ? '**failed**' : check.status,
          md(check.summary),
        ]),
      ),
      '',
    );
  }
  if (result.objects.length > 0) {
    lines.push(
      '## Object counts',
      '',
      ...table(
        ['kind', 'backed up', 'found'],
        result.objects.map((object) => [
          object.kind,
          object.backedUp === null ? 'not recorded' : String(object.backedUp),
          object.backedUp !== null && object.backedUp !== object.found
            ? `**${object.found}**`
            : String(object.found),
        ]),
      ),
      '',
    );
  }
  if (record.failures.length > 0)
    lines.push('## Failures', '', ...record.failures.map((failure) => `- ${md(failure)}`), '');
  const notes = [
    ...result.checks.flatMap((check) => check.notes.map((note) => `${check.name}: ${note}`)),
    ...(result.verification
      ? verificationRows(result.verification).flatMap((row) =>
          row.notes.map((note) => `${row.what}: ${note}`),
        )
      : []),
    ...result.notes,
  ];
  if (notes.length > 0) lines.push('## Notes', '', ...notes.map((note) => `- ${md(note)}`), '');
  return lines.join('\n');
}
