import { afterAll, beforeAll } from 'vitest';
import { openSftpBackend } from '../src/storage/sftp.ts';
import { describeBackendConformance } from './helpers/backend-conformance.ts';
import { startSshd, type TestSshd } from './helpers/sshd.ts';

let sshd: TestSshd;
let repositories = 0;

beforeAll(async () => {
  sshd = await startSshd();
});
afterAll(() => sshd?.stop());

describeBackendConformance('sftp', () =>
  openSftpBackend(new URL(sshd.url(`${sshd.dir}/conformance-${++repositories}`)), sshd.env()),
);
