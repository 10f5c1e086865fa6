import { access } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openRepository } from '../../src/index.ts';
import { copyOutStatement, parseCopyFrom } from '../../src/postgres/queries.ts';
import { runCli, tempRepo, type TempRepo, expectExit } from '../helpers/cli.ts';
import { startCluster, type TestCluster, socketUrl } from '../helpers/postgres.ts';

/**
 * A snapshot records each table's COPY statement as pg_dump wrote it. Whoever can write a
 * snapshot (a write-only key on a compromised database host) chooses that text: it must never
 * reach the database whose restore is verified, where the verifying role is often a superuser.
 */
describe('attack: SQL planted in a snapshot', () => {
  let cluster: TestCluster;
  let repo: TempRepo;
  const to = (database: string) => socketUrl(cluster, database);

  beforeAll(async () => {
    cluster = await startCluster();
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
    await cluster.createDatabase('shop');
    await cluster.psql(
      'create table items (id int primary key, "Odd ""name""" text); insert into items select g, g::text from generate_series(1, 10) g',
      'shop',
    );
    expectExit(
      await runCli(['backup', 'postgres'], { env: { ...repo.env, ...cluster.env(), PGDATABASE: 'shop' } }),
      0,
    );
  });
  afterAll(async () => {
    await cluster?.stop();
    await repo?.cleanup();
  });

  it('never runs a COPY statement read from a snapshot: verify refuses the record (exit 7)', async () => {
    // What the server would run as the verifying superuser: a file written by its OS user.
    const planted = path.join(cluster.host, 'planted-by-snapshot');
    const repository = await openRepository({ repo: repo.repo, passphrase: 'correct horse battery staple' });
    const [original] = await repository.listSnapshots({ kind: 'postgres' });
    const { header, body } = await repository.loadSnapshot(original!.id);
    const source = body.source as { tables: { copyStatement: string }[] };
    // The form the old code turned into SQL: "COPY (.+) FROM stdin;" with "(.+) TO STDOUT" run.
    source.tables[0]!.copyStatement = `COPY (select 1) TO PROGRAM 'touch ${planted}'; select 1 FROM stdin;\n`;
    const forged = await repository.saveSnapshot({ ...header, time: new Date().toISOString() }, body);

    const verified = await runCli(['verify', forged.id, '--to', to('shop')], { env: repo.env });
    expectExit(verified, 7);
    expect(verified.stderr).toMatch(
      /the snapshot's COPY statement for public\.items is not one pg_dump writes/,
    );
    await expect(access(planted)).rejects.toThrow();

    const restored = await runCli(['restore', forged.id, '--to', to('shop_copy')], { env: repo.env });
    expectExit(restored, 7);
    await expect(access(planted)).rejects.toThrow();
    // The real snapshot still verifies.
    expectExit(await runCli(['verify', original!.id, '--to', to('shop')], { env: repo.env }), 0);
  });

  it('reads back exactly the statements pg_dump writes, quoted, and nothing else', () => {
    const table = (copyStatement: string, schema = 'public', name = 'items') => ({
      schema,
      name,
      copyStatement,
    });
    expect(copyOutStatement(table('COPY public.items (id, "Odd ""name""") FROM stdin;\n'))).toBe(
      'COPY "public"."items" ("id", "Odd ""name""") TO STDOUT',
    );
    expect(copyOutStatement(table('COPY "Odd Schema".nocols  FROM stdin;\n', 'Odd Schema', 'nocols'))).toBe(
      'COPY "Odd Schema"."nocols" TO STDOUT',
    );
    for (const statement of [
      "COPY (select 1) TO PROGRAM 'id'; select 1 FROM stdin;",
      'COPY public.items (id) FROM stdin; drop table items;',
      'COPY public.items (id) FROM stdin;\nselect 1',
      "COPY public.items (id) TO PROGRAM 'id' FROM stdin;",
      'COPY public.items (id, name); FROM stdin;',
      'COPY public.Items (id) FROM stdin;',
      'COPY public.items ("id) FROM stdin;',
      'COPY public.other (id) FROM stdin;',
      'COPY items (id) FROM stdin;',
    ])
      expect(() => copyOutStatement(table(statement)), statement).toThrow(/not one pg_dump writes/);
    expect(parseCopyFrom('COPY "a"".b".c (x) FROM stdin;')).toEqual({
      schema: 'a".b',
      table: 'c',
      columns: ['x'],
    });
  });
});
