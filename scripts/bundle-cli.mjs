// Builds the `strongbox` command as a few files (dist/bin/) rather than the ~300 modules tsc emits:
// Node 20 parses and links each ES module apart and has no compile cache, which made loading them
// half of every command's start (0.45 s of CPU). PostgreSQL runs a command per WAL segment when no
// daemon answers, and the test suite runs about a thousand.
//
// - The worker threads are entry points of their own, named as startWorker() asks for them and
//   written beside the chunks that start them.
// - Packages stay outside, loaded from node_modules as before: the storage SDKs and nodemailer
//   are imported only by the commands that need them, zstd-napi is a native addon, and the
//   CommonJS ones (commander, picomatch, yaml) need a real `require`. zod, 95 small ES modules,
//   is bundled.
// - version.ts reads ../package.json beside itself, which no longer holds once bundled: the version
//   is written in at build time.
import { build } from 'esbuild';
import { readFile, rm } from 'node:fs/promises';
import { URL } from 'node:url';

const root = new URL('../', import.meta.url);
const { version } = JSON.parse(await readFile(new URL('package.json', root), 'utf8'));

/** Packages bundled rather than loaded from node_modules. */
const BUNDLED_PACKAGES = new Set(['zod']);

// Chunk names change with their content: stale ones would pile up.
await rm(new URL('dist/bin/', root), { recursive: true, force: true });

await build({
  absWorkingDir: root.pathname,
  entryPoints: {
    strongbox: 'src/cli/main.ts',
    'pack-worker': 'src/repository/pack-worker.ts',
    'wal-encoder-worker': 'src/repository/wal-encoder-worker.ts',
    'pipe-reader-worker': 'src/postgres/physical/pipe-reader-worker.ts',
  },
  outdir: 'dist/bin',
  chunkNames: 'chunk-[hash]',
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  logLevel: 'warning',
  plugins: [
    {
      name: 'strongbox-build',
      setup(builder) {
        builder.onResolve({ filter: /^[^./]/ }, ({ path }) => {
          const name = path.startsWith('@') ? path.split('/').slice(0, 2).join('/') : path.split('/')[0];
          return BUNDLED_PACKAGES.has(name) ? undefined : { path, external: true };
        });
        builder.onLoad({ filter: /[/\\]src[/\\]version\.ts$/ }, () => ({
          loader: 'ts',
          contents: [
            `export const VERSION = ${JSON.stringify(version)};`,
            'export const PROGRAM = `strongbox ${VERSION}`;',
          ].join('\n'),
        }));
      },
    },
  ],
});
