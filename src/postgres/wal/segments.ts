/**
 * The names of the files PostgreSQL archives (pg_wal/): a segment is `TTTTTTTTXXXXXXXXYYYYYYYY`,
 * its timeline, then its number split into a "log" (the high 32 bits of its start LSN) and the
 * segment within that log. With the default 16 MB segments a log holds 256 of them, so the
 * third field runs 00000000 to 000000FF.
 */

export type WalFileKind = 'segment' | 'partial' | 'backup' | 'history';

export interface WalFileName {
  name: string;
  kind: WalFileKind;
  timeline: number;
  /** The segment number (log × segments per log + segment), for kinds other than history. */
  log?: number;
  segment?: number;
}

const SEGMENT = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$/;
const PARTIAL = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.partial$/;
const BACKUP = /^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\.[0-9A-F]{8}\.backup$/;
const HISTORY = /^([0-9A-F]{8})\.history$/;

/** Parses a WAL file name, or undefined for any other name. */
export function parseWalFileName(name: string): WalFileName | undefined {
  const history = HISTORY.exec(name);
  if (history) return { name, kind: 'history', timeline: parseInt(history[1]!, 16) };
  for (const [kind, pattern] of [
    ['segment', SEGMENT],
    ['partial', PARTIAL],
    ['backup', BACKUP],
  ] as const) {
    const match = pattern.exec(name);
    if (match)
      return {
        name,
        kind,
        timeline: parseInt(match[1]!, 16),
        log: parseInt(match[2]!, 16),
        segment: parseInt(match[3]!, 16),
      };
  }
  return undefined;
}

export function isSegmentName(name: string): boolean {
  return SEGMENT.test(name);
}

const hex8 = (value: number) => value.toString(16).toUpperCase().padStart(8, '0');

/** How many segments of this size one log (4 GiB of WAL) holds. */
export function segmentsPerLog(segmentSize: number): number {
  return Math.floor(0x1_0000_0000 / segmentSize);
}

/** The segment after `name` on the same timeline. */
export function nextSegment(name: string, segmentSize: number): string {
  const parsed = parseWalFileName(name);
  if (parsed?.kind !== 'segment') throw new Error(`not a WAL segment name: ${name}`);
  let log = parsed.log!;
  let segment = parsed.segment! + 1;
  if (segment >= segmentsPerLog(segmentSize)) {
    log += 1;
    segment = 0;
  }
  return hex8(parsed.timeline) + hex8(log) + hex8(segment);
}

/** The segment's position on its timeline: log × segments per log + segment. */
export function segmentNumber(name: string, segmentSize: number): number {
  const parsed = parseWalFileName(name);
  if (parsed?.log === undefined) throw new Error(`not a WAL segment name: ${name}`);
  return parsed.log * segmentsPerLog(segmentSize) + parsed.segment!;
}

/** The name of the segment numbered `number` on `timeline`. */
export function segmentName(timeline: number, number: number, segmentSize: number): string {
  const perLog = segmentsPerLog(segmentSize);
  return hex8(timeline) + hex8(Math.floor(number / perLog)) + hex8(number % perLog);
}

/** The segment holding the byte at `lsn` ("16/B374D848") on `timeline`. */
export function segmentOfLsn(timeline: number, lsn: string, segmentSize: number): string {
  return segmentName(timeline, Number(parseLsn(lsn) / BigInt(segmentSize)), segmentSize);
}

/** An LSN as PostgreSQL prints it, `X/Y`, as a number of bytes. */
export function parseLsn(lsn: string): bigint {
  const match = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(lsn);
  if (!match) throw new Error(`not an LSN: ${lsn}`);
  return (BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`);
}

export function formatLsn(value: bigint): string {
  return `${(value >> 32n).toString(16).toUpperCase()}/${(value & 0xffff_ffffn).toString(16).toUpperCase()}`;
}

/** The history file of a timeline: `00000002.history`. */
export function historyFileName(timeline: number): string {
  return `${hex8(timeline)}.history`;
}
