#!/usr/bin/env node
import { runWalClient } from './wal-client.ts';

// PostgreSQL runs `wal push` for every WAL segment it archives and `wal fetch` for every one it
// replays. When a WAL daemon runs, they are answered by it with only node: modules loaded
// (wal-client.ts); the whole program (program.ts: commander, every command, the repository) loads
// only for everything else, and for those when no daemon answers.
const code = await runWalClient(process.argv.slice(2));
if (code === undefined) await import('./program.ts');
else process.exitCode = code;
