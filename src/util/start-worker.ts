import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker, type WorkerOptions } from 'node:worker_threads';

/**
 * Starts the worker module `name` that sits beside the module whose URL is `beside`
 * (`import.meta.url`). Built, it is `name.js`. Run from TypeScript sources (tests, tsx), it is
 * `name.ts`, loaded through tsx's loader: a worker does not inherit the parent's loader, and Node
 * 20 ignores `--import` in a worker's execArgv.
 */
export function startWorker(beside: string, name: string, options: WorkerOptions = {}): Worker {
  if (!beside.endsWith('.ts')) return new Worker(new URL(`./${name}.js`, beside), options);
  // require.resolve finds the CommonJS build; its ESM twin beside it is the one that registers cleanly.
  const tsx = pathToFileURL(
    createRequire(import.meta.url)
      .resolve('tsx/esm/api')
      .replace(/\.cjs$/, '.mjs'),
  ).href;
  const source = new URL(`./${name}.ts`, beside).href;
  const bootstrap = `import(${JSON.stringify(tsx)}).then((api) => { api.register(); return import(${JSON.stringify(source)}); });`;
  return new Worker(bootstrap, { ...options, eval: true });
}
