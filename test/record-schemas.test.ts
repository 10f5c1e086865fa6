import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { zstdCompress } from '../src/compression/zstd.ts';
import { seal } from '../src/crypto/aead.ts';
import {
  backup,
  ConfigError,
  filesSource,
  formatPath,
  MalformedRecordError,
  openRepository,
  stdinSource,
} from '../src/index.ts';
import { acquireLock, listLocks } from '../src/repository/locks.ts';
import { splitSigned } from '../src/repository/signed-object.ts';
import { blobAad, PACK_MAGIC, parsePackTable, TRAILER_MAGIC } from '../src/repository/pack-format.ts';
import { packName } from '../src/repository/blob.ts';
import { PackTable, readPackTable } from '../src/repository/pack-tables.ts';
import {
  indexedBlob,
  isIndexedBlob,
  isTreeNode,
  parseIndexFile,
  parseLock,
  parseSnapshotBody,
  parseSnapshotHeader,
  parseTree,
  treeNode,
} from '../src/repository/schemas.ts';
import { MAX_SEALED_JSON, openJson } from '../src/repository/sealed-file.ts';
import { decodeTree, encodeTree } from '../src/repository/tree.ts';
import { parseClusterSource, parsePostgresSource } from '../src/postgres/record-schema.ts';
import { recordOf, text } from '../src/util/schema.ts';
import { expectExit, runCli, tempRepo, type TempRepo } from './helpers/cli.ts';
import { startCluster, socketUrl, type TestCluster } from './helpers/postgres.ts';
import { createTestRepo, type TestRepo } from './helpers/repo.ts';

type Json = unknown;
/** A record copy that a test changes anywhere, whatever its shape. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Editable = any;

/** A deep copy of `value` with `change` applied to it. */
function mutated<T>(value: T, change: (copy: Editable) => void): unknown {
  const copy = structuredClone(value);
  change(copy);
  return copy;
}

/** Asserts that `parse` refuses `value` with a MalformedRecordError naming the record and the path. */
function expectRefused(parse: () => unknown, kind: string, where: string, problem?: RegExp) {
  let error: unknown;
  try {
    parse();
  } catch (caught) {
    error = caught;
  }
  expect(error, `${kind} ${where}`).toBeInstanceOf(MalformedRecordError);
  const refused = error as MalformedRecordError;
  expect(refused.record.kind).toBe(kind);
  expect(refused.exitCode).toBe(7);
  expect(formatPath(refused.path)).toBe(where);
  if (where) expect(refused.message).toContain(`: ${where}: `);
  if (problem) expect(refused.problem).toMatch(problem);
}

/** Only typed data or the typed error: anything else thrown fails the property. */
function onlyDataOrTypedError(parse: () => unknown): boolean {
  try {
    parse();
    return true;
  } catch (error) {
    if (error instanceof MalformedRecordError) return true;
    throw error;
  }
}

/** Every path to a value inside `value` (objects' keys, arrays' indexes). */
function pathsOf(value: Json, at: (string | number)[] = []): (string | number)[][] {
  const paths = [at];
  if (Array.isArray(value)) value.forEach((item, i) => paths.push(...pathsOf(item, [...at, i])));
  else if (typeof value === 'object' && value !== null)
    for (const [key, item] of Object.entries(value)) paths.push(...pathsOf(item, [...at, key]));
  return paths;
}

/** A valid record with one change somewhere: a value replaced, a key removed, or a key added. */
function mutationOf(valid: Json): fc.Arbitrary<Json> {
  const paths = pathsOf(valid);
  return fc
    .tuple(
      fc.constantFrom(...paths),
      fc.constantFrom('replace', 'remove', 'add'),
      fc.jsonValue({ maxDepth: 2 }),
      fc.constantFrom('__proto__', 'constructor', 'extra', 'id', ''),
    )
    .map(([where, how, replacement, key]) => {
      if (where.length === 0) return how === 'replace' ? replacement : valid;
      const copy = structuredClone(valid) as Editable;
      let parent = copy;
      for (const step of where.slice(0, -1)) parent = parent[step];
      const last = where.at(-1)!;
      if (how === 'replace') parent[last] = replacement;
      else if (how === 'remove' && Array.isArray(parent)) parent.splice(Number(last), 1);
      else if (how === 'remove') delete parent[last];
      else if (typeof parent[last] === 'object' && parent[last] !== null && !Array.isArray(parent[last]))
        Object.defineProperty(parent[last], key, { value: replacement, enumerable: true });
      else parent[last] = replacement;
      return copy;
    });
}

describe('repository record schemas', () => {
  let repo: TestRepo;
  let source: string;
  const indexFiles: { id: string; value: Json }[] = [];
  const trees: { id: string; value: Json }[] = [];
  const snapshots: { id: string; header: Json; body: Json }[] = [];

  beforeAll(async () => {
    repo = await createTestRepo();
    source = await mkdtemp(path.join(os.tmpdir(), 'strongbox-records-'));
    await mkdir(path.join(source, 'sub dir'));
    await writeFile(path.join(source, 'sub dir', 'data.bin'), randomBytes(200_000));
    await writeFile(path.join(source, 'é — unicode name.txt'), 'hello');
    await writeFile(path.join(source, 'x'.repeat(255)), 'longest name');
    await symlink('sub dir/data.bin', path.join(source, 'link'));
    const { repository } = repo;
    await backup(repository, filesSource([source]), { threads: 1, tags: ['env=test'] });
    await writeFile(path.join(source, 'sub dir', 'more.bin'), randomBytes(50_000));
    await backup(repository, filesSource([source]), { threads: 1 });
    await backup(repository, stdinSource('stream.bin', Readable.from([randomBytes(100_000)])), {
      threads: 1,
    });
    for await (const object of repository.backend.list('index/')) {
      const signed = splitSigned(await repository.backend.get(object.name))!;
      const value = openJson('SBI2', repository.metadataKey, signed.content);
      indexFiles.push({ id: object.name.slice('index/'.length), value });
    }
    await repository.loadIndex();
    const seen = new Set<string>();
    const walk = async (id: string): Promise<void> => {
      if (seen.has(id)) return;
      seen.add(id);
      const value = JSON.parse((await repository.readBlob(id)).toString('utf8')) as {
        nodes: { subtree?: string }[];
      };
      trees.push({ id, value });
      for (const node of value.nodes) if (node.subtree) await walk(node.subtree);
    };
    for (const { id } of await repository.listSnapshots()) {
      const { header, body } = await repository.loadSnapshot(id);
      snapshots.push({ id, header, body });
      await walk(body.tree);
    }
  });
  afterAll(async () => {
    await repo?.cleanup();
    if (source) await rm(source, { recursive: true, force: true });
  });

  it('accepts every index file, tree, snapshot, lock and pack table strongbox writes', async () => {
    expect(indexFiles.length).toBeGreaterThan(0);
    for (const { id, value } of indexFiles) expect(parseIndexFile(value, id)).toEqual(value);
    expect(trees.length).toBeGreaterThanOrEqual(4);
    for (const { id, value } of trees) expect(parseTree(value, id)).toEqual(value);
    expect(snapshots).toHaveLength(3);
    for (const { id, header, body } of snapshots) {
      expect(parseSnapshotHeader(header, id)).toEqual(header);
      expect(parseSnapshotBody(body, id)).toEqual(body);
    }
    const { repository } = repo;
    const lock = await acquireLock(repository.backend, repository.metadataKey, {
      exclusive: true,
      operation: 'test',
    });
    const value = openJson('SBLK', repository.metadataKey, await repository.backend.get(lock.name));
    expect(parseLock(value, lock.name)).toEqual(value);
    await lock.release();
    const { identities } = repository.requireReader('read pack tables');
    for (const pack of repository.index.packIdList()) {
      const table = await readPackTable(
        repository.backend,
        pack,
        repository.index.pack(pack)!.listings,
        identities,
      );
      if (!(table instanceof PackTable)) throw new Error(`the table of pack ${pack} is ${table}`);
      expect(parsePackTable(await repository.backend.get(packName(pack)), table.dataKey, pack)).toEqual(
        table.entries,
      );
      for (const entry of table.entries)
        expect(repository.index.locations(entry.id)).toContainEqual(
          expect.objectContaining({ pack, offset: entry.offset, length: entry.length }),
        );
    }
  });

  it('refuses index files with a field missing, added, of the wrong type or too large, naming the file and the field', () => {
    const { id, value } = indexFiles[0]!;
    const short = `index file ${id.slice(0, 8)}…`;
    const refuse = (change: (copy: Editable) => void, where: string, problem?: RegExp) =>
      expectRefused(() => parseIndexFile(mutated(value, change), id), 'index file', where, problem);
    refuse((copy) => delete copy.packs[0].size, 'packs[0].size');
    refuse((copy) => (copy.packs[0].extra = 1), 'packs[0]', /unexpected field "extra"/);
    refuse((copy) => (copy.packs[0].blobs[0][2] = '8'), 'packs[0].blobs[0][2]', /non-negative integer/);
    refuse((copy) => (copy.packs[0].blobs[0][2] = -1), 'packs[0].blobs[0][2]', /non-negative integer/);
    refuse((copy) => (copy.packs[0].blobs[0][3] = 2 ** 32), 'packs[0].blobs[0][3]');
    refuse((copy) => (copy.packs[0].blobs[0][1] = 2), 'packs[0].blobs[0][1]');
    refuse((copy) => (copy.packs[0].blobs[0][6] = 23), 'packs[0].blobs[0][6]');
    refuse((copy) => (copy.packs[0].blobs[0][0] = 'A'.repeat(64)), 'packs[0].blobs[0][0]', /hex/);
    refuse((copy) => (copy.packs[0].blobs[0][8] = Array(9).fill(1)), 'packs[0].blobs[0][8]', /at most 8/);
    refuse((copy) => copy.packs[0].blobs[0].push(null), 'packs[0].blobs[0]');
    refuse((copy) => (copy.packs[0].keys = '!'), 'packs[0].keys', /base64/);
    refuse((copy) => (copy.packs[0].id = copy.packs[0].id.slice(1)), 'packs[0].id');
    expect(() =>
      parseIndexFile(
        mutated(value, (copy) => (copy.packs[0].blobs[0][2] = 'x')),
        id,
      ),
    ).toThrow(`${short}: packs[0].blobs[0][2]: expected a non-negative integer`);
  });

  it('refuses tree nodes whose names would leave the restore target, and malformed nodes', () => {
    const { id, value } = trees.find(({ value }) => (value as { nodes: unknown[] }).nodes.length > 1)!;
    const refuse = (change: (copy: Editable) => void, where: string, problem?: RegExp) =>
      expectRefused(() => parseTree(mutated(value, change), id), 'tree', where, problem);
    for (const name of ['..', '.', 'a/b', '/etc', '', 'nul\0byte', 'y'.repeat(256)])
      refuse((copy) => (copy.nodes[0].name = name), 'nodes[0].name');
    refuse((copy) => (copy.nodes[1].name = copy.nodes[0].name), 'nodes[1].name', /duplicate/);
    refuse((copy) => (copy.nodes[0].mode = 0o10000), 'nodes[0].mode');
    refuse((copy) => (copy.nodes[0].type = 'door'), 'nodes[0].type');
    refuse((copy) => (copy.nodes[0].mtimeNs = 1), 'nodes[0].mtimeNs');
    refuse((copy) => (copy.nodes[0].uid = -1), 'nodes[0].uid');
    refuse((copy) => (copy.nodes[0].subtree = '../../etc'), 'nodes[0].subtree');
    refuse((copy) => (copy.nodes[0].owner = 'root'), 'nodes[0]', /unexpected field "owner"/);
    refuse((copy) => delete copy.nodes[0].type, 'nodes[0].type');
    // What a restore reads goes through decodeTree: a climbing name never reaches it.
    const climbing = encodeTree({
      nodes: [{ name: '..', type: 'file', mode: 0o644, mtimeNs: '0', uid: 0, gid: 0, content: [] }],
    });
    expect(() => decodeTree(climbing, 'f'.repeat(64))).toThrow(
      /tree ffffffff…: nodes\[0\]\.name: expected a file name/,
    );
    expect(() => decodeTree(Buffer.from('{"nodes": ['), 'f'.repeat(64))).toThrow(MalformedRecordError);
  });

  it('refuses snapshot headers and bodies that are not what a backup writes', () => {
    const { id, header, body } = snapshots[0]!;
    const refuseHeader = (change: (copy: Editable) => void, where: string) =>
      expectRefused(() => parseSnapshotHeader(mutated(header, change), id), 'snapshot header', where);
    const refuseBody = (change: (copy: Editable) => void, where: string) =>
      expectRefused(() => parseSnapshotBody(mutated(body, change), id), 'snapshot body', where);
    refuseHeader((copy) => (copy.time = 'yesterday'), 'time');
    refuseHeader((copy) => (copy.tags = Array(65).fill('t')), 'tags');
    refuseHeader((copy) => (copy.host = 'h'.repeat(4097)), 'host');
    refuseHeader((copy) => (copy.size = -1), 'size');
    refuseHeader((copy) => (copy.stored = 1.5), 'stored');
    refuseHeader((copy) => (copy.parent = 'abc'), 'parent');
    refuseHeader((copy) => delete copy.program, 'program');
    refuseHeader((copy) => (copy.signature = 'x'), '');
    refuseBody((copy) => (copy.tree = null), 'tree');
    refuseBody((copy) => (copy.paths = [1]), 'paths[0]');
    refuseBody((copy) => (copy.summary = { files: 'many' }), 'summary.files');
    refuseBody((copy) => (copy.source = []), 'source');
    expect(() =>
      parseSnapshotHeader(
        mutated(header, (copy) => (copy.size = -1)),
        id,
      ),
    ).toThrow(`snapshot header ${id.slice(0, 8)}…: size: expected a non-negative integer`);
  });

  it('takes an unreadable or oversized lock for a stale one, and refuses a malformed one', async () => {
    const { repository } = repo;
    const now = new Date().toISOString();
    const info = {
      host: 'h',
      pid: 1,
      username: 'u',
      exclusive: true,
      operation: 'o',
      created: now,
      refreshed: now,
    };
    expectRefused(() => parseLock({ ...info, pid: '1' }, 'locks/x'), 'lock', 'pid');
    expectRefused(() => parseLock({ ...info, refreshed: 'soon' }, 'locks/x'), 'lock', 'refreshed');
    // A lock that decompresses past its limit: a zstd bomb of a few hundred bytes.
    const bomb = Buffer.from(JSON.stringify({ ...info, host: 'h'.repeat(MAX_SEALED_JSON.SBLK) }));
    const magic = Buffer.from('SBLK', 'ascii');
    const sealed = Buffer.concat([magic, seal(repository.metadataKey, zstdCompress(bomb, 19), magic)]);
    expect(sealed.length).toBeLessThan(1024);
    await repository.backend.put('locks/bomb', sealed);
    await repository.backend.put(
      'locks/malformed',
      Buffer.concat([
        magic,
        seal(repository.metadataKey, zstdCompress(Buffer.from('{"pid": []}'), 3), magic),
      ]),
    );
    try {
      const locks = await listLocks(repository.backend, repository.metadataKey);
      expect(locks.filter((lock) => lock.name.startsWith('locks/'))).toEqual(
        expect.arrayContaining([
          { name: 'locks/bomb', stale: true },
          { name: 'locks/malformed', stale: true },
        ]),
      );
    } finally {
      await repository.backend.delete('locks/bomb');
      await repository.backend.delete('locks/malformed');
    }
  });

  it('range-checks every field of a pack table, naming the pack', () => {
    const dataKey = randomBytes(32);
    const id = Buffer.alloc(32, 7);
    const blob = seal(dataKey, Buffer.from('hello'), blobAad(0, id));
    const pack = (entry: (table: Buffer) => void, tableLength = 80) => {
      const header = Buffer.alloc(8);
      PACK_MAGIC.copy(header);
      const table = Buffer.alloc(tableLength);
      id.copy(table, 0);
      table.writeUInt32LE(8, 35);
      table.writeUInt32LE(blob.length, 39);
      table.writeUInt32LE(5, 43);
      entry(table);
      const sealedTable = seal(dataKey, table, TRAILER_MAGIC);
      const tail = Buffer.alloc(8);
      tail.writeUInt32LE(sealedTable.length, 0);
      TRAILER_MAGIC.copy(tail, 4);
      return Buffer.concat([header, blob, sealedTable, tail]);
    };
    const packId = 'c'.repeat(64);
    expect(
      parsePackTable(
        pack(() => undefined),
        dataKey,
        packId,
      ),
    ).toEqual([
      {
        id: id.toString('hex'),
        type: 0,
        compression: 0,
        level: 0,
        offset: 8,
        length: blob.length,
        rawLength: 5,
      },
    ]);
    const refuse = (entry: (table: Buffer) => void, where: string, tableLength?: number) =>
      expectRefused(() => parsePackTable(pack(entry, tableLength), dataKey, packId), 'pack', where);
    refuse((table) => table.writeUInt8(2, 32), 'blobs[0].type');
    refuse((table) => table.writeUInt8(2, 33), 'blobs[0].compression');
    refuse((table) => table.writeUInt8(23, 34), 'blobs[0].level');
    refuse((table) => table.writeUInt32LE(0, 35), 'blobs[0].offset');
    refuse((table) => table.writeUInt32LE(1 << 20, 39), 'blobs[0].offset');
    refuse((table) => table.writeUInt32LE(0xffffffff, 35), 'blobs[0].offset');
    refuse((table) => table.writeUInt8(2, 47), 'blobs[0].flags');
    refuse((table) => table.writeUInt8(1, 79), 'blobs[0].base');
    expectRefused(
      () =>
        parsePackTable(
          pack(() => undefined, 81),
          dataKey,
          packId,
        ),
      'pack',
      '',
    );
  });

  it('keeps a __proto__ key of a map as an ordinary key, and pollutes nothing', () => {
    const map = recordOf(text(16), text(16), 4);
    const parsed = map.parse(JSON.parse('{"__proto__": "kept", "constructor": "too"}'));
    expect(Object.getPrototypeOf(parsed)).toBeNull();
    expect(Object.keys(parsed)).toEqual(['__proto__', 'constructor']);
    expect(parsed['__proto__']).toBe('kept');
    expect(({} as Record<string, unknown>)['kept']).toBeUndefined();
    const header = snapshots[0]!.header;
    expectRefused(
      () =>
        parseSnapshotHeader(
          JSON.parse(JSON.stringify(header).replace('{', '{"__proto__":{"polluted":1},')),
          'x',
        ),
      'snapshot header',
      '',
      /unexpected field "__proto__"/,
    );
    expect(({} as Record<string, unknown>)['polluted']).toBeUndefined();
  });

  it('refuses, before backing up, a stream name or tags that a tree or header could not hold', async () => {
    for (const name of ['a/b', '..', '', 'n'.repeat(256)])
      expect(() => stdinSource(name, Readable.from([Buffer.from('x')]))).toThrow(ConfigError);
    const stream = () => stdinSource('ok.bin', Readable.from([Buffer.from('x')]));
    await expect(backup(repo.repository, stream(), { tags: Array(65).fill('t') })).rejects.toThrow(
      ConfigError,
    );
    await expect(backup(repo.repository, stream(), { tags: ['t'.repeat(4097)] })).rejects.toThrow(
      ConfigError,
    );
  });

  it('property: the fast checks of index blobs and tree nodes pass nothing their schemas refuse', () => {
    const blob = (indexFiles[0]!.value as { packs: { blobs: unknown[] }[] }).packs[0]!.blobs[0];
    const node = (trees[0]!.value as { nodes: unknown[] }).nodes[0];
    for (const [accepts, schema, valid] of [
      [isIndexedBlob, indexedBlob, blob],
      [isTreeNode, treeNode, node],
    ] as const) {
      expect(accepts(valid)).toBe(true);
      fc.assert(
        fc.property(fc.oneof(mutationOf(valid), fc.jsonValue()), (value) => {
          if (accepts(value)) expect(schema.safeParse(value).success).toBe(true);
        }),
        { numRuns: 1000 },
      );
    }
  });

  it('property: any JSON value, or a valid record changed anywhere, gives typed data or the typed error', () => {
    const parsers: [(value: unknown) => unknown, Json][] = [
      [(value) => parseIndexFile(value, 'a'.repeat(64)), indexFiles[0]!.value],
      [(value) => parseTree(value, 'b'.repeat(64)), trees[0]!.value],
      [(value) => parseSnapshotHeader(value, 'c'.repeat(64)), snapshots[0]!.header],
      [(value) => parseSnapshotBody(value, 'c'.repeat(64)), snapshots[0]!.body],
      [
        (value) => parseLock(value, 'locks/x'),
        {
          host: 'h',
          pid: 1,
          username: 'u',
          exclusive: false,
          operation: 'o',
          created: '2024-01-01T00:00:00.000Z',
          refreshed: '2024-01-01T00:00:00.000Z',
        },
      ],
    ];
    for (const [parse, valid] of parsers) {
      fc.assert(
        fc.property(fc.jsonValue(), (value) => onlyDataOrTypedError(() => parse(value))),
        {
          numRuns: 300,
        },
      );
      fc.assert(
        fc.property(mutationOf(valid), (value) => onlyDataOrTypedError(() => parse(value))),
        {
          numRuns: 300,
        },
      );
    }
  });
});

describe('PostgreSQL record schemas', () => {
  let cluster: TestCluster;
  let repo: TempRepo;
  let single: { id: string; source: Json };
  let whole: { id: string; source: Json };

  beforeAll(async () => {
    cluster = await startCluster();
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
    await cluster.psql(
      `create role alice login; create database shop owner alice; create database "weird/name"; create database "__proto__";
       comment on database shop is 'the shop'; alter database shop set work_mem = '8MB';
       alter role alice in database shop set search_path = 'public, "Odd"'`,
    );
    await cluster.psql(
      `create table items (id serial primary key, "Odd ""name""" text);
       insert into items ("Odd ""name""") select g::text from generate_series(1, 20) g;
       create materialized view totals as select count(*) from items;
       select lo_from_bytea(4242, 'large object');
       comment on large object 4242 is 'a comment'; grant select on large object 4242 to alice;
       grant connect on database shop to alice`,
      'shop',
    );
    expectExit(
      await runCli(['backup', 'postgres'], { env: { ...repo.env, ...cluster.env(), PGDATABASE: 'shop' } }),
      0,
    );
    expectExit(await runCli(['backup', 'postgres', '--all'], { env: { ...repo.env, ...cluster.env() } }), 0);
    const repository = await openRepository({ repo: repo.repo, passphrase: 'correct horse battery staple' });
    for (const snapshot of await repository.listSnapshots()) {
      const { body } = await repository.loadSnapshot(snapshot.id);
      if (snapshot.header.kind === 'postgres') single = { id: snapshot.id, source: body.source };
      else whole = { id: snapshot.id, source: body.source };
    }
  }, 120_000);
  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
  });

  it('accepts what backup postgres and backup postgres --all write, a database called __proto__ included', () => {
    const recorded = single.source as Editable;
    expect(recorded.largeObjects.objects['4242']).toMatchObject({ comment: 'a comment' });
    expect(recorded.databaseProperties.comment).toBe('the shop');
    expect(recorded.schema.version).toBe(1);
    expect(parsePostgresSource(single.source, single.id)).toEqual(single.source);
    const parsed = parseClusterSource(whole.source, whole.id);
    expect(parsed).toEqual(whole.source);
    expect(Object.keys(parsed.databases).sort()).toEqual(['__proto__', 'postgres', 'shop', 'weird/name']);
    expect(Object.hasOwn(parsed.databases, '__proto__')).toBe(true);
    expect(parsed.databases['weird/name']!.file).toBe('weird%2Fname.dump');
  });

  it('still reads records of older backups, without the optional parts, and leaves out a schema record of a later version', () => {
    const older = mutated(single.source, (copy) => {
      for (const key of ['catalog', 'schema', 'blocks', 'largeObjects', 'databaseProperties'])
        delete copy[key];
    });
    expect(parsePostgresSource(older, single.id)).toEqual(older);
    const later = mutated(single.source, (copy) => (copy.schema = { version: 2, anything: [1] }));
    expect(parsePostgresSource(later, single.id)!.schema).toBeUndefined();
    expect(parsePostgresSource(undefined, single.id)).toBeUndefined();
  });

  it('refuses a record with a field missing, added, of the wrong type or too large, naming the snapshot and the field', () => {
    const { id, source } = single;
    const refuse = (change: (copy: Editable) => void, where: string, problem?: RegExp) =>
      expectRefused(() => parsePostgresSource(mutated(source, change), id), 'snapshot', where, problem);
    refuse((copy) => delete copy.tables, 'source.tables');
    refuse((copy) => (copy.sql = 'drop table items'), 'source', /unexpected field "sql"/);
    refuse((copy) => (copy.tables[0].rows = '20'), 'source.tables[0].rows');
    refuse((copy) => (copy.tables[0].hash = 'abc'), 'source.tables[0].hash');
    refuse(
      (copy) => (copy.tables[0].copyStatement = 'x'.repeat((1 << 20) + 1)),
      'source.tables[0].copyStatement',
    );
    refuse((copy) => (copy.format = 'directory'), 'source.format');
    refuse((copy) => (copy.catalog.objects.public.tables = -1), 'source.catalog.objects.public.tables');
    refuse((copy) => (copy.blocks[0] = [1, 2]), 'source.blocks[0]');
    refuse(
      (copy) => (copy.largeObjects.objects['4242'].acl = ['alice=rw/alice; drop table x']),
      'source.largeObjects.objects["4242"].acl[0]',
    );
    refuse(
      (copy) => (copy.largeObjects.objects.abc = copy.largeObjects.objects['4242']),
      'source.largeObjects.objects.abc',
      /oid/,
    );
    refuse(
      (copy) => (copy.databaseProperties.acl = ['alice=r/postgres']),
      'source.databaseProperties.acl[0]',
      /aclitem/,
    );
    refuse((copy) => (copy.databaseProperties.acl = ['x'.repeat(1025)]), 'source.databaseProperties.acl[0]');
    refuse(
      (copy) => (copy.databaseProperties.localeProvider = 'other'),
      'source.databaseProperties.localeProvider',
    );
    refuse(
      (copy) => (copy.databaseProperties.connectionLimit = 1.5),
      'source.databaseProperties.connectionLimit',
    );
    refuse(
      (copy) => (copy.databaseProperties.roleSettings.alice = 'work_mem=1'),
      'source.databaseProperties.roleSettings.alice',
    );
    refuse(
      (copy) => (copy.schema.objects['table public.items'].owner = 1),
      'source.schema.objects["table public.items"].owner',
    );
    refuse(
      (copy) => (copy.schema.materializedViews['public.totals'].rows = -1),
      'source.schema.materializedViews["public.totals"].rows',
    );
    expectRefused(
      () =>
        parseClusterSource(
          mutated(whole.source, (copy) => (copy.databases.shop.file = '../../shop.dump')),
          whole.id,
        ),
      'snapshot',
      'source.databases.shop.file',
    );
    expectRefused(
      () =>
        parseClusterSource(
          mutated(whole.source, (copy) => (copy.databases = [])),
          whole.id,
        ),
      'snapshot',
      'source.databases',
    );
  });

  it('verify and restore refuse a snapshot whose record is malformed (exit 7), naming it', async () => {
    const repository = await openRepository({ repo: repo.repo, passphrase: 'correct horse battery staple' });
    const { header, body } = await repository.loadSnapshot(single.id);
    const forged = await repository.saveSnapshot(
      { ...header, time: new Date().toISOString() },
      {
        ...body,
        source: mutated(body.source, (copy) => (copy.tables[0].rows = -5)) as Record<string, unknown>,
      },
    );
    const verified = await runCli(['verify', forged.id, '--to', socketUrl(cluster, 'shop')], {
      env: repo.env,
    });
    expectExit(verified, 7);
    expect(verified.stderr).toContain(
      `snapshot ${forged.id.slice(0, 8)}…: source.tables[0].rows: expected a non-negative integer`,
    );
    const restored = await runCli(['restore', forged.id, '--to', socketUrl(cluster, 'shop_copy')], {
      env: repo.env,
    });
    expectExit(restored, 7);
    expect(await cluster.psql(`select count(*) from pg_database where datname = 'shop_copy'`)).toBe('0\n');
  });

  it('property: any JSON value, or the real record changed anywhere, gives typed data or the typed error', () => {
    for (const [parse, valid] of [
      [(value: unknown) => parsePostgresSource(value, single.id), single.source],
      [(value: unknown) => parseClusterSource(value, whole.id), whole.source],
    ] as const) {
      fc.assert(
        fc.property(fc.jsonValue(), (value) => onlyDataOrTypedError(() => parse(value))),
        { numRuns: 200 },
      );
      fc.assert(
        fc.property(mutationOf(valid), (value) => onlyDataOrTypedError(() => parse(value))),
        { numRuns: 300 },
      );
    }
  });
});
