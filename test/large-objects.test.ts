import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRepository } from '../src/index.ts';
import { ArchiveReader, type LargeObjectContents } from '../src/postgres/logical/archive-reader.ts';
import { readBackLargeObjects } from '../src/postgres/logical/large-object-queries.ts';
import { LargeObjectCopyReader } from '../src/postgres/logical/large-object-stream.ts';
import { comparableAclItem } from '../src/postgres/acl.ts';
import { largeObjectDifferences, type RecordedLargeObjects } from '../src/postgres/logical/large-objects.ts';
import type { PostgresSnapshotDetails } from '../src/postgres/logical/logical.ts';
import { runCli, tempRepo, type TempRepo, expectExit } from './helpers/cli.ts';
import { seededBytes } from './helpers/data.ts';
import { startCluster, type TestCluster, socketUrl } from './helpers/postgres.ts';

const run = promisify(execFile);

/** Piece sizes from 1 to max, the same on every run. */
function seededSizes(seed: string, max: number): () => number {
  const bytes = seededBytes(seed, 1 << 16);
  let at = 0;
  return () => (bytes.readUInt32LE((at = (at + 4) % (bytes.length - 4))) % max) + 1;
}

function pushInPieces(push: (piece: Uint8Array) => void, bytes: Buffer, nextSize: () => number): void {
  for (let at = 0; at < bytes.length;) {
    const size = nextSize();
    push(bytes.subarray(at, at + size));
    at += size;
  }
}

/** The big object: 3 MiB and 5 bytes, so its last read-back chunk is short; the dump writes it in many. */
const BIG_BYTES = 3 * 1024 * 1024 + 5;
const BIG_OID = 16501;
const HIGH_OID = 3000000000;
/** All five objects' bytes: the big one, 'owned by alice', 'hello', 'above 2^31' and an empty one. */
const COMPARED = `5 \\(${BIG_BYTES + 14 + 5 + 10} bytes\\)`;

describe('large objects', () => {
  let cluster: TestCluster;
  let repo: TempRepo;
  const to = (database: string) => socketUrl(cluster, database);
  const verify = (database: string) =>
    runCli(['verify', '--name', 'lobs', '--to', to(database)], { env: repo.env });

  /** Each object's size and SHA-256, by the server's own hash. */
  const serverDigests = async (database: string): Promise<LargeObjectContents[]> =>
    (
      await cluster.psql(
        `select oid, length(lo_get(oid)), encode(sha256(lo_get(oid)), 'hex') from pg_largeobject_metadata order by oid`,
        database,
      )
    )
      .trim()
      .split('\n')
      .map((line) => {
        const [oid, bytes, sha256] = line.split('|');
        return { oid: Number(oid), bytes: Number(bytes), sha256: sha256! };
      });

  /** The output of a program of the cluster's, as bytes. */
  const runTool = async (tool: string, args: string[]): Promise<Buffer> =>
    (
      await run(path.join(cluster.binDir, tool), args, {
        env: { PATH: process.env.PATH, ...cluster.env() },
        encoding: 'buffer',
        maxBuffer: 64 << 20,
      })
    ).stdout;

  beforeAll(async () => {
    cluster = await startCluster();
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
    await cluster.psql('create role alice; create role bob');
    await cluster.createDatabase('lobs');
    await cluster.psql(
      `create table notes (id int primary key, body oid);
       select lo_from_bytea(16500, '');
       select lo_from_bytea(${BIG_OID}, (select string_agg(sha256(int4send(g)), ''::bytea order by g)
         from generate_series(1, ${Math.ceil(BIG_BYTES / 32)}) g));
       select lo_truncate64(lo_open(${BIG_OID}, x'20000'::int), ${BIG_BYTES});
       select lo_from_bytea(16502, 'owned by alice');
       alter large object 16502 owner to alice;
       grant select on large object 16502 to bob;
       comment on large object 16502 is 'a comment';
       select lo_from_bytea(16503, 'hello');
       select lo_create(${HIGH_OID});
       select lo_put(${HIGH_OID}, 0, 'above 2^31');
       insert into notes values (1, 16503);`,
      'lobs',
    );
    expectExit(await runCli(['backup', 'postgres', to('lobs')], { env: repo.env }), 0);
  });

  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
  });

  it('records every large object: bytes hashed from the dump, owner, ACL and comment', async () => {
    const repository = await openRepository({ repo: repo.repo, passphrase: 'correct horse battery staple' });
    try {
      const snapshot = await repository.loadSnapshot((await repository.findSnapshot('latest')).id);
      const recorded = (snapshot.body.source as PostgresSnapshotDetails).largeObjects!;
      const digests = await serverDigests('lobs');
      expect(digests.map((digest) => digest.oid)).toEqual([16500, BIG_OID, 16502, 16503, HIGH_OID]);
      expect(digests[1]!.bytes).toBe(BIG_BYTES);
      expect(recorded.contents).toBe(true);
      for (const { oid, bytes, sha256 } of digests)
        expect(recorded.objects[String(oid)]).toMatchObject({ bytes, sha256 });
      expect(recorded.objects['16502']).toEqual({
        bytes: 14,
        sha256: digests[2]!.sha256,
        owner: 'alice',
        acl: ['alice=rw/alice', 'bob=r/alice'],
        comment: 'a comment',
      });
      expect(recorded.objects['16503']).toMatchObject({ owner: 'postgres', acl: ['postgres=rw/postgres'] });
      expect(recorded.objects['16503']).not.toHaveProperty('comment');
    } finally {
      await repository.close();
    }
  });

  it('restores them, and verifies them equal, serially and with --jobs 2', async () => {
    const matched = new RegExp(`large objects +${COMPARED} +all match`);
    const serial = await runCli(['restore', '--name', 'lobs', '--to', to('lobs_copy')], { env: repo.env });
    expectExit(serial, 0);
    expect(serial.stderr).toMatch(matched);
    expect(await serverDigests('lobs_copy')).toEqual(await serverDigests('lobs'));
    const verified = await verify('lobs_copy');
    expectExit(verified, 0);
    expect(verified.stderr).toMatch(matched);
    const parallel = await runCli(['restore', '--name', 'lobs', '--jobs', '2', '--to', to('lobs_jobs')], {
      env: repo.env,
    });
    expectExit(parallel, 0);
    expect(parallel.stderr).toMatch(matched);
    expectExit(await verify('lobs_jobs'), 0);
  });

  it('compares ACLs without owners and grantors after --no-owner', async () => {
    const restored = await runCli(['restore', '--name', 'lobs', '--no-owner', '--to', to('lobs_no_owner')], {
      env: repo.env,
    });
    expectExit(restored, 0);
    expect(restored.stderr).toMatch(new RegExp(`large objects +${COMPARED} +all match`));
    expect(
      await cluster.psql(
        `select lomowner::regrole, lomacl from pg_largeobject_metadata where oid = 16502`,
        'lobs_no_owner',
      ),
    ).toBe('postgres|{postgres=rw/postgres,bob=r/postgres}\n');
    // verify expects the owners backed up.
    const verified = await verify('lobs_no_owner');
    expectExit(verified, 7);
    expect(verified.stderr).toContain('large object 16502: owner alice backed up, postgres found');
  });

  const changes: [what: string, sql: string, difference: string][] = [
    [
      'a byte changed',
      `select lo_put(${BIG_OID}, 1500000, case when get_byte(lo_get(${BIG_OID}, 1500000, 1), 0) = 0
         then '\\x01'::bytea else '\\x00'::bytea end)`,
      `large object ${BIG_OID}: bytes differ (${BIG_BYTES} bytes backed up, ${BIG_BYTES} found)`,
    ],
    [
      'a byte added',
      `select lo_put(16503, 5, '!')`,
      'large object 16503: bytes differ (5 bytes backed up, 6 found)',
    ],
    ['an object unlinked', `select lo_unlink(${HIGH_OID})`, `large object ${HIGH_OID}: missing`],
    ['an object created', 'select lo_create(16600)', 'large object 16600: not in the backup'],
    [
      'an owner changed',
      'alter large object 16503 owner to bob',
      'large object 16503: owner postgres backed up, bob found',
    ],
    [
      'a privilege granted',
      'grant select on large object 16503 to alice',
      'large object 16503: ACL {postgres=rw/postgres} backed up, {alice=r/postgres,postgres=rw/postgres} found',
    ],
    [
      'a comment changed',
      `comment on large object 16502 is 'changed'`,
      'large object 16502: comment "a comment" backed up, "changed" found',
    ],
  ];

  it.each(changes)('names %s (exit 7)', async (_what, sql, difference) => {
    // A fresh copy of the verified restore for each change.
    await cluster.psql('create database lobs_changed template lobs_copy');
    try {
      await cluster.psql(sql, 'lobs_changed');
      const changed = await verify('lobs_changed');
      expectExit(changed, 7);
      expect(changed.stderr).toContain(`lobs_changed differs from snapshot`);
      expect(changed.stderr).toContain(difference);
      expect(changed.stderr).toMatch(
        new RegExp(`large objects +${COMPARED} +1 differs\\n {4}${literally(difference)}\\n`),
      );
    } finally {
      await cluster.psql('drop database lobs_changed');
    }
  });

  it('hashes each object of the archive whatever its pieces, an oid above 2^31 included', async () => {
    const dump = await runTool('pg_dump', ['--format=custom', '--compress=0', '-d', 'lobs']);
    const expected = await serverDigests('lobs');
    for (const nextSize of [
      () => dump.length,
      seededSizes('dump pieces', 7),
      seededSizes('dump pieces', 100_000),
    ]) {
      const objects: LargeObjectContents[] = [];
      const reader = new ArchiveReader({ largeObject: (object) => objects.push(object) });
      pushInPieces((piece) => reader.push(piece), dump, nextSize);
      reader.end();
      expect(objects.sort((a, b) => a.oid - b.oid)).toEqual(expected);
    }
  });

  it('reads the objects back from COPY output whatever its pieces, and refuses it cut short', async () => {
    const output = await runTool('psql', ['-X', '-q', '-d', 'lobs', '-c', readBackLargeObjects(true)]);
    const whole = new LargeObjectCopyReader();
    whole.push(output);
    whole.end();
    const expected = await serverDigests('lobs');
    expect([...whole.found].map(([oid, { bytes, sha256 }]) => ({ oid: Number(oid), bytes, sha256 }))).toEqual(
      expected,
    );
    for (const nextSize of [seededSizes('copy pieces', 9), seededSizes('copy pieces', 300_000)]) {
      const reader = new LargeObjectCopyReader();
      pushInPieces((piece) => reader.push(piece), output, nextSize);
      reader.end();
      expect(reader.found).toEqual(whole.found);
    }
    const cut = new LargeObjectCopyReader();
    cut.push(output.subarray(0, output.length - 2));
    expect(() => cut.end()).toThrow(/ends early/);
  });
});

describe('large object comparison', () => {
  it('writes the owner in ACL items as (owner), and leaves grantors out when owners are not compared', () => {
    expect(comparableAclItem('alice=rw/alice', 'alice', true)).toBe('(owner)=rw/(owner)');
    expect(comparableAclItem('alice=rw/alice', 'alice', false)).toBe('(owner)=rw');
    expect(comparableAclItem('bob=r*/alice', 'alice', true)).toBe('bob=r*/(owner)');
    expect(comparableAclItem('bob=r*/alice', 'alice', false)).toBe('bob=r*');
    expect(comparableAclItem('=r/alice', 'carol', true)).toBe('=r/alice');
    expect(comparableAclItem('"a""b=/c"=w/"x/""y"', 'a"b=/c', true)).toBe('(owner)=w/"x/""y"');
    expect(comparableAclItem('"a""b=/c"=w/"x/""y"', 'x/"y', true)).toBe('"a""b=/c"=w/(owner)');
    expect(comparableAclItem('"a""b=/c"=w/"x/""y"', 'alice', false)).toBe('"a""b=/c"=w');
  });

  it('compares owners, and ACLs as far as they do not follow from the owner', () => {
    const recorded: RecordedLargeObjects = {
      contents: true,
      objects: { '7': { bytes: 1, sha256: 'a', owner: 'alice', acl: ['alice=rw/alice', 'bob=r/alice'] } },
    };
    const owned = (owner: string, acl: string[]) =>
      new Map([['7', { bytes: 1, sha256: 'a', owner, acl, comment: null }]]);
    const byCarol = owned('carol', ['bob=r/carol', 'carol=rw/carol']);
    expect(largeObjectDifferences(recorded, byCarol, false)).toEqual([]);
    expect(largeObjectDifferences(recorded, byCarol, true)).toEqual([
      'large object 7: owner alice backed up, carol found',
    ]);
    const grantedByBob = owned('alice', ['alice=rw/alice', 'bob=r/bob']);
    expect(largeObjectDifferences(recorded, grantedByBob, false)).toEqual([]);
    expect(largeObjectDifferences(recorded, grantedByBob, true)).toEqual([
      'large object 7: ACL {alice=rw/alice,bob=r/alice} backed up, {alice=rw/alice,bob=r/bob} found',
    ]);
    expect(largeObjectDifferences(recorded, owned('carol', ['carol=rw/carol']), false)).toEqual([
      'large object 7: ACL {alice=rw/alice,bob=r/alice} backed up, {carol=rw/carol} found',
    ]);
  });
});

function literally(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
