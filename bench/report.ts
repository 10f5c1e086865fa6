export type Unit = 'MB/s' | 'MB' | 'MiB' | '%' | 's' | 'ms' | 'segments/s';

export interface Goal {
  op: '>=' | '<' | '<=';
  value: number;
  /** For the ratio to the baseline (strongbox ÷ baseline) rather than for strongbox's figure. */
  relative?: boolean;
}

/** A figure of another program (or of the machine) from the same run, or why there is none. */
export interface Baseline {
  what: string;
  value?: number;
  missing?: string;
}

export interface Row {
  measure: string;
  unit: Unit;
  /** Absent while strongbox cannot do what the baseline does yet: the row shows the baseline alone. */
  strongbox?: number;
  baseline: Baseline;
  goal?: Goal;
}

export interface JudgedRow extends Row {
  /** strongbox / baseline: above 1 is faster for rates, longer for times, bigger for sizes. */
  ratio?: number;
  verdict?: 'PASS' | 'MISS';
}

const SYMBOL: Record<Goal['op'], string> = { '>=': '≥', '<': '<', '<=': '≤' };

function meets(value: number, goal: Goal): boolean {
  if (goal.op === '>=') return value >= goal.value;
  if (goal.op === '<') return value < goal.value;
  return value <= goal.value;
}

export function judge(row: Row): JudgedRow {
  const { value } = row.baseline;
  const ratio =
    row.strongbox !== undefined && value !== undefined && value > 0 ? row.strongbox / value : undefined;
  const judged = row.goal?.relative ? ratio : row.strongbox;
  return {
    ...row,
    ...(ratio !== undefined ? { ratio } : {}),
    ...(row.goal && judged !== undefined ? { verdict: meets(judged, row.goal) ? 'PASS' : 'MISS' } : {}),
  };
}

function formatValue(value: number, unit: Unit): string {
  // One decimal up to 1000, so that a figure just under its goal does not print as the goal.
  const digits = Math.abs(value) >= 1000 ? 0 : Math.abs(value) >= 10 ? 1 : 2;
  return `${value.toFixed(digits)} ${unit}`;
}

function formatGoal(goal: Goal, unit: Unit): string {
  const target = goal.relative ? `${goal.value.toFixed(2)}×` : `${goal.value} ${unit}`;
  return `${SYMBOL[goal.op]} ${target}`;
}

function cells(row: JudgedRow): string[] {
  const { baseline } = row;
  return [
    row.measure,
    row.strongbox === undefined ? '—' : formatValue(row.strongbox, row.unit),
    baseline.value === undefined
      ? `${baseline.missing ?? 'not measured'} (${baseline.what})`
      : `${formatValue(baseline.value, row.unit)} (${baseline.what})`,
    row.ratio === undefined ? '—' : `${row.ratio.toFixed(2)}×`,
    row.goal ? formatGoal(row.goal, row.unit) : '—',
    row.verdict ?? '',
  ];
}

const HEADER = ['measure', 'strongbox', 'baseline (what)', 'ratio', 'goal', 'PASS/MISS'];

/** A Markdown table, padded so that it also reads as plain text. */
export function formatTable(rows: JudgedRow[]): string {
  const escape = (line: string[]) => line.map((cell) => cell.replaceAll('|', '\\|'));
  const body = rows.map((row) => escape(cells(row)));
  const lines = [HEADER, ...body];
  const widths = HEADER.map((_, column) => Math.max(...lines.map((line) => line[column]!.length)));
  const format = (line: string[]) =>
    `| ${line.map((cell, column) => cell.padEnd(widths[column]!)).join(' | ')} |`;
  const rule = `|${widths.map((width) => '-'.repeat(width + 2)).join('|')}|`;
  return [format(HEADER), rule, ...body.map(format)].join('\n');
}
