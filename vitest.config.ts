import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    setupFiles: ['test/helpers/setup.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Tests start real processes and servers; two cores are shared between them. Three test files
    // at a time finished no sooner (the CPU, not the waiting, is what the suite runs out of), and
    // under that load a randomized test of three concurrent writers stalled past its limit once.
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
  },
});
