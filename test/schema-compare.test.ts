import { describe, expect, it } from 'vitest';
import { compareSchemas } from '../src/postgres/logical/schema-fingerprint.ts';

const both = { owners: true, viewRows: true };

describe('compareSchemas', () => {
  it('names privileges gained and lost, quoted grantees and PUBLIC included', () => {
    const recorded = {
      'table s.t': { owner: 'alice', acl: '"odd ""one"""=r/alice =a/alice alice=arwdDxt/alice' },
    };
    const actual = { 'table s.t': { owner: 'alice', acl: '=ar*/alice alice=arwdDxt/alice' } };
    expect(compareSchemas(recorded, actual, both).differences).toEqual([
      'table s.t: GRANT SELECT TO "odd ""one""" missing, GRANT SELECT WITH GRANT OPTION TO PUBLIC added',
    ]);
  });

  it('without owners, compares privileges with the owner entry and grantors left out', () => {
    const recorded = { 'table s.t': { owner: 'alice', acl: 'alice=arwdDxt/alice reporting=r/alice' } };
    const restored = {
      'table s.t': { owner: 'restorer', acl: 'reporting=r/restorer restorer=arwdDxt/restorer' },
    };
    expect(compareSchemas(recorded, restored, { owners: false, viewRows: true })).toEqual({
      differences: [],
      notes: [],
    });
    expect(compareSchemas(recorded, restored, both).differences).toEqual([
      'table s.t: GRANT INSERT, SELECT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER TO alice missing, GRANT INSERT, SELECT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER TO restorer added',
      'table s.t: owner alice backed up, restorer found',
    ]);
  });

  it('reports objects missing and added, properties added, removed and changed', () => {
    const recorded = {
      'function s.f(integer)': { definition: 'sha256:aa' },
      'column s.t.a': { type: 'integer', comment: 'the a' },
      'index s.i': { definition: 'CREATE INDEX i ON s.t USING btree (a)' },
    };
    const actual = {
      'function s.f(integer)': { definition: 'sha256:bb' },
      'column s.t.a': { type: 'bigint', default: '0' },
      'trigger s.t.g': { enabled: 'O' },
    };
    expect(compareSchemas(recorded, actual, both).differences).toEqual([
      'column s.t.a: comment removed (was the a)',
      'column s.t.a: default added (0)',
      'column s.t.a: type integer backed up, bigint found',
      'function s.f(integer): definition differs',
      'index s.i: missing',
      'trigger s.t.g: not in the backup',
    ]);
  });

  it('takes a child table whose columns come back in its parent order for a note', () => {
    const child = (columns: string) => ({ 'table s.c': { inherits: 's.p', columns } });
    const compared = compareSchemas(child('"x, y", a, b'), child('a, b, "x, y"'), both);
    expect(compared.differences).toEqual([]);
    expect(compared.notes).toHaveLength(1);
    // A column lost is no note.
    expect(compareSchemas(child('x, a, b'), child('a, b'), both).differences).toHaveLength(1);
    // Nor is another order in a table that inherits nothing.
    const plain = (columns: string) => ({ 'table s.t': { columns } });
    expect(compareSchemas(plain('b, a'), plain('a, b'), both).differences).toHaveLength(1);
  });
});
