#!/usr/bin/env node
import { setFlagsFromString } from 'node:v8';
import { runWalClient } from './wal-client.ts';

// V8 grows the young generation of a long, busy run to 48 MiB, and a backup's short-lived garbage
// (stream pieces, promises) does not need it: kept at its starting size, a physical backup peaks
// ~30 MiB lower, no slower (the pack workers are started the same way, with resourceLimits). Only
// the growth can be changed once V8 runs: its maximum is fixed at start.
setFlagsFromString('--semi-space-growth-factor=1');

// PostgreSQL runs `wal push` for every WAL segment it archives and `wal fetch` for every one it
// replays. When a WAL daemon runs, they are answered by it with only node: modules loaded
// (wal-client.ts); the whole program (program.ts: commander, every command, the repository) loads
// only for everything else, and for those when no daemon answers.
const code = await runWalClient(process.argv.slice(2));
if (code === undefined) await import('./program.ts');
else process.exitCode = code;
