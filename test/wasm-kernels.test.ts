import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const root = path.resolve(import.meta.dirname, '..');

describe('WebAssembly kernels', () => {
  // The kernels' bytes are committed beside their C sources; this proves they are what the
  // sources compile to. It needs clang and wasm-ld (.ci/run installs them).
  it('are what their C sources compile to', async () => {
    const { stderr } = await promisify(execFile)(
      'bash',
      [path.join(root, 'scripts/build-wasm.sh'), '--check'],
      {
        cwd: root,
      },
    );
    expect(stderr).toBe('');
  });
});
