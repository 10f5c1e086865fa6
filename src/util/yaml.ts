import { createRequire } from 'node:module';
import type * as Yaml from 'yaml';

let loaded: typeof Yaml | undefined;

/**
 * The yaml package, loaded when first needed: only a configuration file and `generate alerts`
 * use it, and loading it at start cost every command about 50 ms (PostgreSQL runs `wal push`
 * for every segment).
 */
export function yaml(): typeof Yaml {
  loaded ??= createRequire(import.meta.url)('yaml') as typeof Yaml;
  return loaded;
}
