import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { cleanEnv } from './helpers/cli.ts';

/** `npm run demo` is the README's first command: it runs end to end and shows what it says. */

const ROOT = fileURLToPath(new URL('../', import.meta.url));

function runDemo(env: Record<string, string> = {}): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['scripts/demo.sh'], {
      cwd: ROOT,
      env: { ...cleanEnv(), ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (text: string) => (output += text));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (output += text));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

/** The files part, the same with or without PostgreSQL. */
function expectFilesPart(output: string): void {
  expect(output).toContain('restored tree is identical');
  expect(output).toContain('restored stream is identical');
  expect(output).toContain('no errors were found');
  const work = /created repository \w+ at (\S+)\/repo/.exec(output)?.[1];
  expect(work, output).toBeDefined();
  expect(existsSync(work!), 'the demo removes its directory').toBe(false);
}

describe('npm run demo', () => {
  it(
    'backs up a PostgreSQL cluster of its own, restores it, catches a changed row, then files',
    { timeout: 240_000 },
    async () => {
      const { code, output } = await runDemo();
      expect(code, output).toBe(0);
      const cluster = /== a throwaway PostgreSQL [\d.]+ cluster in (\S+) \(port \d+/.exec(output)?.[1];
      expect(cluster, output).toBeDefined();
      expect(existsSync(cluster!), 'the cluster is removed').toBe(false);

      const saved = [...output.matchAll(/^snapshot (\w{8}) saved(?: \(parent (\w{8})\))?$/gm)];
      // Two of the database, then two of the files.
      expect(saved.length, output).toBe(4);
      expect(saved[1]![2], 'the second database backup has the first as its parent').toBe(saved[0]![1]);
      const second = output.slice(saved[1]!.index);
      const ratio = Number(/deduplication (\d+(?:\.\d+)?):1/.exec(second)?.[1]);
      expect(ratio, output).toBeGreaterThan(20);

      expect(output).toMatch(/restored snapshot \w{8} into \S+\/shop_restored/);
      expect(output).toMatch(/tables +2 \(102500 rows\) +all match/);
      expect(output).toMatch(/public\.orders: .*contents differ/);
      expect(output).toContain('verify caught the changed row: exit 7');
      expectFilesPart(output);
    },
  );

  it('without PostgreSQL says how to install it, and shows the rest', { timeout: 240_000 }, async () => {
    const { code, output } = await runDemo({ PG_BIN: '/nonexistent' });
    expect(code, output).toBe(0);
    expect(output.split('\n').filter((line) => line.includes('PostgreSQL'))).toEqual([
      expect.stringMatching(
        /^== PostgreSQL part skipped: .*install them \(Debian\/Ubuntu: apt-get install postgresql/,
      ),
    ]);
    expect(output).not.toContain('backup postgres');
    expectFilesPart(output);
  });
});
