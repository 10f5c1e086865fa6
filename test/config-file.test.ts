import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BUILT_IN_POLICIES,
  configFileFrom,
  defaultConfig,
  loadConfigFile,
  namedPolicy,
} from '../src/config-file/config-file.ts';
import { ConfigError } from '../src/errors.ts';
import { parseRetentionDuration, UNLIMITED } from '../src/retention/policy.ts';
import { expectExit, runCli, tempRepo, type TempRepo } from './helpers/cli.ts';

let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'strongbox-config-'));
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

let files = 0;
/** A real file in the test's directory holding `text`. */
async function configFile(text: string): Promise<string> {
  const file = path.join(dir, `config-${++files}.yaml`);
  await writeFile(file, text);
  return file;
}

/** The ConfigError loading `text` gives. */
async function loadError(text: string): Promise<ConfigError> {
  const file = await configFile(text);
  const error = await loadConfigFile(file).then(
    () => undefined,
    (error: unknown) => error,
  );
  expect(error).toBeInstanceOf(ConfigError);
  expect((error as ConfigError).message).toContain(file);
  return error as ConfigError;
}

const EXAMPLE = `
version: 1
policies:
  production:
    env: production
    tags: [team=db]
    keep-daily: 30
    keep-weekly: 12
    keep-monthly: unlimited
    keep-within: 30d
    keep-tag: [keep, "release,env=production"]
    group-by: [host, name]
    timezone: Europe/Berlin
  archive:
    keep-within-daily: 30d
    keep-within-weekly: 90d
    keep-within-monthly: 1y
    keep-within-yearly: 7y
`;

describe('the configuration file', () => {
  it('reads policies, replacing a built-in one by name and keeping the others', async () => {
    const file = await configFile(EXAMPLE);
    const config = await loadConfigFile(file);
    expect(config.file).toBe(file);
    expect(config.version).toBe(1);
    expect(Object.keys(config.policies).sort()).toEqual(['archive', 'development', 'production', 'staging']);
    expect(namedPolicy(config, 'production')).toEqual({
      name: 'production',
      source: file,
      policy: {
        daily: 30,
        weekly: 12,
        monthly: UNLIMITED,
        within: parseRetentionDuration('30d'),
        keepTags: [['keep'], ['release', 'env=production']],
      },
      filter: { env: 'production', tags: ['team=db'] },
      groupBy: ['host', 'name'],
      timeZone: 'Europe/Berlin',
    });
    expect(namedPolicy(config, 'archive')).toMatchObject({
      filter: {},
      groupBy: ['host', 'kind', 'name'],
      policy: { withinYearly: parseRetentionDuration('7y') },
    });
    expect(namedPolicy(config, 'staging')).toBe(BUILT_IN_POLICIES.staging);
  });

  it('has built-in policies matching the 30, 14 and 7 days of today’s scripts', () => {
    const config = defaultConfig();
    for (const [name, days] of [
      ['production', 30],
      ['staging', 14],
      ['development', 7],
    ] as const) {
      expect(namedPolicy(config, name)).toMatchObject({
        filter: { env: name },
        policy: { within: { years: 0, months: 0, days, hours: 0 } },
        groupBy: ['host', 'kind', 'name'],
      });
    }
  });

  it('takes an empty file as the built-in settings', async () => {
    const config = await loadConfigFile(await configFile('# nothing yet\n'));
    expect(Object.keys(config.policies).sort()).toEqual(['development', 'production', 'staging']);
  });

  it('names an unknown key with its path', async () => {
    const error = await loadError('policies:\n  production:\n    keep-dayly: 7\nschedule: {}\n');
    expect(error.message).toContain('policies.production.keep-dayly: unknown key');
    expect(error.message).toContain('schedule: unknown key');
    expect(error.exitCode).toBe(3);
  });

  it.each([
    ['policies:\n  p:\n    keep-daily: seven\n', 'policies.p.keep-daily: expected a whole number'],
    ['policies:\n  p:\n    keep-daily: -1\n', 'policies.p.keep-daily: expected a whole number'],
    ['policies:\n  p:\n    keep-within: 1w\n', 'policies.p.keep-within: invalid duration "1w"'],
    ['policies:\n  p:\n    keep-within: 30\n', 'policies.p.keep-within: expected a duration'],
    [
      'policies:\n  p:\n    keep-daily: 1\n    timezone: Mars/Base\n',
      'policies.p.timezone: unknown time zone',
    ],
    [
      'policies:\n  p:\n    keep-daily: 1\n    group-by: [host, path]\n',
      'policies.p.group-by.1: expected one of',
    ],
    ['policies:\n  p:\n    keep-daily: 1\n    tags: team=db\n', 'policies.p.tags: expected a list of tags'],
    ['policies: [production]\n', 'policies: expected policies by name'],
    ['policies:\n  "my policy":\n    keep-daily: 1\n', 'a policy name is'],
    ['version: 2\n', 'version: version 2 is not one this strongbox reads'],
    ['- a\n- b\n', 'top level: expected object'],
    ['audit:\n  file: x\n  syslgo: true\n', 'audit.syslgo: unknown key'],
    ['audit:\n  syslog: yes please\n', 'audit.syslog: expected true or false'],
    ['audit:\n  syslog-server: logs:514\n', 'audit.syslog-server: expected udp://host:port'],
    ['audit:\n  syslog-server: udp://user:pw@logs\n', 'audit.syslog-server: expected udp://host:port'],
    ['audit:\n  file: ""\n', 'audit.file: expected a file path'],
  ])('refuses %j', async (text, message) => {
    expect((await loadError(text)).message).toContain(message);
  });

  it('reads where the audit log is mirrored, a file relative to the configuration file', async () => {
    const file = await configFile('audit:\n  file: logs/audit.jsonl\n  syslog: true\n');
    expect((await loadConfigFile(file)).audit).toEqual({
      file: path.join(dir, 'logs', 'audit.jsonl'),
      syslog: 'local',
    });
    const remote = await configFile('audit:\n  syslog: true\n  syslog-server: tcp://[::1]\n');
    expect((await loadConfigFile(remote)).audit).toEqual({
      syslog: { protocol: 'tcp', host: '::1', port: 514 },
    });
    expect((await loadConfigFile(await configFile('policies: {}\n'))).audit).toBeUndefined();
  });

  it('refuses an empty policy, which would remove every snapshot', async () => {
    const error = await loadError('policies:\n  production:\n    env: production\n');
    expect(error.message).toContain('policies.production: an empty policy');
  });

  it('says where YAML is broken', async () => {
    const error = await loadError('policies:\n  production:\n    keep-daily: 7\n    keep-daily: 8\n');
    expect(error.message).toMatch(/unique at line 4, column \d+$/);
  });

  it('says when the file cannot be read', async () => {
    await expect(loadConfigFile(path.join(dir, 'missing.yaml'))).rejects.toThrow(
      /cannot read the configuration file .*missing\.yaml: no such file/,
    );
  });

  it('is the one --config names, else STRONGBOX_CONFIG, else none', () => {
    expect(configFileFrom({ config: 'a.yaml' }, { STRONGBOX_CONFIG: 'b.yaml' })).toBe('a.yaml');
    expect(configFileFrom({}, { STRONGBOX_CONFIG: 'b.yaml' })).toBe('b.yaml');
    expect(configFileFrom({}, {})).toBeUndefined();
  });

  it('lists the policies there are when a name is unknown', () => {
    expect(() => namedPolicy(defaultConfig(), 'prod')).toThrow(
      'no policy called "prod": the policies are development, production, staging (built in; no configuration file given)',
    );
  });
});

describe('the configuration file on the command line', () => {
  let repo: TempRepo;

  beforeAll(async () => {
    repo = await tempRepo();
    expectExit(await runCli(['init'], { env: repo.env }), 0);
  });

  afterAll(async () => {
    await repo.cleanup();
  });

  it('stops every command early on a bad file, naming the key', async () => {
    const bad = await configFile('policies:\n  production:\n    keep-dayly: 7\n');
    const result = await runCli(['snapshots', '--config', bad], { env: repo.env });
    expectExit(result, 3);
    expect(result.stderr).toContain(
      `invalid configuration file ${bad}: policies.production.keep-dayly: unknown key`,
    );
    const fromEnv = await runCli(['key', 'list'], { env: { ...repo.env, STRONGBOX_CONFIG: bad } });
    expectExit(fromEnv, 3);
    expect(fromEnv.stderr).toContain('policies.production.keep-dayly: unknown key');
  });

  it('runs commands as before with a good file', async () => {
    const good = await configFile(EXAMPLE);
    expectExit(await runCli(['--config', good, 'snapshots'], { env: repo.env }), 0);
  });
});
