import { describe, expect, it } from 'vitest';
import { firstError } from '../src/postgres/tools.ts';

describe('the error a PostgreSQL program printed', () => {
  it('is its first error line, without the program prefix', () => {
    const stderr = 'pg_dump: warning: something\npg_dump: error: connection to server failed: no such file\n';
    expect(firstError(stderr, 'pg_dump')).toBe('connection to server failed: no such file');
  });

  it("adds the server's words when pg_dump gives them on the next line", () => {
    // pg_dump 15 whose backend was terminated while it read a table's rows.
    const stderr = [
      'pg_dump: error: Dumping the contents of table "orders" failed: PQgetCopyData() failed.',
      'pg_dump: detail: Error message from server: FATAL:  terminating connection due to administrator command',
      'pg_dump: detail: Command was: COPY public.orders (id, note) TO stdout;',
    ].join('\n');
    expect(firstError(stderr, 'pg_dump')).toBe(
      'Dumping the contents of table "orders" failed: PQgetCopyData() failed: FATAL:  terminating connection due to administrator command',
    );
  });

  it('is the last line when none says error', () => {
    expect(firstError('psql: FATAL: no\nsomething else\n', 'psql')).toBe('something else');
  });
});
