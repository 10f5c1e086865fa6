/** Seconds between status lines off a terminal: STRONGBOX_PROGRESS_INTERVAL, else 10. */
function progressInterval(): number {
  const seconds = Number(process.env.STRONGBOX_PROGRESS_INTERVAL);
  return (seconds > 0 ? seconds : 10) * 1000;
}

/** How a command talks: data to stdout (JSON with --json), progress and messages to stderr. */
export class Output {
  private lastProgress = 0;
  private progressShown = false;
  /** Off a terminal: the latest status, and the timer that prints it while the command runs. */
  private latest = '';
  private timer: NodeJS.Timeout | undefined;

  constructor(
    readonly json: boolean,
    readonly quiet: boolean = false,
    private readonly terminal: boolean = Boolean(process.stderr.isTTY),
    private readonly intervalMs: number = progressInterval(),
  ) {}

  data(value: unknown): void {
    process.stdout.write(JSON.stringify(value, null, 2) + '\n');
  }

  line(text: string): void {
    process.stdout.write(text + '\n');
  }

  info(text: string): void {
    if (this.quiet) return;
    this.eraseProgress();
    process.stderr.write(text + '\n');
  }

  /** A warning or a problem found: printed even with --quiet, which only silences progress and information. */
  warn(text: string): void {
    this.eraseProgress();
    process.stderr.write(text + '\n');
  }

  /**
   * A status line: redrawn in place on a terminal. Otherwise (a log, cron's mail) the first one
   * is printed at once, and then the latest one every interval until clearProgress(), whether or
   * not a new one came: a long quiet stretch (a big table, a verification) still shows the run alive.
   */
  progress(text: string): void {
    if (this.quiet) return;
    if (!this.terminal) {
      this.latest = text;
      if (this.timer) return;
      process.stderr.write(text + '\n');
      this.timer = setInterval(() => process.stderr.write(this.latest + '\n'), this.intervalMs);
      this.timer.unref();
      return;
    }
    const now = Date.now();
    if (now - this.lastProgress < 100) return;
    process.stderr.write(`\r\x1b[K${text}`);
    this.progressShown = true;
    this.lastProgress = now;
  }

  /** Ends the status lines of a phase: erased on a terminal, no longer repeated otherwise. */
  clearProgress(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.eraseProgress();
  }

  private eraseProgress(): void {
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
