import { describe, expect, it } from 'vitest';
import { expectExit, runCli } from '../helpers/cli.ts';

/**
 * A repository location may carry a secret (an S3 key, an SFTP token in the query string, an
 * endpoint with a password). Whatever is wrong with the location, the message that says so must
 * not print the secret: it ends up in cron mail, CI logs and terminals.
 */
describe('attack: a secret in a repository location that is refused', () => {
  const SECRET = 'secretvalue42';
  it.each([
    ['an S3 location that is no URL', `s3://AKIAEXAMPLE:${SECRET}@bad host/bucket`],
    ['an SFTP location with a token and no directory', `sftp://backup@127.0.0.1?token=${SECRET}`],
    ['an SFTP location with a token and a bad escape', `sftp://backup@127.0.0.1/srv/%zz?token=${SECRET}`],
    [
      'an S3 endpoint of another scheme with a password',
      `s3://bucket/p?endpoint=${encodeURIComponent(`ftp://u:${SECRET}@h`)}`,
    ],
    [
      'an S3 endpoint that is no URL',
      `s3://bucket/p?endpoint=${encodeURIComponent(`https://u:${SECRET}@[x`)}`,
    ],
  ])('%s: exit 3, and the secret is nowhere in the output', async (_what, location) => {
    const result = await runCli(['snapshots'], {
      env: {
        STRONGBOX_REPO: location,
        STRONGBOX_PASSWORD: 'p',
        AWS_ACCESS_KEY_ID: 'a',
        AWS_SECRET_ACCESS_KEY: 'b',
      },
    });
    expectExit(result, 3);
    expect(result.stdout.toString() + result.stderr).not.toContain(SECRET);
    expect(result.stderr).toMatch(/^strongbox: /);
  });
});
