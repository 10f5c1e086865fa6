import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigRollbackError } from '../src/errors.ts';
import { defaultStateDirectory, LocalState } from '../src/repository/local-state.ts';

const REPOSITORY = 'ab'.repeat(32);
const seen = (time: string) => ({ time, host: 'db1', kind: 'stdin', name: 'notes', tags: [] });

describe('local state', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'strongbox-state-test-'));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('lives in STRONGBOX_STATE_DIR, else the XDG state directory, else ~/.local/state', () => {
    expect(defaultStateDirectory({ STRONGBOX_STATE_DIR: '/x', XDG_STATE_HOME: '/y', HOME: '/h' })).toBe('/x');
    expect(defaultStateDirectory({ XDG_STATE_HOME: '/y', HOME: '/h' })).toBe('/y/strongbox');
    expect(defaultStateDirectory({ HOME: '/h' })).toBe('/h/.local/state/strongbox');
  });

  it('is written 0600 in a 0700 directory, and refuses an older or different config', async () => {
    const directory = path.join(dir, 'state');
    const state = await LocalState.load(directory, REPOSITORY, '/repo', () => undefined);
    state.checkConfig(3, Buffer.from('config 3'));
    await state.save();
    expect((await stat(state.file)).mode & 0o777).toBe(0o600);
    expect((await stat(directory)).mode & 0o777).toBe(0o700);
    const again = await LocalState.load(directory, REPOSITORY, '/repo', () => undefined);
    expect(() => again.checkConfig(2, Buffer.from('config 2'))).toThrow(ConfigRollbackError);
    expect(() => again.checkConfig(3, Buffer.from('another config 3'))).toThrow(ConfigRollbackError);
    again.checkConfig(3, Buffer.from('config 3'));
    again.checkConfig(4, Buffer.from('config 4'));
    // A mirror of the repository (its id, another location) may lag behind: it has its own state.
    const mirror = await LocalState.load(directory, REPOSITORY, '/mirror', () => undefined);
    mirror.checkConfig(2, Buffer.from('config 2'));
  });

  it('merges what two processes of the same client saw, and reports what disappeared', async () => {
    const first = await LocalState.load(dir, REPOSITORY, '/repo', () => undefined);
    const second = await LocalState.load(dir, REPOSITORY, '/repo', () => undefined);
    first.see([{ id: '1'.repeat(64), header: seen('2026-01-01T00:00:00Z') }]);
    second.see([{ id: '2'.repeat(64), header: seen('2026-01-02T00:00:00Z') }]);
    await first.save();
    await second.save();
    const merged = await LocalState.load(dir, REPOSITORY, '/repo', () => undefined);
    expect(merged.disappeared(new Set(['1'.repeat(64)])).map((gone) => gone.id)).toEqual(['2'.repeat(64)]);
    merged.forgetSnapshots(['2'.repeat(64)]);
    await merged.save();
    const after = await LocalState.load(dir, REPOSITORY, '/repo', () => undefined);
    expect(after.disappeared(new Set())).toHaveLength(1);
  });

  it('warns and goes on when it cannot be written; refuses a damaged file', async () => {
    const warnings: string[] = [];
    const damaged = await LocalState.load(dir, REPOSITORY, '/repo', () => undefined);
    await writeFile(damaged.file, 'not json');
    await expect(LocalState.load(dir, REPOSITORY, '/repo', () => undefined)).rejects.toThrow(/is damaged/);
    await rm(damaged.file);
    const readOnly = path.join(dir, 'read-only');
    await writeFile(readOnly, '');
    // A file where the directory should be: mkdir fails as it would on a read-only home.
    const state = await LocalState.load(path.join(readOnly, 'state'), REPOSITORY, '/repo', (message) =>
      warnings.push(message),
    );
    state.checkConfig(1, Buffer.from('config'));
    await state.save();
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(
      /cannot keep the local state .*: a rolled-back config or deleted snapshots go unnoticed/,
    );
  });
});
