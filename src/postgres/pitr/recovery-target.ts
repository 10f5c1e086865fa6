import { ConfigError } from '../../errors.ts';
import { parseLsn } from '../wal/segments.ts';

/** Where recovery stops: PostgreSQL's recovery_target_* settings, one of them. */
export type RecoveryTarget =
  /** `text` as given (PostgreSQL reads microseconds and zones a Date would lose), `time` to compare. */
  | { kind: 'time'; time: Date; text: string }
  | { kind: 'lsn'; lsn: string }
  | { kind: 'xid'; xid: string }
  | { kind: 'name'; name: string }
  | { kind: 'immediate' }
  /** Replay everything archived: recovery ends at the end of the archive. */
  | { kind: 'end' };

export type TargetAction = 'promote' | 'pause' | 'shutdown';

export interface RecoverySettings {
  target: RecoveryTarget;
  /** 'latest' (PostgreSQL's default), 'current', or a timeline number. */
  timeline: 'latest' | 'current' | number;
  action: TargetAction;
  restoreCommand: string;
}

/** The recovery target a command line gives: at most one of time, lsn, xid, name, immediate. */
export function recoveryTarget(options: {
  time?: string;
  lsn?: string;
  xid?: string;
  name?: string;
  immediate?: boolean;
}): RecoveryTarget {
  const given = (['time', 'lsn', 'xid', 'name', 'immediate'] as const).filter(
    (key) => options[key] !== undefined && options[key] !== false,
  );
  if (given.length > 1)
    throw new ConfigError(`a recovery has one target, not ${given.join(' and ')}`, {
      hint: 'Give one of a time, an LSN, a transaction id, a restore point name, or immediate.',
    });
  if (options.time !== undefined) {
    const time = new Date(options.time);
    if (Number.isNaN(time.getTime()))
      throw new ConfigError(`${JSON.stringify(options.time)} is not a time`, {
        hint: 'Give an ISO time with its zone, e.g. "2026-11-20 14:30:00+00".',
      });
    // PostgreSQL would read a time without a zone in the server's TimeZone, this process in its own.
    if (!/\d\d:\d\d(:\d\d(\.\d+)?)?\s*(Z|[+-]\d\d(:?\d\d)?)$/i.test(options.time.trim()))
      throw new ConfigError(`${JSON.stringify(options.time)} has no time zone`, {
        hint: 'Add one, e.g. "2026-11-20 14:30:00+00" or "2026-11-20T14:30:00Z".',
      });
    if (/[\0\n\r']/.test(options.time))
      throw new ConfigError(`${JSON.stringify(options.time)} is not a time`);
    return { kind: 'time', time, text: options.time };
  }
  if (options.lsn !== undefined) {
    try {
      parseLsn(options.lsn);
    } catch {
      throw new ConfigError(`${JSON.stringify(options.lsn)} is not an LSN`, {
        hint: 'Give it as PostgreSQL prints it, e.g. 0/3000028.',
      });
    }
    return { kind: 'lsn', lsn: options.lsn.toUpperCase() };
  }
  if (options.xid !== undefined) {
    if (!/^\d{1,20}$/.test(options.xid))
      throw new ConfigError(`${JSON.stringify(options.xid)} is not a transaction id`);
    return { kind: 'xid', xid: options.xid };
  }
  if (options.name !== undefined) {
    if (options.name.length === 0 || options.name.length > 63 || /[\0\n\r]/.test(options.name))
      throw new ConfigError(`${JSON.stringify(options.name.slice(0, 100))} is not a restore point name`);
    return { kind: 'name', name: options.name };
  }
  if (options.immediate) return { kind: 'immediate' };
  return { kind: 'end' };
}

export function describeTarget(target: RecoveryTarget): string {
  switch (target.kind) {
    case 'time':
      return `time ${target.text}`;
    case 'lsn':
      return `LSN ${target.lsn}`;
    case 'xid':
      return `transaction ${target.xid}`;
    case 'name':
      return `restore point ${JSON.stringify(target.name)}`;
    case 'immediate':
      return 'the end of the base backup';
    case 'end':
      return 'the end of the archived WAL';
  }
}

/** A string literal of postgresql.conf: single-quoted, quotes doubled, no line breaks. */
export function confLiteral(value: string): string {
  if (/[\0\n\r]/.test(value)) throw new ConfigError('a setting cannot hold a line break');
  return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "''")}'`;
}

/** The lines a restore appends to postgresql.auto.conf, beside recovery.signal. */
export function recoveryConf(settings: RecoverySettings): string {
  const lines = [
    '# Written by strongbox restore: the recovery this data directory was restored for.',
    `restore_command = ${confLiteral(settings.restoreCommand)}`,
  ];
  const { target } = settings;
  if (target.kind === 'time') lines.push(`recovery_target_time = ${confLiteral(target.text)}`);
  if (target.kind === 'lsn') lines.push(`recovery_target_lsn = ${confLiteral(target.lsn)}`);
  if (target.kind === 'xid') lines.push(`recovery_target_xid = ${confLiteral(target.xid)}`);
  if (target.kind === 'name') lines.push(`recovery_target_name = ${confLiteral(target.name)}`);
  if (target.kind === 'immediate') lines.push(`recovery_target = 'immediate'`);
  lines.push(`recovery_target_timeline = ${confLiteral(String(settings.timeline))}`);
  if (target.kind !== 'end') lines.push(`recovery_target_action = ${confLiteral(settings.action)}`);
  return `\n${lines.join('\n')}\n`;
}
