import { readFileSync } from 'node:fs';

/** The version from package.json, read once; recorded in every snapshot as the program that wrote it. */
const packageJson = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

export const VERSION = packageJson.version;
export const PROGRAM = `strongbox ${VERSION}`;
