import type { BaseBackupReader } from '../../monitoring/base-backups.ts';
import { parsePhysicalSource } from '../record-schema.ts';
import { segmentOfLsn } from '../wal/segments.ts';
import { PHYSICAL_KIND } from './physical.ts';

/**
 * Where a physical backup's recovery window begins: the segment of its start LSN on its timeline,
 * and when it ended. The record is in the snapshot's body, which only full keys read; for others
 * no window is known.
 */
export const physicalBaseBackups: BaseBackupReader = {
  kind: PHYSICAL_KIND,
  async start(repository, snapshot) {
    let body;
    try {
      ({ body } = await repository.loadSnapshot(snapshot.id));
    } catch {
      return undefined;
    }
    const details = parsePhysicalSource(body.source, snapshot.id);
    return {
      snapshot: snapshot.id,
      timeline: details.timeline,
      startSegment: segmentOfLsn(details.timeline, details.startLsn, details.walSegmentSize),
      time: details.stopTime,
    };
  },
};
