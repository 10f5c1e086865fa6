import { promises as fs } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

/**
 * What a scratch cluster (a drill's, a table recovery's) runs with beside its recovery settings:
 * no archiving, as it must never archive into the repository it came from, and no TCP listener.
 */
export const SCRATCH_SETTINGS: Readonly<Record<string, string>> = {
  archive_mode: 'off',
  listen_addresses: '',
};

/** A temporary directory for a scratch cluster's data directory, which the server's user can enter. */
export async function scratchDirectory(prefix: string): Promise<string> {
  const directory = await fs.mkdtemp(path.join(os.tmpdir(), prefix));
  await fs.chmod(directory, 0o711);
  return directory;
}

/** A TCP port nothing listens on now, for a scratch server of our own. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
