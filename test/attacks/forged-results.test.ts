import * as fs from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SigningKey } from '../../src/crypto/signing.ts';
import {
  KeyError,
  openRepository,
  type AuditEntry,
  type AuditLogEntry,
  type DrillResultRecord as DrillResult,
  type KeyMaterial,
  type Repository,
} from '../../src/index.ts';
import { AppendedRecords } from '../../src/repository/appended-records.ts';
import { decodeIdentityFile } from '../../src/repository/keys.ts';
import { objectName, stampedId } from '../../src/repository/layout.ts';
import { deriveWriterKeys } from '../../src/repository/secrets.ts';
import { openJson, sealJson } from '../../src/repository/sealed-file.ts';
import { signObject, splitSigned, writerId } from '../../src/repository/signed-object.ts';
import { expectExit, runCli } from '../helpers/cli.ts';
import { createTestRepo, PASSWORD, type TestRepo } from '../helpers/repo.ts';

/**
 * Drill and check results tell `health` and the dashboards that backups can be restored; the audit
 * log tells who did what. A database host holds a write-only key and, compromised, writes the
 * storage too; a full key, once removed, still holds what it held. Neither may make a current full
 * key believe a result it did not record, nor pass an audit record off as another key's. What
 * storage writes can do to the audit log is shown as damage, except deleting a record, which the
 * repository alone cannot tell from one never written (docs/FORMAT.md, "Audit records").
 */

let repo: TestRepo;
let owner: Repository;
let host: { material: KeyMaterial; repository: Repository };

/** What an attacker holding a key's material writes, bypassing the library's own refusals. */
function forger(material: KeyMaterial, repositoryId: string, backend: Repository['backend']) {
  const { metadataKey } = deriveWriterKeys(material.writerSecret);
  return new AppendedRecords(backend, repositoryId, metadataKey, () => new SigningKey(material.signingKey));
}

function drill(overrides: Partial<DrillResult> = {}): DrillResult {
  return {
    started: new Date(),
    finished: new Date(),
    host: 'drill-host',
    subject: { kind: 'postgres', name: 'shop', host: 'db1', env: 'production' },
    snapshot: 'a'.repeat(64),
    snapshotTime: new Date().toISOString(),
    phases: { fetch: 1, restore: 2, verify: 3 },
    rtoSeconds: 6,
    rpoSeconds: 3600,
    objectives: { rtoSeconds: 1800 },
    result: 'success',
    exitCode: 0,
    mismatches: [],
    ...overrides,
  };
}

/** The fields a drill result is stored with, as a forger writes them. */
function storedFields(result: DrillResult): Record<string, unknown> {
  const { started: _started, finished, ...rest } = result;
  return { ...rest, finished: finished.toISOString() };
}

function audit(operation: string): AuditEntry {
  return {
    started: new Date(),
    finished: new Date(),
    host: 'db1',
    user: 'postgres',
    operation,
    arguments: [],
    result: 'success',
    exitCode: 0,
    program: 'strongbox test',
  };
}

async function openWith(material: KeyMaterial): Promise<Repository> {
  return openRepository({ repo: repo.location, identity: material, stateDirectory: false });
}

beforeAll(async () => {
  repo = await createTestRepo();
  owner = repo.repository;
  const material = decodeIdentityFile(await owner.exportIdentity('write-only')) as KeyMaterial;
  host = { material, repository: await openWith(material) };
});

afterAll(async () => {
  await host.repository.close();
  await owner.close();
  await repo.cleanup();
});

describe('drill and check results', () => {
  it('a write-only key cannot record one, and one it forges is not believed', async () => {
    await expect(host.repository.recordResult('drill', drill())).rejects.toThrow(KeyError);
    const forged = forger(host.material, owner.config.id, owner.backend);
    const hostDrill = drill({ subject: { kind: 'postgres', name: 'shop', host: 'db1' } });
    await forged.append('drill-result', hostDrill.started, storedFields(hostDrill));
    await forged.append('check-result', new Date(), {
      finished: new Date().toISOString(),
      host: 'db1',
      result: 'success',
      exitCode: 0,
      readData: 1,
      problems: 0,
      snapshots: 1,
      packs: 1,
      packsRead: 1,
    });
    for (const kind of ['drill', 'check'] as const) {
      const { trusted, problems } = await owner.listResults(kind);
      expect(trusted).toEqual([]);
      expect(problems).toEqual([
        {
          name: expect.any(String),
          problem: `not trusted: it is signed by write-only key ${writerId(new SigningKey(host.material.signingKey).publicRaw)}, which may not record results`,
        },
      ]);
    }
  });

  it('storage writes cannot make one believed: copied, moved, altered, unsigned or from another repository', async () => {
    const name = await owner.recordResult('drill', drill({ result: 'failure', exitCode: 8 }));
    const bytes = await fs.readFile(path.join(repo.location, name));
    const place = (id: string) => path.join(repo.location, objectName('drill-result', id));
    const nonce = name.slice(-32);
    // Shown twice under another nonce, or moved to look newer (a drill passing today).
    await fs.writeFile(place(stampedId(new Date(), 'b'.repeat(32))), bytes);
    await fs.writeFile(place(stampedId(new Date(Date.now() + 86_400_000), nonce)), bytes);
    const altered = Buffer.from(bytes);
    altered[30]! ^= 0x01;
    await fs.writeFile(place(stampedId(new Date(), 'c'.repeat(32))), altered);
    // Sealed with the metadata key every key holds, but signed by none.
    const value = openJson('SBRS', owner.metadataKey, splitSigned(bytes)!.content);
    const unsigned = { ...(value as object), nonce: 'd'.repeat(32), result: 'success', exitCode: 0 };
    await fs.writeFile(
      place(stampedId(new Date(), 'd'.repeat(32))),
      sealJson('SBRS', owner.metadataKey, unsigned),
    );
    // A genuine result of another repository.
    const other = await createTestRepo();
    try {
      const foreign = await other.repository.recordResult('drill', drill());
      await fs.copyFile(path.join(other.location, foreign), path.join(repo.location, foreign));
    } finally {
      await other.repository.close();
      await other.cleanup();
    }
    const { trusted, problems } = await owner.listResults('drill');
    expect(trusted.map((result) => [result.name, result.value.result])).toEqual([[name, 'failure']]);
    expect(problems).toHaveLength(6);
    expect(problems.map((problem) => problem.problem)).toEqual(
      expect.arrayContaining([
        'its name is not its own (copied or renamed)',
        expect.stringMatching(/^its name gives another time than its content/),
        'not trusted: it carries no signature',
        expect.stringMatching(/write-only key/),
      ]),
    );
    expect(problems.filter((problem) => problem.problem.startsWith('it does not decrypt'))).toHaveLength(2);
  });

  it("a full key's results outlive its removal, and it cannot add any once removed", async () => {
    const second = decodeIdentityFile(await owner.exportIdentity('full')) as KeyMaterial;
    const secondWriter = writerId(new SigningKey(second.signingKey).publicRaw);
    const session = await openWith(second);
    let recorded: string;
    try {
      recorded = await session.recordResult(
        'drill',
        drill({ subject: { kind: 'postgres', name: 'crm', host: 'db2' } }),
      );
      await session.appendAudit(audit('check'));
    } finally {
      await session.close();
    }
    expect(
      (await owner.listResults('drill')).trusted.find((result) => result.name === recorded)?.writer,
    ).toBe(secondWriter);
    await owner.removeKey(secondWriter);
    const carried = (await owner.listResults('drill')).trusted.find((result) => result.name === recorded);
    expect(carried?.writer).toBe(owner.writerId);
    expect(carried?.value.subject.name).toBe('crm');
    // The removed key still holds its material and the writer secret.
    const forged = forger(second, owner.config.id, owner.backend);
    const late = drill({ subject: { kind: 'postgres', name: 'crm', host: 'db2' } });
    const lateName = await forged.append('drill-result', late.started, storedFields(late));
    const after = await owner.listResults('drill');
    expect(after.trusted.some((result) => result.name === lateName)).toBe(false);
    expect(after.problems.find((problem) => problem.name === lateName)?.problem).toMatch(
      new RegExp(`signed by key ${secondWriter}, which is not a writer`),
    );
    // Its audit records stay readable, shown as a retired key's: written before it retired, or
    // (it still signs) after; the log cannot tell which.
    await forged.append('audit', new Date(), { ...auditFields('forget') });
    const retired = (await owner.readAuditLog()).filter(
      (entry): entry is Extract<AuditLogEntry, { record: unknown }> =>
        'record' in entry && entry.key.id === secondWriter,
    );
    expect(retired.map((entry) => [entry.record.operation, entry.status, entry.key.kind])).toEqual([
      ['check', 'retired', 'full'],
      ['forget', 'retired', 'full'],
    ]);
  });
});

function auditFields(operation: string): Record<string, unknown> {
  const { started: _started, finished, ...rest } = audit(operation);
  return { ...rest, finished: finished.toISOString() };
}

describe('audit records', () => {
  it("a write-only key appends as itself only: another key's record it signs again becomes its own", async () => {
    // The host was retired with the full key above: a new one, as its administrator would issue.
    const material = decodeIdentityFile(await owner.exportIdentity('write-only')) as KeyMaterial;
    const hostWriter = writerId(new SigningKey(material.signingKey).publicRaw);
    const hostSession = await openWith(material);
    const ownerName = await owner.appendAudit(audit('key rotate'));
    try {
      await hostSession.appendAudit(audit('forget'));
    } finally {
      await hostSession.close();
    }
    // It takes the owner's record and signs it again as itself, in place.
    const bytes = await fs.readFile(path.join(repo.location, ownerName));
    await fs.writeFile(
      path.join(repo.location, ownerName),
      signObject('audit', owner.config.id, splitSigned(bytes)!.content, new SigningKey(material.signingKey)),
    );
    const log = await owner.readAuditLog();
    const byName = new Map(log.map((entry) => [entry.name, entry]));
    const rewritten = byName.get(ownerName) as Extract<AuditLogEntry, { record: unknown }>;
    expect(rewritten.key).toEqual({ id: hostWriter, kind: 'write-only' });
    const claims = log.filter(
      (entry): entry is Extract<AuditLogEntry, { record: unknown }> =>
        'record' in entry && entry.record.operation === 'forget' && entry.key.id === hostWriter,
    );
    expect(claims).toHaveLength(1);
    expect(claims[0]!.key.kind).toBe('write-only');
    expect(
      log.some(
        (entry) =>
          'record' in entry && entry.key.id === owner.writerId && entry.record.operation === 'key rotate',
      ),
    ).toBe(false);
  });

  it('alters, copies and moves of a record are shown as damage; a deletion only the mirror still shows', async () => {
    const env = {
      STRONGBOX_REPO: repo.location,
      STRONGBOX_PASSWORD: PASSWORD,
      STRONGBOX_CONFIG: path.join(repo.dir, 'strongbox.yaml'),
    };
    await fs.writeFile(env.STRONGBOX_CONFIG, 'audit:\n  file: audit.jsonl\n');
    expectExit(await runCli(['unlock', '-q'], { env }), 0);
    expectExit(await runCli(['unlock', '-q'], { env }), 0);
    const mirror = (await fs.readFile(path.join(repo.dir, 'audit.jsonl'), 'utf8'))
      .trimEnd()
      .split('\n')
      .map((line) => JSON.parse(line) as { stored: string });
    const [first, second] = mirror.map((line) => line.stored);
    const bytes = await fs.readFile(path.join(repo.location, first!));
    const altered = Buffer.from(bytes);
    altered[altered.length - 10]! ^= 0x01; // in the signature
    await fs.writeFile(path.join(repo.location, first!), altered);
    await fs.writeFile(
      path.join(repo.location, objectName('audit', stampedId(new Date(), 'e'.repeat(32)))),
      bytes,
    );
    await fs.rm(path.join(repo.location, second!));
    const log = await owner.readAuditLog();
    expect(log.find((entry) => entry.name === first)).toMatchObject({
      status: 'untrusted',
      problem: 'its signature does not verify',
    });
    expect(log.find((entry) => entry.name.endsWith('e'.repeat(32)))).toMatchObject({
      status: 'damaged',
      problem: 'its name is not its own (copied or renamed)',
    });
    // Deleted: gone from the log without a trace there, still in the mirror, which names it.
    expect(log.some((entry) => entry.name === second)).toBe(false);
    expect(mirror[1]).toMatchObject({ operation: 'unlock', stored: second });
  });
});
