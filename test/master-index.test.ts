import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { BlobTypeValue, CompressionValue } from '../src/repository/blob.ts';
import {
  MasterIndex,
  sameLocation,
  serializeIndex,
  type IndexedBlob,
  type IndexedPackRecord,
} from '../src/repository/master-index.ts';

/**
 * MasterIndex against a plain model: Maps of what each index file said, every distinct listing of
 * a blob kept (any writer can add index files, so none may replace another). Random packs of blobs drawn from a small pool, with delta bases drawn from the same
 * pool (often not added yet, as when index files load in another order), added to indexes that
 * start with room for one, two or three blobs, so that every growth boundary is crossed with
 * references on both sides of it.
 */

interface ModelBlob extends IndexedBlob {
  id: string;
}

interface Model {
  /** Every place of each blob, the one `get` gives first. */
  blobs: Map<string, ModelBlob[]>;
  packs: Map<string, { listings: [number, string][]; indexFiles: Set<string> }>;
}

const hexId = (n: number, width = 64) => n.toString(16).padStart(width, '0');

function blobArbitrary(pool: number) {
  return fc.record({
    id: fc.integer({ min: 0, max: pool - 1 }).map((n) => hexId(n)),
    base: fc.option(
      fc.integer({ min: 0, max: pool - 1 }).map((n) => hexId(n)),
      { nil: undefined },
    ),
    type: fc.constantFrom<BlobTypeValue>(0, 1),
    offset: fc.nat({ max: 0xffffffff }),
    length: fc.nat({ max: 0xffffffff }),
    rawLength: fc.nat({ max: 0xffffffff }),
    compression: fc.constantFrom<CompressionValue>(0, 1),
    level: fc.integer({ min: -7, max: 22 }).map((level) => Math.max(0, level)),
    sketch: fc.option(fc.array(fc.nat({ max: 0xffffffff }), { maxLength: 10 }), { nil: undefined }),
  });
}

type GeneratedBlob = ReturnType<typeof blobArbitrary> extends fc.Arbitrary<infer T> ? T : never;

function record(packNumber: number, size: number, blobs: GeneratedBlob[]): IndexedPackRecord {
  const sketches = new Map<string, number[]>();
  const entries = blobs.map(({ sketch, base, ...blob }) => {
    if (sketch) sketches.set(blob.id, sketch);
    // A blob is never its own base.
    return base !== undefined && base !== blob.id ? { ...blob, base } : blob;
  });
  return { id: hexId(packNumber), size, keys: Buffer.from([packNumber & 0xff]), blobs: entries, sketches };
}

class AddPack implements fc.Command<Model, MasterIndex> {
  constructor(
    readonly pack: IndexedPackRecord,
    readonly indexFile: string | undefined,
    readonly viaFile: boolean,
  ) {}

  check(): boolean {
    return true;
  }

  run(model: Model, index: MasterIndex): void {
    if (this.viaFile && this.indexFile) {
      // Through the serialized form, as index files are read back.
      index.addIndexFile(this.indexFile, JSON.parse(JSON.stringify(serializeIndex([this.pack]))));
    } else {
      index.addPack(this.pack, this.indexFile);
    }
    const pack = model.packs.get(this.pack.id) ?? { listings: [], indexFiles: new Set() };
    const listing: [number, string] = [this.pack.size, this.pack.keys.toString('hex')];
    if (!pack.listings.some(([size, keys]) => size === listing[0] && keys === listing[1]))
      pack.listings.push(listing);
    if (this.indexFile) pack.indexFiles.add(this.indexFile);
    model.packs.set(this.pack.id, pack);
    for (const blob of this.pack.blobs) {
      const sketch = this.pack.sketches?.get(blob.id)?.slice(0, 8);
      const { id, ...location } = blob;
      const entry: ModelBlob = { id, ...location, pack: this.pack.id };
      if (sketch && sketch.length > 0) entry.sketch = sketch;
      const places = model.blobs.get(id);
      if (!places) {
        model.blobs.set(id, [entry]);
        continue;
      }
      const listed = places.find((place) => sameLocation(place, entry));
      if (listed) listed.sketch ??= entry.sketch;
      else if (entry.base === undefined && places[0]!.base !== undefined)
        places.push(places.splice(0, 1, entry)[0]!);
      else places.push(entry);
    }
    compare(model, index);
  }

  toString(): string {
    return `addPack(${this.pack.id.slice(-3)}, ${this.pack.blobs.length} blobs${this.viaFile ? ', via file' : ''})`;
  }
}

const sorted = (places: IndexedBlob[]) =>
  places.map((place) => JSON.stringify(place, Object.keys(place).sort())).sort();

function compare(model: Model, index: MasterIndex): void {
  expect(index.blobCount).toBe(model.blobs.size);
  expect(index.packCount).toBe(model.packs.size);
  const expected = (blob: ModelBlob): IndexedBlob => {
    const { id: _id, ...rest } = blob;
    return rest;
  };
  const readable = (places: ModelBlob[]) =>
    places.some(
      (place) =>
        place.base === undefined ||
        (model.blobs.get(place.base) ?? []).some((base) => base.base === undefined),
    );
  for (const [id, places] of model.blobs) {
    expect(index.has(id)).toBe(true);
    expect(index.get(id)).toEqual(expected(places[0]!));
    expect(index.rawLength(id)).toBe(places[0]!.rawLength);
    expect(index.idAt(index.slotOf(id)!)).toBe(id);
    expect(sorted(index.locations(id))).toEqual(sorted(places.map(expected)));
    expect(index.whyUnreadable(id) === undefined).toBe(readable(places));
  }
  expect(new Map(index.entries())).toEqual(
    new Map([...model.blobs].map(([id, places]) => [id, expected(places[0]!)])),
  );
  expect([...index.everyLocation()].length).toBe([...model.blobs.values()].flat().length);
  const sketches = new Map([...index.sketches()].map(([slot, sketch]) => [index.idAt(slot), sketch]));
  const expectedSketches = new Map(
    [...model.blobs.values()]
      .map((places) => places[0]!)
      .filter((blob) => blob.sketch && blob.base === undefined)
      .map((blob) => [blob.id, blob.sketch!]),
  );
  expect(sketches).toEqual(expectedSketches);
  for (const [id, pack] of model.packs) {
    const indexed = index.pack(id)!;
    expect(indexed.listings.map(({ size, keys }) => [size, keys.toString('hex')])).toEqual(pack.listings);
    expect(indexed.indexFiles).toEqual(pack.indexFiles);
  }
  expect([...index.packIdList()].sort()).toEqual([...model.packs.keys()].sort());
}

function commandsArbitrary(pool: number) {
  const addPack = fc
    .record({
      packNumber: fc.integer({ min: 0, max: 30 }),
      size: fc.nat(),
      blobs: fc.array(blobArbitrary(pool), { minLength: 0, maxLength: 12 }),
      indexFile: fc.option(
        fc.integer({ min: 0, max: 5 }).map((n) => `index/${hexId(n)}`),
        { nil: undefined },
      ),
      viaFile: fc.boolean(),
    })
    .map(({ packNumber, size, blobs, indexFile, viaFile }) => {
      return new AddPack(record(packNumber, size, blobs), indexFile, viaFile);
    });
  return fc.commands([addPack], { maxCommands: 40 });
}

describe('MasterIndex (model-based)', () => {
  it('answers as a plain model does, across every growth boundary', () => {
    const runs = fc
      .tuple(fc.integer({ min: 1, max: 3 }), fc.integer({ min: 2, max: 90 }))
      .chain(([capacity, pool]) => fc.tuple(fc.constant(capacity), commandsArbitrary(pool)));
    fc.assert(
      fc.property(runs, ([capacity, commands]) => {
        const model: Model = { blobs: new Map(), packs: new Map() };
        fc.modelRun(() => ({ model, real: new MasterIndex(capacity) }), commands);
      }),
      { numRuns: 300 },
    );
  });

  it('keeps every listing of a place, in whatever order index files give them (index poisoning)', () => {
    const place = {
      id: hexId(7),
      type: 0 as const,
      offset: 100,
      length: 50,
      rawLength: 80,
      compression: 1 as const,
      level: 3,
    };
    const pack = hexId(1);
    const records: IndexedPackRecord[] = [
      { id: pack, size: 1000, keys: Buffer.from('written'), blobs: [place] },
      { id: pack, size: 1000, keys: Buffer.from('forged'), blobs: [{ ...place, length: 51 }] },
      { id: pack, size: 999, keys: Buffer.from('written'), blobs: [{ ...place, compression: 0 }] },
      { id: pack, size: 1000, keys: Buffer.from('written'), blobs: [place] },
    ];
    const permutations = (items: number[]): number[][] =>
      items.length <= 1
        ? [items]
        : items.flatMap((item, i) =>
            permutations(items.filter((_, j) => j !== i)).map((rest) => [item, ...rest]),
          );
    for (const order of permutations([0, 1, 2, 3])) {
      const index = new MasterIndex(1);
      for (const i of order) index.addPack(records[i]!, `index/${i}`);
      expect(sorted(index.locations(place.id))).toEqual(
        sorted(
          records.slice(0, 3).map(({ blobs: [blob] }) => {
            const { id: _id, ...location } = blob!;
            return { ...location, pack };
          }),
        ),
      );
      expect(
        index
          .pack(pack)!
          .listings.map(({ size, keys }) => `${size} ${keys.toString()}`)
          .sort(),
      ).toEqual(['1000 forged', '1000 written', '999 written']);
    }
  });

  it('keeps a base met first as the blob that grows the arrays (the data-loss case)', () => {
    const index = new MasterIndex(2);
    const blob = (n: number, base?: number) => ({
      id: hexId(n),
      type: 0 as const,
      offset: n,
      length: 10,
      rawLength: 20,
      compression: 1 as const,
      level: 1,
      ...(base === undefined ? {} : { base: hexId(base) }),
    });
    // Slots 0 and 1 fill the arrays; the delta takes slot 1 and its unseen base slot 2 grows them.
    index.addPack({ id: hexId(1), size: 1, keys: Buffer.alloc(1), blobs: [blob(10)] });
    index.addPack({ id: hexId(2), size: 1, keys: Buffer.alloc(1), blobs: [blob(11, 12)] });
    index.addPack({ id: hexId(3), size: 1, keys: Buffer.alloc(1), blobs: [blob(12)] });
    expect(index.get(hexId(11))?.base).toBe(hexId(12));
  });

  it('holds thousands of blobs at the default size, each delta listed before its base', () => {
    const index = new MasterIndex();
    const count = 5001;
    // Odd blobs are deltas of the next one, unseen until the next blob: the bases take the even
    // slots, 1024 among them, so a base is what grows the arrays.
    const hasBase = (n: number) => n % 2 === 1 && n + 1 < count;
    for (let start = 0; start < count; start += 97) {
      const blobs = Array.from({ length: Math.min(97, count - start) }, (_, k) => start + k).map((n) => ({
        id: hexId(n),
        type: 0 as const,
        offset: n,
        length: 1,
        rawLength: n,
        compression: 1 as const,
        level: 3,
        ...(hasBase(n) ? { base: hexId(n + 1) } : {}),
      }));
      index.addPack({ id: hexId(start, 8), size: start, keys: Buffer.alloc(1), blobs });
    }
    expect(index.blobCount).toBe(count);
    for (let n = 0; n < count; n++) {
      const blob = index.get(hexId(n))!;
      expect(blob.rawLength).toBe(n);
      expect(blob.base).toBe(hasBase(n) ? hexId(n + 1) : undefined);
    }
  });
});
