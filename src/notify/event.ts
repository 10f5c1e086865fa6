/**
 * What a notification is about. Commands' outcomes become events (cli/notify-sink.ts), and so
 * will whatever else watches the backups (a drill's result, a health check's change of state):
 * this module knows nothing of where an event comes from.
 */

/** Every event a target can ask for, in the order the documentation lists them. */
export const EVENT_NAMES = [
  'backup-failed',
  'backup-succeeded',
  'check-failed',
  'forget-failed',
  'prune-failed',
  'copy-failed',
  'drill-failed',
  'drill-over-objective',
  'health-changed',
] as const;

export type EventName = (typeof EVENT_NAMES)[number];

/**
 * What a target hears of when it names no events: what went wrong. A health change is left out,
 * since it is as often a recovery: a target asks for it by name.
 */
export const DEFAULT_EVENTS: readonly EventName[] = EVENT_NAMES.filter(
  (name) => name.endsWith('-failed') || name === 'drill-over-objective',
);

/** What the event concerns, as metrics label it. */
export interface EventSubject {
  /** The repository location, without credentials. */
  repository?: string;
  host?: string;
  kind?: string;
  name?: string;
  env?: string;
}

export interface NotificationEvent {
  event: EventName;
  /** When it happened: the operation's end. */
  time: Date;
  /** What ran, as a command line names it: 'backup postgres', 'check', 'drill', 'health'. */
  operation: string;
  result: 'success' | 'failure';
  subject: EventSubject;
  /** Of a failure: its one-line message, and the exit code it ended with. */
  error?: { message: string; exitCode?: number };
  durationSeconds?: number;
  /** The snapshot written or read. */
  snapshot?: string;
  /** Figures by name, in bytes and seconds: size_bytes, stored_bytes, rto_seconds… */
  figures?: Record<string, number>;
  /** Further facts by name, shown as they are: an objective, a health check's old and new state. */
  details?: Record<string, string>;
}
