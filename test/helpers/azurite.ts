import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { BlobServiceClient, StorageSharedKeyCredential } from '@azure/storage-blob';

/** Azurite's built-in development account, published in Azurite's and Azure's documentation. */
export const AZURITE_ACCOUNT = 'devstoreaccount1';
export const AZURITE_KEY =
  'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==';

const BLOB_ENTRY = path.join(
  path.dirname(createRequire(import.meta.url).resolve('azurite/package.json')),
  'dist/src/blob/main.js',
);
const READY = /listens on http:\/\/[^\s:]+:(\d+)/;

export interface Azurite {
  host: string;
  port: number;
  /** The blob endpoint of the development account: http://127.0.0.1:PORT/devstoreaccount1. */
  endpoint: string;
  /** An SDK client with the development key, for setting up and inspecting from tests. */
  service: BlobServiceClient;
  /** Creates a container with a fresh name and returns the name. */
  createContainer(): Promise<string>;
  stop(): Promise<void>;
}

/** Servers still running, killed if the test process exits without stopping them. */
const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * Starts Azurite's blob service on a free loopback port (it binds port 0 and prints the port it
 * got), keeping everything in memory, in a temp working directory removed on stop.
 */
export async function startAzurite(): Promise<Azurite> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'strongbox-azurite-'));
  const child = spawn(
    process.execPath,
    [
      BLOB_ENTRY,
      '--blobHost',
      '127.0.0.1',
      '--blobPort',
      '0',
      '--inMemoryPersistence',
      '--extentMemoryLimit',
      '1024',
      '--disableTelemetry',
      '--skipApiVersionCheck',
      '--silent',
    ],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
  );
  running.add(child);
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.kill('SIGKILL');
      await exited;
    }
    running.delete(child);
    rmSync(dir, { recursive: true, force: true });
  };
  let port: number;
  try {
    port = await new Promise<number>((resolve, reject) => {
      let output = '';
      const collect = (data: Buffer): void => {
        output += data.toString();
        const match = READY.exec(output);
        if (match) resolve(Number(match[1]));
      };
      child.stdout.on('data', collect);
      child.stderr.on('data', collect);
      child.once('error', reject);
      child.once('exit', (code, signal) =>
        reject(new Error(`azurite-blob exited (${code ?? signal}) before listening:\n${output}`)),
      );
    });
  } catch (error) {
    await stop();
    throw error;
  }
  // Drained so that a chatty server never blocks on a full pipe.
  child.stdout.resume();
  child.stderr.resume();
  const host = '127.0.0.1';
  const endpoint = `http://${host}:${port}/${AZURITE_ACCOUNT}`;
  const service = new BlobServiceClient(
    endpoint,
    new StorageSharedKeyCredential(AZURITE_ACCOUNT, AZURITE_KEY),
  );
  return {
    host,
    port,
    endpoint,
    service,
    async createContainer() {
      const name = `test-${randomBytes(6).toString('hex')}`;
      await service.getContainerClient(name).create();
      return name;
    },
    stop,
  };
}
