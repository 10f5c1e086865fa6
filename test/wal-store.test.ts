import { readdir, readFile, stat, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { openRepository, type Repository } from '../src/index.ts';
import {
  DamagedWalError,
  ExitCode,
  InvalidWalNameError,
  KeyError,
  WalConflictError,
  WalTooLargeError,
} from '../src/errors.ts';
import { decodeIdentityFile, type KeyMaterial } from '../src/repository/keys.ts';
import { LIMITS } from '../src/repository/schemas.ts';
import { SigningKey } from '../src/crypto/signing.ts';
import { encodeWal, type WalHeader } from '../src/repository/wal-file.ts';
import { seededBytes } from './helpers/data.ts';
import { createTestRepo, type TestRepo } from './helpers/repo.ts';
import { rounds, seed } from './helpers/soak.ts';

let repo: TestRepo | undefined;
const opened: Repository[] = [];

afterEach(async () => {
  for (const repository of opened.splice(0)) await repository.close();
  await repo?.cleanup();
  repo = undefined;
});

async function open(key: { passphrase: string } | { identity: string }): Promise<Repository> {
  const repository = await openRepository({
    repo: repo!.location,
    stateDirectory: false,
    ...('passphrase' in key ? key : { identity: decodeIdentityFile(key.identity) }),
  });
  opened.push(repository);
  return repository;
}

/** The name PostgreSQL gives segment `n` of timeline `timeline`, with 16 MiB segments. */
function segment(timeline: number, n: number): string {
  const hex = (value: number) => value.toString(16).toUpperCase().padStart(8, '0');
  return hex(timeline) + hex(Math.floor(n / 256)) + hex(n % 256);
}

/** A segment as PostgreSQL leaves it after a switch: records, then zeros. */
function walSegment(name: string, used = 9 * 1024 * 1024 + 12345): Buffer {
  const content = Buffer.alloc(16 * 1024 * 1024);
  seededBytes(name, used).copy(content);
  return content;
}

function walObjectPath(name: string): string {
  return path.join(repo!.location, 'wal', name.slice(0, 8), name);
}

describe('WAL store', () => {
  it('stores a 16 MiB segment and small history files, each as one object, and gives them back', async () => {
    repo = await createTestRepo();
    const wal = repo.repository.wal;
    const name = segment(1, 0x2a);
    const content = walSegment(name);
    const started = performance.now();
    const pushed = await wal.push(name, content);
    const pushMs = performance.now() - started;
    expect(pushed.stored).toBe(true);
    expect((await stat(walObjectPath(name))).size).toBe(pushed.storedSize);
    // The zeros compress away; the seeded part does not.
    expect(pushed.storedSize).toBeLessThan(10 * 1024 * 1024);
    const fetchedAt = performance.now();
    const fetched = await wal.fetch(name);
    const fetchMs = performance.now() - fetchedAt;
    console.log(
      `16 MiB segment: push ${pushMs.toFixed(0)} ms, fetch ${fetchMs.toFixed(0)} ms, ${pushed.storedSize} bytes stored`,
    );
    expect(fetched?.equals(content)).toBe(true);

    const small = new Map<string, Buffer>([
      ['00000002.history', Buffer.from('1\t0/3000000\tno recovery target specified\n')],
      [
        '000000010000000000000002.00000028.backup',
        Buffer.from('START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n'),
      ],
      ['000000010000000000000003.partial', seededBytes('partial', 3 * 1024 * 1024 + 1)],
      ['000000010000000000000004', Buffer.alloc(0)],
    ]);
    for (const [file, bytes] of small) expect((await wal.push(file, bytes)).stored).toBe(true);
    for (const [file, bytes] of small) expect((await wal.fetch(file))?.equals(bytes)).toBe(true);
    const header = await wal.header('000000010000000000000003.partial');
    expect(header).toMatchObject({ version: 1, name: '000000010000000000000003.partial', frames: 4 });
    expect(header!.size).toBe(3 * 1024 * 1024 + 1);
    expect(header!.mac).toBe(repo.repository.blobId(small.get('000000010000000000000003.partial')!));
    expect(await readdir(path.join(repo.location, 'wal'))).toEqual(['00000001', '00000002'].sort());
  });

  it('takes the same file again without writing, and refuses another under the same name', async () => {
    repo = await createTestRepo();
    const wal = repo.repository.wal;
    const name = segment(1, 7);
    const content = seededBytes('segment 7', 2 * 1024 * 1024);
    const first = await wal.push(name, content);
    const stored = await readFile(walObjectPath(name));
    // PostgreSQL runs archive_command again after a crash: that succeeds, and changes nothing.
    expect(await wal.push(name, content)).toEqual({ stored: false, storedSize: first.storedSize });
    expect((await readFile(walObjectPath(name))).equals(stored)).toBe(true);

    const other = Buffer.from(content);
    other[12345] = other[12345]! ^ 1;
    const conflict = await wal.push(name, other).catch((error: unknown) => error);
    expect(conflict).toBeInstanceOf(WalConflictError);
    expect(conflict).toMatchObject({ fileName: name, reason: 'differs', exitCode: ExitCode.verification });
    expect((conflict as Error).message).toMatch(/already archived with different content/);
    // Nor may a file of another length, the same bytes cut short.
    await expect(wal.push(name, content.subarray(1))).rejects.toBeInstanceOf(WalConflictError);
    expect((await readFile(walObjectPath(name))).equals(stored)).toBe(true);
    expect((await wal.fetch(name))?.equals(content)).toBe(true);
  });

  it('refuses names PostgreSQL does not archive, and files past the size limit', async () => {
    repo = await createTestRepo();
    const wal = repo.repository.wal;
    for (const name of [
      '',
      '00000001000000000000000a',
      '0000000100000000000000001',
      '00000001000000000000000',
      '000000010000000000000001.gz',
      '000000010000000000000001.partial.x',
      '000000010000000000000001.0000002.backup',
      '0000001.history',
      '../../config',
      '00000001/000000010000000000000001',
      '000000010000000000000001\n',
    ]) {
      const error = await wal.push(name, Buffer.from('x')).catch((caught: unknown) => caught);
      expect(error, name).toBeInstanceOf(InvalidWalNameError);
      expect(error).toMatchObject({ fileName: name, exitCode: ExitCode.usage });
      await expect(wal.fetch(name)).rejects.toBeInstanceOf(InvalidWalNameError);
    }
    await expect(wal.list('0000000a')).rejects.toBeInstanceOf(InvalidWalNameError);
    const tooLarge = await wal
      .push(segment(1, 1), Buffer.alloc(LIMITS.walContent + 1))
      .catch((error: unknown) => error);
    expect(tooLarge).toBeInstanceOf(WalTooLargeError);
    expect(tooLarge).toMatchObject({ size: LIMITS.walContent + 1, exitCode: ExitCode.usage });
    await expect(readdir(path.join(repo.location, 'wal'))).rejects.toThrow(/ENOENT/);
  });

  it('lets a write-only key push, and take the same file again, but not fetch', async () => {
    repo = await createTestRepo();
    const writer = await open({ identity: await repo.repository.exportIdentity('write-only') });
    const name = segment(3, 0x100);
    const content = seededBytes('written by the database host', 1_500_000);
    expect((await writer.wal.push(name, content)).stored).toBe(true);
    expect((await writer.wal.push(name, content)).stored).toBe(false);
    await expect(writer.wal.push(name, content.subarray(2))).rejects.toBeInstanceOf(WalConflictError);
    expect((await writer.wal.header(name))?.size).toBe(content.length);
    const refused = await writer.wal.fetch(name).catch((error: unknown) => error);
    expect(refused).toBeInstanceOf(KeyError);
    expect((refused as Error).message).toMatch(/write-only key cannot fetch WAL files/);
    expect((await repo.repository.wal.fetch(name))?.equals(content)).toBe(true);
  });

  it('refuses a header strongbox would not write, even signed by a current writer', async () => {
    repo = await createTestRepo();
    const name = segment(1, 0xab);
    const content = Buffer.from('four');
    const writer = decodeIdentityFile(await repo.repository.exportIdentity('write-only')) as KeyMaterial;
    const write = async (header: Record<string, unknown>) => {
      const bytes = encodeWal(
        {
          version: 1,
          name,
          size: content.length,
          mac: repo!.repository.blobId(content),
          time: new Date().toISOString(),
          host: 'db1',
          program: 'strongbox',
          ...header,
        } as WalHeader,
        content,
        repo!.repository.metadataKey,
        repo!.repository.recipients,
        // A writer's key: only the header is wrong.
        { repositoryId: repo!.repository.config.id, key: new SigningKey(writer.signingKey) },
      );
      await mkdir(path.dirname(walObjectPath(name)), { recursive: true });
      await writeFile(walObjectPath(name), bytes);
    };
    await write({});
    expect((await repo.repository.wal.fetch(name))?.equals(content)).toBe(true);
    for (const [header, problem] of [
      [{ extra: 1 }, /WAL header .*unexpected field "extra"/],
      [{ size: 5 * 1024 * 1024 }, /frames: expected as many frames as the size takes/],
      [{ size: 3 }, /its content is 4 bytes, not the 3/],
      [{ mac: repo.repository.blobId(Buffer.from('five')) }, /the mac differs/],
      [{ name: name.toLowerCase() }, /name: expected the name of a WAL file/],
      [{ version: 2 }, /version/],
    ] as const) {
      await write(header);
      const error = await repo.repository.wal.fetch(name).catch((caught: unknown) => caught);
      expect(error, JSON.stringify(header)).toBeInstanceOf(DamagedWalError);
      expect((error as DamagedWalError).problem).toMatch(problem);
    }
  });

  it('answers undefined for a file it does not hold', async () => {
    repo = await createTestRepo();
    expect(await repo.repository.wal.fetch(segment(1, 1))).toBeUndefined();
    expect(await repo.repository.wal.header('00000009.history')).toBeUndefined();
    await repo.repository.wal.push(segment(1, 1), Buffer.from('one'));
    expect(await repo.repository.wal.fetch(segment(1, 2))).toBeUndefined();
  });

  it('lists what the storage holds, by timeline, skipping what strongbox would not have written', async () => {
    repo = await createTestRepo();
    const warnings: string[] = [];
    repo.repository.onWarning = (message) => warnings.push(message);
    const wal = repo.repository.wal;
    const names = [segment(2, 3), segment(1, 2), '00000002.history', segment(1, 1)];
    const sizes = new Map<string, number>();
    for (const name of names) sizes.set(name, (await wal.push(name, seededBytes(name, 1000))).storedSize);
    // A stray file, and a segment filed under another timeline.
    await writeFile(path.join(repo.location, 'wal', '00000001', 'notes.txt'), 'hello');
    await mkdir(path.join(repo.location, 'wal', '00000003'));
    await writeFile(path.join(repo.location, 'wal', '00000003', segment(1, 9)), 'x');
    const sorted = [...names].sort();
    expect(await wal.list()).toEqual(sorted.map((name) => ({ name, size: sizes.get(name) })));
    expect(warnings).toHaveLength(2);
    expect(warnings.join('\n')).toMatch(/wal\/00000001\/notes\.txt/);
    expect((await wal.list('00000001')).map((file) => file.name)).toEqual([segment(1, 1), segment(1, 2)]);
    // By code unit, as PostgreSQL's own archive tools sort: "." before any digit.
    expect((await wal.list('00000002')).map((file) => file.name)).toEqual([
      '00000002.history',
      segment(2, 3),
    ]);
    expect(await wal.list('00000007')).toEqual([]);
  });

  it('keeps pushes at once apart, and the same file pushed twice at once stored once', async () => {
    repo = await createTestRepo();
    const wal = repo.repository.wal;
    const files = Array.from(
      { length: 8 },
      (_, n) => [segment(1, n), seededBytes(`at once ${n}`, 300_000)] as const,
    );
    const results = await Promise.all([
      ...files.map(([name, content]) => wal.push(name, content)),
      wal.push(files[0]![0], files[0]![1]),
    ]);
    expect(results.every((result) => result.storedSize > 300_000)).toBe(true);
    for (const [name, content] of files) expect((await wal.fetch(name))?.equals(content)).toBe(true);
  });

  it('still gives back WAL archived before a key rotation, and WAL of a removed write-only key', async () => {
    repo = await createTestRepo();
    const full = repo.repository;
    const hostIdentity = await full.exportIdentity('write-only');
    const host = await open({ identity: hostIdentity });
    const fromHost = seededBytes('host before rotation', 2_000_000);
    const fromFull = seededBytes('full key before rotation', 500_000);
    await host.wal.push(segment(1, 1), fromHost);
    await full.wal.push(segment(1, 2), fromFull);

    await full.rotate(undefined);
    expect((await full.wal.fetch(segment(1, 1)))?.equals(fromHost)).toBe(true);
    expect((await full.wal.fetch(segment(1, 2)))?.equals(fromFull)).toBe(true);
    // PostgreSQL may push a file again after the rotation, with the host's new key.
    const newHost = await open({ identity: await full.exportIdentity('write-only') });
    expect((await newHost.wal.push(segment(1, 1), fromHost)).stored).toBe(false);
    expect((await newHost.wal.push(segment(1, 3), Buffer.from('after'))).stored).toBe(true);

    // Removing a write-only key endorses what it pushed too.
    await full.removeKey(newHost.writerId);
    expect((await full.wal.fetch(segment(1, 3)))?.toString()).toBe('after');
    expect((await full.wal.fetch(segment(1, 1)))?.equals(fromHost)).toBe(true);
    // An endorsement lists WAL only when there is some.
    const endorsements = await readdir(path.join(repo.location, 'endorsements'));
    const listed = await Promise.all(
      endorsements.map(async (file) => {
        const value = JSON.parse(await readFile(path.join(repo!.location, 'endorsements', file), 'utf8')) as {
          reason: string;
          wal?: string[];
        };
        return [value.reason, value.wal?.length] as const;
      }),
    );
    expect(listed.sort()).toEqual([
      ['key-removed', 1],
      ['rotation', 2],
    ]);
  });
});

describe('WAL store against a model (randomized)', () => {
  it('answers pushes, re-pushes and fetches of a few names as a Map does', async () => {
    repo = await createTestRepo();
    const wal = repo.repository.wal;
    let timeline = 0;
    type Model = Map<string, number>;
    interface Real {
      names: string[];
    }
    const contents = [0, 1, 2].map((n) => seededBytes(`content ${n}`, 1000 + n * 700_000));

    class Push implements fc.AsyncCommand<Model, Real> {
      constructor(
        readonly name: number,
        readonly content: number,
      ) {}
      check = () => true;
      async run(model: Model, real: Real) {
        const name = real.names[this.name]!;
        const stored = model.get(name);
        const attempt = wal.push(name, contents[this.content]!);
        if (stored === undefined) {
          expect((await attempt).stored).toBe(true);
          model.set(name, this.content);
        } else if (stored === this.content) expect((await attempt).stored).toBe(false);
        else await expect(attempt).rejects.toBeInstanceOf(WalConflictError);
      }
      toString = () => `push(${this.name}, ${this.content})`;
    }

    class Fetch implements fc.AsyncCommand<Model, Real> {
      constructor(readonly name: number) {}
      check = () => true;
      async run(model: Model, real: Real) {
        const stored = model.get(real.names[this.name]!);
        const fetched = await wal.fetch(real.names[this.name]!);
        if (stored === undefined) expect(fetched).toBeUndefined();
        else expect(fetched?.equals(contents[stored]!)).toBe(true);
      }
      toString = () => `fetch(${this.name})`;
    }

    class List implements fc.AsyncCommand<Model, Real> {
      check = () => true;
      async run(model: Model, real: Real) {
        const listed = await wal.list(real.names[0]!.slice(0, 8));
        expect(listed.map((file) => file.name)).toEqual([...model.keys()].sort());
      }
      toString = () => 'list';
    }

    const name = fc.nat({ max: 3 });
    const commands = fc.commands(
      [
        fc.tuple(name, fc.nat({ max: 2 })).map(([which, content]) => new Push(which, content)),
        name.map((which) => new Fetch(which)),
        fc.constant(new List()),
      ],
      { maxCommands: 25 },
    );
    await fc.assert(
      fc.asyncProperty(commands, async (run) => {
        // Each run gets a timeline of its own, so that runs share the repository and nothing else.
        const prefix = (++timeline).toString(16).toUpperCase().padStart(8, '0');
        const names = [
          segment(timeline, 1),
          segment(timeline, 2),
          `${prefix}.history`,
          `${segment(timeline, 2)}.partial`,
        ];
        await fc.asyncModelRun(() => ({ model: new Map(), real: { names } }), run);
      }),
      { seed: seed('WAL store model'), numRuns: rounds(40) },
    );
  });
});
