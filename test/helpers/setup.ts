import { chmodSync, mkdtempSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/**
 * Each test file is one client with its own local state (repository/local-state.ts), never the
 * state of the user running the tests. World-writable, as /tmp is, for commands run as another user.
 */
const directory = mkdtempSync(path.join(os.tmpdir(), 'strongbox-state-'));
chmodSync(directory, 0o1777);
process.env.STRONGBOX_STATE_DIR = directory;
