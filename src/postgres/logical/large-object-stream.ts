import { spawn } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import path from 'node:path';
import { SourceError } from '../../errors.ts';
import { stopOnInterrupt } from '../../util/interrupt.ts';
import { readBackLargeObjects, type LargeObjectMetadata } from './large-object-queries.ts';
import { firstError, toolEnvironment, withLargeStdioBuffers } from '../tools.ts';
import type { CheckTarget } from '../verify/verify.ts';

/** What the database verified holds of one large object. */
export interface FoundLargeObject extends LargeObjectMetadata {
  /** Its size and SHA-256, when its contents were read. */
  bytes?: number;
  sha256?: string;
}

/**
 * Reads every large object of the target database, one psql COPY in one snapshot
 * (readBackLargeObjects), hashing each object's bytes as they stream: memory holds one piece of
 * output, never an object. Returns them by oid, in decimal.
 */
export async function readLargeObjects(
  target: CheckTarget,
  contents: boolean,
): Promise<Map<string, FoundLargeObject>> {
  const args = ['-X', '-w', '-q', '-v', 'ON_ERROR_STOP=1', '-c', readBackLargeObjects(contents)];
  const command = withLargeStdioBuffers(path.join(target.tools.binDir, 'psql'), args);
  const child = spawn(command.command, command.args, {
    env: toolEnvironment(target.connection.env),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  stopOnInterrupt(child);
  let stderr = '';
  child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
  const closed = new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  });
  const reader = new LargeObjectCopyReader();
  let malformed: unknown;
  for await (const piece of child.stdout as AsyncIterable<Buffer>) {
    if (malformed !== undefined) continue;
    try {
      reader.push(piece);
    } catch (error) {
      malformed = error;
    }
  }
  const code = await closed.catch((cause: unknown) => {
    throw new SourceError(`cannot run psql to read back the large objects of ${target.database}`, { cause });
  });
  if (code !== 0) {
    throw new SourceError(
      `cannot read back the large objects of ${target.database}: ${firstError(stderr, 'psql') ?? `psql exit ${code}`}`,
    );
  }
  if (malformed !== undefined) throw malformed;
  reader.end();
  return reader.found;
}

/** PGCOPY\n\377\r\n\0, then a flags int32 and the length of a header extension. */
const SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');
const HEADER_BYTES = SIGNATURE.length + 4 + 4;
/** The header flag saying rows carry OIDs, which none of ours do. */
const HAS_OIDS = 1 << 16;
const enum Field {
  Oid,
  Size,
  Offset,
  Bytes,
  Metadata,
}
const FIELDS = 5;
const NULL_FIELD = -1;
const END_OF_DATA = -1;

const enum Step {
  Header,
  Extension,
  FieldCount,
  FieldLength,
  FieldValue,
  End,
}

interface ObjectBeingRead {
  oid: number;
  size: number | null;
  bytes: number;
  hash: Hash | undefined;
  metadata: LargeObjectMetadata | undefined;
}

/**
 * Reads readBackLargeObjects' binary COPY output, pushed in pieces split anywhere: fields are
 * gathered (small ones, copied only when they span pieces), the bytes of each chunk hashed where
 * they lie. It checks that each object's chunks come together, in order, from offset 0 to its
 * size, and that no object comes twice.
 */
export class LargeObjectCopyReader {
  readonly found = new Map<string, FoundLargeObject>();
  private step = Step.Header;
  /** Bytes the field or header being gathered needs, and those gathered while it spans pieces. */
  private want = HEADER_BYTES;
  private gathered: Buffer[] = [];
  private have = 0;
  private field = Field.Oid;
  private valueLeft = 0;
  private row = { oid: 0, size: null as number | null, offset: 0 };
  private current: ObjectBeingRead | undefined;

  push(input: Uint8Array): void {
    const piece = Buffer.from(input.buffer, input.byteOffset, input.length);
    let at = 0;
    while (at < piece.length) {
      if (this.step === Step.End) throw malformed('bytes follow the end of the data');
      if (this.step === Step.FieldValue && this.field === Field.Bytes) {
        const take = Math.min(this.valueLeft, piece.length - at);
        this.current!.hash?.update(piece.subarray(at, at + take));
        this.current!.bytes += take;
        this.valueLeft -= take;
        at += take;
        if (this.valueLeft === 0) this.nextField();
        continue;
      }
      const take = Math.min(this.want - this.have, piece.length - at);
      let value: Buffer;
      if (this.have === 0 && take === this.want) {
        value = piece.subarray(at, at + take);
      } else {
        this.gathered.push(Buffer.from(piece.subarray(at, at + take)));
        this.have += take;
        at += take;
        if (this.have < this.want) continue;
        value = Buffer.concat(this.gathered, this.have);
        this.gathered = [];
        this.have = 0;
        this.accept(value);
        continue;
      }
      at += take;
      this.accept(value);
    }
  }

  /** Declares the output complete; throws unless it ended as COPY ends. */
  end(): void {
    if (this.step !== Step.End) throw malformed('the data ends early');
  }

  private accept(value: Buffer): void {
    switch (this.step) {
      case Step.Header: {
        if (!value.subarray(0, SIGNATURE.length).equals(SIGNATURE)) throw malformed('no PGCOPY signature');
        if (value.readUInt32BE(SIGNATURE.length) & HAS_OIDS) throw malformed('rows with OIDs');
        const extension = value.readUInt32BE(SIGNATURE.length + 4);
        return extension > 0 ? this.expect(Step.Extension, extension) : this.expect(Step.FieldCount, 2);
      }
      case Step.Extension:
        return this.expect(Step.FieldCount, 2);
      case Step.FieldCount: {
        const fields = value.readInt16BE(0);
        if (fields === END_OF_DATA) {
          this.finishObject();
          this.step = Step.End;
          return;
        }
        if (fields !== FIELDS) throw malformed(`a row of ${fields} fields`);
        this.field = Field.Oid;
        return this.expect(Step.FieldLength, 4);
      }
      case Step.FieldLength: {
        const length = value.readInt32BE(0);
        if (length === NULL_FIELD) return this.acceptField(null);
        if (length < 0) throw malformed(`a field of length ${length}`);
        if (length === 0) return this.acceptField(Buffer.alloc(0));
        if (this.field === Field.Bytes) {
          this.valueLeft = length;
          this.step = Step.FieldValue;
          return;
        }
        return this.expect(Step.FieldValue, length);
      }
      case Step.FieldValue:
        return this.acceptField(value);
      case Step.End:
        throw malformed('bytes follow the end of the data');
    }
  }

  private expect(step: Step, bytes: number): void {
    this.step = step;
    this.want = bytes;
  }

  private acceptField(value: Buffer | null): void {
    const { row } = this;
    switch (this.field) {
      case Field.Oid:
        row.oid = fixed(value, 4, 'oid').readUInt32BE(0);
        break;
      case Field.Size:
        row.size = value === null ? null : Number(fixed(value, 8, 'size').readBigInt64BE(0));
        break;
      case Field.Offset:
        row.offset = Number(fixed(value, 8, 'offset').readBigInt64BE(0));
        this.startChunk();
        break;
      case Field.Bytes:
        if ((value === null) !== (row.size === null))
          throw malformed(`large object ${row.oid} without bytes`);
        break;
      case Field.Metadata:
        if ((value !== null) !== (row.offset === 0))
          throw malformed(`large object ${row.oid}: metadata on a chunk other than its first`);
        if (value !== null)
          this.current!.metadata = JSON.parse(value.toString('utf8')) as LargeObjectMetadata;
        break;
    }
    this.nextField();
  }

  private nextField(): void {
    if (++this.field === FIELDS) this.expect(Step.FieldCount, 2);
    else this.expect(Step.FieldLength, 4);
  }

  private startChunk(): void {
    const { oid, size, offset } = this.row;
    if (offset === 0) {
      this.finishObject();
      if (this.found.has(String(oid))) throw malformed(`large object ${oid} comes twice`);
      this.current = {
        oid,
        size,
        bytes: 0,
        hash: size === null ? undefined : createHash('sha256'),
        metadata: undefined,
      };
      return;
    }
    const current = this.current;
    if (current?.oid !== oid || current.size !== size || current.bytes !== offset)
      throw malformed(`a chunk of large object ${oid} at offset ${offset}, out of order`);
  }

  private finishObject(): void {
    const object = this.current;
    if (!object) return;
    this.current = undefined;
    if (object.size !== null && object.bytes !== object.size)
      throw malformed(`large object ${object.oid}: ${object.bytes} of its ${object.size} bytes`);
    this.found.set(String(object.oid), {
      ...object.metadata!,
      ...(object.hash ? { bytes: object.bytes, sha256: object.hash.digest('hex') } : {}),
    });
  }
}

function fixed(value: Buffer | null, length: number, what: string): Buffer {
  if (value?.length !== length) throw malformed(`a ${what} of ${value?.length ?? 'no'} bytes`);
  return value;
}

function malformed(problem: string): SourceError {
  return new SourceError(`cannot read back the large objects: unexpected COPY output (${problem})`);
}
