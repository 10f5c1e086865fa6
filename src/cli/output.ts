/** How a command talks: data to stdout (JSON with --json), progress and messages to stderr. */
export class Output {
  private lastProgress = 0;
  private progressShown = false;

  constructor(
    readonly json: boolean,
    readonly quiet: boolean = false,
    private readonly terminal: boolean = Boolean(process.stderr.isTTY),
  ) {}

  data(value: unknown): void {
    process.stdout.write(JSON.stringify(value, null, 2) + '\n');
  }

  line(text: string): void {
    process.stdout.write(text + '\n');
  }

  info(text: string): void {
    if (this.quiet) return;
    this.clearProgress();
    process.stderr.write(text + '\n');
  }

  /** A warning or a problem found: printed even with --quiet, which only silences progress and information. */
  warn(text: string): void {
    this.clearProgress();
    process.stderr.write(text + '\n');
  }

  /** A status line: redrawn in place on a terminal, a plain log line every 10 s otherwise. */
  progress(text: string): void {
    if (this.quiet) return;
    const now = Date.now();
    if (this.terminal) {
      if (now - this.lastProgress < 100) return;
      process.stderr.write(`\r\x1b[K${text}`);
      this.progressShown = true;
    } else {
      if (now - this.lastProgress < 10_000) return;
      process.stderr.write(text + '\n');
    }
    this.lastProgress = now;
  }

  clearProgress(): void {
    if (this.progressShown) {
      process.stderr.write('\r\x1b[K');
      this.progressShown = false;
    }
  }
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${unit === 0 ? Math.round(value) : value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

export function formatRate(bytes: number, ms: number): string {
  return `${formatBytes(ms > 0 ? (bytes * 1000) / ms : 0)}/s`;
}

/** Left-aligned columns for a human-readable table. */
export function table(rows: string[][]): string {
  const widths =
    rows[0]?.map((_, column) => Math.max(...rows.map((row) => (row[column] ?? '').length))) ?? [];
  return rows
    .map((row) =>
      row
        .map((cell, column) => cell.padEnd(widths[column]!))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
