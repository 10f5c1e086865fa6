import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ArchiveFormatError,
  ArchiveReader,
  TruncatedArchiveError,
  UnsupportedArchiveError,
  type ArchiveHeader,
  type TocEntry,
} from '../src/postgres/logical/archive-reader.ts';
import { fingerprintRows } from '../src/postgres/logical/fingerprint.ts';
import { seededBytes } from './helpers/data.ts';
import { startCluster, type TestCluster } from './helpers/postgres.ts';

interface Block {
  entry: TocEntry;
  start: number;
  end: number;
  rows: number;
  digest: string | undefined;
}

interface Parsed {
  header: ArchiveHeader | undefined;
  entries: TocEntry[];
  blocks: Block[];
}

/** Parses `dump` pushed in pieces of the sizes `nextSize` gives, then ends it. */
function parse(dump: Uint8Array, nextSize: () => number = () => dump.length): Parsed {
  const parsed: Parsed = { header: undefined, entries: [], blocks: [] };
  let start = -1;
  const reader = new ArchiveReader({
    header: (header) => (parsed.header = header),
    tocEntry: (entry) => parsed.entries.push(entry),
    dataStart: ({ offset }) => (start = offset),
    dataEnd: ({ entry, offset, rows, fingerprint }) =>
      parsed.blocks.push({ entry, start, end: offset, rows, digest: fingerprint }),
  });
  for (let at = 0; at < dump.length;) {
    const size = Math.max(1, nextSize());
    reader.push(dump.subarray(at, at + size));
    at += size;
  }
  reader.end();
  return parsed;
}

function parseFails(dump: Uint8Array): unknown {
  try {
    parse(dump);
  } catch (error) {
    return error;
  }
  return undefined;
}

/** Piece sizes from 1 to max, the same on every run. */
function seededSizes(max: number): () => number {
  const bytes = seededBytes('archive piece sizes', 1 << 16);
  let at = 0;
  return () => (bytes.readUInt32LE((at = (at + 4) % (bytes.length - 4))) % max) + 1;
}

/** Lines of COPY text output without their "\n", as TableFingerprint defines a row. */
function copyRows(output: Buffer): Buffer[] {
  const rows: Buffer[] = [];
  for (let start = 0; start < output.length;) {
    const newline = output.indexOf(0x0a, start);
    rows.push(output.subarray(start, newline));
    start = newline + 1;
  }
  return rows;
}

function toolEnv(cluster: TestCluster, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PG')));
  return { ...env, ...cluster.env(), ...extra };
}

function runTool(
  cluster: TestCluster,
  tool: string,
  args: string[],
  extraEnv: Record<string, string> = {},
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const child = spawn(path.join(cluster.binDir, tool), args, {
      env: toolEnv(cluster, extraEnv),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const stdout: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (data: Buffer) => stdout.push(data));
    child.stderr.on('data', (data: Buffer) => (stderr += data.toString()));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0
        ? resolve(Buffer.concat(stdout))
        : reject(new Error(`${tool} exited with ${code}: ${stderr}`)),
    );
  });
}

/** The table's rows as the restore side reads them: COPY in pg_dump's column order and session settings. */
async function copyFromDatabase(
  cluster: TestCluster,
  database: string,
  copyStatement: string,
): Promise<Buffer> {
  const command = copyStatement.replace(/ FROM stdin;\n$/, ' TO STDOUT');
  expect(command).not.toBe(copyStatement);
  return runTool(cluster, 'psql', ['-X', '-q', '-d', database, '-c', command], {
    PGOPTIONS: '-c datestyle=ISO -c intervalstyle=postgres -c extra_float_digits=3',
  });
}

/** A WriteInt of a non-negative value, with the 4-byte ints pg_dump writes. */
function archiveInt(value: number): Buffer {
  const bytes = Buffer.alloc(5);
  bytes.writeUInt32LE(value, 1);
  return bytes;
}

/**
 * The archive with the COPY data of each TABLE DATA block cut into chunks of `size` bytes, so rows
 * span chunks and chunks hold several rows, as a pg_dump that buffers its output writes them.
 */
function rechunk(dump: Buffer, blocks: Block[], size: number): Buffer {
  const parts = [dump.subarray(0, blocks[0]!.start)];
  for (const block of blocks) {
    const bytes = dump.subarray(block.start, block.end);
    if (block.entry.desc !== 'TABLE DATA') {
      parts.push(bytes);
      continue;
    }
    const header = 1 + 5; // type byte and dump id
    const data: Buffer[] = [];
    for (let at = header, length; (length = bytes.readUInt32LE(at + 1)) > 0; at += 5 + length) {
      data.push(bytes.subarray(at + 5, at + 5 + length));
    }
    const copyText = Buffer.concat(data);
    parts.push(bytes.subarray(0, header));
    for (let at = 0; at < copyText.length; at += size) {
      const chunk = copyText.subarray(at, at + size);
      parts.push(archiveInt(chunk.length), chunk);
    }
    parts.push(archiveInt(0));
  }
  return Buffer.concat(parts);
}

const tableName = (entry: TocEntry) => `${entry.namespace}.${entry.tag}`;
const summary = (blocks: Block[]) => blocks.map(({ entry, rows, digest }) => [entry.dumpId, rows, digest]);
const HUGE_ROW_BYTES = 1 << 20;

describe('ArchiveReader on pg_dump -Fc -Z0 output', () => {
  let cluster: TestCluster;
  let dump: Buffer;
  let whole: Parsed;

  beforeAll(async () => {
    cluster = await startCluster();
    await cluster.loadDataset('shop', 0.02);
    await cluster.psql(
      `create schema extra;
       create table extra.empty (id int, note text);
       create table extra.huge (id int, picture bytea, body text);
       insert into extra.huge values
         (1, decode(repeat('00ff10', 400000), 'hex'), repeat('long text ', 150000)),
         (2, '\\x00', 'short');
       -- Rows that look like COPY's terminator or its padding, and are data.
       create table extra.lookalikes (value text);
       insert into extra.lookalikes values (''), (''), ('.'), (E'\\\\.'), (null);
       create table extra.no_columns ();
       insert into extra.no_columns default values;
       insert into extra.no_columns default values;
       select lo_from_bytea(0, 'a large object');`,
      'shop',
    );
    dump = await runTool(cluster, 'pg_dump', ['--format=custom', '--compress=0', '-d', 'shop']);
    whole = parse(dump);
  });

  afterAll(async () => {
    await cluster?.stop();
  });

  it('reads the header and the table of contents', () => {
    expect(whole.header).toMatchObject({ archiveVersion: '1.14.0', database: 'shop' });
    expect(whole.header!.serverVersion).toMatch(/^\d+\.\d+/);
    expect(whole.header!.pgDumpVersion).toMatch(/^\d+\.\d+/);
    const byId = new Map(whole.entries.map((entry) => [entry.dumpId, entry]));
    const customers = whole.entries.find(
      (entry) => entry.desc === 'TABLE DATA' && entry.tag === 'customers',
    )!;
    expect(customers).toMatchObject({ namespace: 'shop', owner: 'postgres', hasData: true });
    expect(customers.copyStatement).toMatch(/^COPY shop\.customers \(id, email, .*\) FROM stdin;\n$/);
    expect(byId.get(customers.table!.dumpId!)).toMatchObject({
      desc: 'TABLE',
      tag: 'customers',
      namespace: 'shop',
    });
    expect(whole.entries.find((entry) => entry.desc === 'INDEX')).toMatchObject({ hasData: false });
  });

  it('finds every table, with its row count and the fingerprint of its rows in the database', async () => {
    const tables = await cluster.psql(
      `select n.nspname || '.' || c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace
       where c.relkind = 'r' and n.nspname not in ('pg_catalog', 'information_schema') order by 1`,
      'shop',
    );
    const dataBlocks = whole.blocks.filter((block) => block.entry.desc === 'TABLE DATA');
    expect(dataBlocks.map((block) => tableName(block.entry)).sort()).toEqual(tables.trim().split('\n'));
    for (const block of dataBlocks) {
      const count = Number(await cluster.psql(`select count(*) from ${tableName(block.entry)}`, 'shop'));
      const rows = copyRows(await copyFromDatabase(cluster, 'shop', block.entry.copyStatement!));
      expect({ table: tableName(block.entry), rows: block.rows, digest: block.digest }).toEqual({
        table: tableName(block.entry),
        rows: count,
        digest: fingerprintRows(rows),
      });
    }
    const rowsOf = (name: string) => dataBlocks.find((block) => tableName(block.entry) === name)!.rows;
    expect(rowsOf('extra.empty')).toBe(0);
    expect(rowsOf('extra.lookalikes')).toBe(5);
    expect(rowsOf('extra.no_columns')).toBe(2);
    expect(rowsOf('shop.customers')).toBeGreaterThan(1000);
  });

  it('passes large objects through as a block without rows', () => {
    const largeObjects = whole.blocks.filter((block) => block.entry.desc === 'BLOBS');
    expect(largeObjects).toHaveLength(1);
    expect(largeObjects[0]!.rows).toBe(0);
  });

  it('gives each block where it starts and ends, in archive order up to the end', () => {
    let previous = 0;
    for (const block of whole.blocks) {
      expect(block.start).toBe(previous === 0 ? block.start : previous);
      expect(block.end).toBeGreaterThan(block.start);
      expect(dump[block.start], 'a data block starts with its type byte').toBe(
        block.entry.desc === 'BLOBS' ? 3 : 1,
      );
      previous = block.end;
    }
    expect(previous).toBe(dump.length);
    const huge = whole.blocks.find((block) => block.entry.tag === 'huge')!;
    expect(huge.end - huge.start).toBeGreaterThan(HUGE_ROW_BYTES);
    expect(huge.rows).toBe(2);
  });

  it('reports the same whatever the piece boundaries', () => {
    for (const sizes of [() => 1, () => 7, () => 4096, seededSizes(10_000)]) {
      expect(parse(dump, sizes)).toEqual(whole);
    }
  });

  it('reads rows that span data chunks, and chunks of several rows', () => {
    for (const size of [5, 100, 128 * 1024]) {
      const rechunked = rechunk(dump, whole.blocks, size);
      const parsed = parse(rechunked, size === 100 ? seededSizes(10_000) : undefined);
      expect(summary(parsed.blocks)).toEqual(summary(whole.blocks));
    }
  });

  it('reads a dump written to a file, whose TOC records data offsets', async () => {
    const directory = await mkdtemp(path.join(os.tmpdir(), 'strongbox-archive-'));
    try {
      const file = path.join(directory, 'shop.dump');
      await runTool(cluster, 'pg_dump', ['--format=custom', '--compress=0', '-d', 'shop', '-f', file]);
      expect(summary(parse(await readFile(file)).blocks)).toEqual(summary(whole.blocks));
    } finally {
      await rm(directory, { recursive: true, force: true });
    }
  });

  it('reads the dump of an empty database', async () => {
    await cluster.createDatabase('empty');
    const parsed = parse(
      await runTool(cluster, 'pg_dump', ['--format=custom', '--compress=0', '-d', 'empty']),
    );
    expect(parsed.header).toMatchObject({ database: 'empty' });
    expect(parsed.entries.map((entry) => entry.desc)).toContain('ENCODING');
    expect(parsed.blocks).toEqual([]);
  });

  it('throws at end() when the archive is cut anywhere', () => {
    const firstBlock = whole.blocks[0]!;
    const huge = whole.blocks.find((block) => block.entry.tag === 'huge')!;
    // The huge table's first row is over a MiB long, with its only "\n" at its end.
    const firstRowEnd = Buffer.from(dump).indexOf(0x0a, huge.start + HUGE_ROW_BYTES) + 1;
    const cuts = [
      0,
      3,
      12,
      Math.floor(firstBlock.start / 2),
      firstBlock.start,
      firstBlock.start + 3,
      firstRowEnd - 100,
      firstRowEnd,
      firstBlock.end,
      dump.length - 3,
      dump.length - 1,
    ];
    for (const cut of cuts) {
      const reader = new ArchiveReader();
      reader.push(dump.subarray(0, cut));
      expect(() => reader.end(), `cut at ${cut}`).toThrow(TruncatedArchiveError);
    }
  });

  it('throws rather than misread when a byte of a chunk length is flipped', () => {
    const tables = whole.blocks.filter((block) => block.entry.desc === 'TABLE DATA');
    // A block's first chunk length follows its type byte and dump id; its last int is the zero
    // length that ends it.
    const lengths = tables.flatMap((block) => [block.start + 1 + 5, block.end - 5]);
    for (const at of lengths) {
      for (let byte = at; byte < at + 5; byte++) {
        for (const mask of [0x01, 0x80, 0xff]) {
          const corrupt = Buffer.from(dump);
          corrupt[byte]! ^= mask;
          expect(parseFails(corrupt), `byte ${byte} ^ ${mask}`).toBeInstanceOf(ArchiveFormatError);
        }
      }
    }
  });

  it('reads the header pg_dump 16 writes (archive 1.15: a compression algorithm byte)', () => {
    // "PGDMP", 3 version bytes, int size, offset size, format: then 1.14's compression level int.
    const compressionAt = 11;
    expect([...dump.subarray(compressionAt, compressionAt + 5)]).toEqual([0, 0, 0, 0, 0]);
    const version15 = Buffer.concat([
      dump.subarray(0, compressionAt),
      Buffer.of(0),
      dump.subarray(compressionAt + 5),
    ]);
    version15[6] = 15;
    const parsed = parse(version15);
    expect(parsed.header!.archiveVersion).toBe('1.15.0');
    const shift = (offset: number) => offset - 4;
    expect(parsed.blocks).toEqual(
      whole.blocks.map((block) => ({
        ...block,
        start: shift(block.start),
        end: shift(block.end),
      })),
    );
  });

  it('refuses other archive versions, formats and compressed archives', async () => {
    const withByte = (at: number, value: number) => {
      const copy = Buffer.from(dump);
      copy[at] = value;
      return copy;
    };
    expect(parseFails(withByte(6, 16))).toBeInstanceOf(UnsupportedArchiveError);
    expect(parseFails(withByte(6, 13))).toBeInstanceOf(UnsupportedArchiveError);
    expect(parseFails(withByte(10, 5))).toBeInstanceOf(UnsupportedArchiveError);
    const compressed = await runTool(cluster, 'pg_dump', ['--format=custom', '-d', 'postgres']);
    expect(parseFails(compressed)).toBeInstanceOf(UnsupportedArchiveError);
    const plain = await runTool(cluster, 'pg_dump', ['-d', 'postgres']);
    const error = parseFails(plain);
    expect(error).toBeInstanceOf(ArchiveFormatError);
    expect(error).not.toBeInstanceOf(UnsupportedArchiveError);
  });

  it('throws on bytes after the last data block', () => {
    expect(parseFails(Buffer.concat([dump, Buffer.of(1)]))).toBeInstanceOf(ArchiveFormatError);
  });
});
