import type { Command } from 'commander';
import { ConfigError } from '../../errors.ts';
import type { KeyKind } from '../../repository/keys.ts';
import {
  globalOptions,
  outputFor,
  repositoryPassword,
  usesIdentityFile,
  withRepository,
  type GlobalOptions,
} from '../context.ts';
import { table } from '../output.ts';
import { resolvePassword, withSecretFile } from '../secrets.ts';

type AddedKey = { kind: KeyKind; identityFile: string } | { kind: KeyKind; id: string };

interface NewKeyOptions {
  newPasswordFile?: string;
  writeOnly?: boolean;
  identityFileOut?: string;
}

function newPassword(options: NewKeyOptions): Promise<string> {
  return resolvePassword({
    file: options.newPasswordFile ?? process.env.STRONGBOX_NEW_PASSWORD_FILE,
    value: process.env.STRONGBOX_NEW_PASSWORD,
    prompt: 'New password: ',
    confirm: true,
    describe: 'STRONGBOX_NEW_PASSWORD_FILE, --new-password-file or STRONGBOX_NEW_PASSWORD',
  });
}

export function registerKey(program: Command): void {
  const group = program.command('key').description('manage the keys that open the repository');

  group
    .command('list')
    .description('list key slots')
    .action(async (_options: unknown, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      const keys = await withRepository(global, (repository) => repository.listKeys());
      if (global.json) return output.data(keys);
      const rows = [[' ', 'ID', 'KIND', 'WRITER', 'STATUS', 'CREATED', 'HOST', 'USER']];
      for (const key of keys)
        rows.push([
          key.current ? '*' : ' ',
          key.id.slice(0, 8),
          key.kind,
          key.writer?.slice(0, 8) ?? '-',
          key.slot ? key.status : `${key.status}, identity file`,
          key.created.slice(0, 19).replace('T', ' '),
          key.host,
          key.username,
        ]);
      output.line(table(rows));
    });

  group
    .command('add')
    .description('add a key: full (reads and writes) or --write-only (backs up, cannot decrypt)')
    .option('--write-only', 'a key for database hosts: it can back up and list snapshots, never read data')
    .option('--new-password-file <file>', "read the new key's password from this file")
    .option('--identity-file-out <file>', 'write the key to this file (mode 0600) instead of a password slot')
    .action(async (options: NewKeyOptions, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      const kind: KeyKind = options.writeOnly ? 'write-only' : 'full';
      const identityFile = options.identityFileOut;
      const result = await withRepository(global, async (repository): Promise<AddedKey> => {
        if (identityFile)
          return withSecretFile(identityFile, async () => ({
            secret: await repository.exportIdentity(kind),
            result: { kind, identityFile },
          }));
        return { kind, id: await repository.addKey(await newPassword(options), kind) };
      });
      if (global.json) output.data(result);
      else
        output.info(
          'id' in result
            ? `added ${kind} key ${result.id.slice(0, 8)}`
            : `wrote ${kind} identity file ${result.identityFile}`,
        );
    });

  group
    .command('remove')
    .description('remove a key; removing a full key also rotates the administrator key and data identity')
    .argument('<id>', 'key id or writer id, or a prefix (see key list)')
    .action(async (id: string, _options: unknown, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      const result = await withRepository(global, (repository) => repository.removeKey(id));
      if (global.json) return output.data(result);
      output.info(`removed key ${id}`);
      reportRetired(output, result);
    });

  group
    .command('passwd')
    .description('change the password of the key in use (the data is not touched)')
    .option('--new-password-file <file>', 'read the new password from this file')
    .action(async (options: NewKeyOptions, command: Command) => {
      const global = globalOptions(command);
      const id = await withRepository(global, async (repository) =>
        repository.changePassphrase(await newPassword(options)),
      );
      outputFor(global).info(`password changed; the key is now ${id.slice(0, 8)}`);
    });

  group
    .command('rotate')
    .description('retire every other key: new data identity, new administrator key; add the others again')
    .option('--identity-file-out <file>', 'when opened with an identity file: where to write the new one')
    .action(async (options: NewKeyOptions, command: Command) => {
      const global: GlobalOptions = globalOptions(command);
      const output = outputFor(global);
      const usingIdentity = usesIdentityFile(global);
      if (usingIdentity && !options.identityFileOut) {
        throw new ConfigError('rotating with an identity file needs --identity-file-out', {
          hint: 'Name a new file for the rotated identity.',
        });
      }
      const password = usingIdentity ? undefined : await repositoryPassword(global, false);
      const result = await withRepository(global, (repository) =>
        withSecretFile(usingIdentity ? options.identityFileOut : undefined, async () => {
          const rotated = await repository.rotate(password);
          return {
            secret: rotated.identityFile,
            result: { key: rotated.keyId, removed: rotated.removed, retired: rotated.retired, rotated: true },
          };
        }),
      );
      if (global.json) output.data(result);
      else {
        output.info(
          'new data is now encrypted to a new identity, and the config signed by a new administrator key',
        );
        if (result.removed.length)
          output.info(`removed full key slots: ${result.removed.map((id) => id.slice(0, 8)).join(', ')}`);
        reportRetired(output, result);
      }
    });
}

function reportRetired(
  output: ReturnType<typeof outputFor>,
  { retired, rotated }: { retired: string[]; rotated: boolean },
): void {
  if (retired.length > 0) output.info(`retired writers: ${retired.map((id) => id.slice(0, 8)).join(', ')}`);
  if (rotated)
    output.info(
      'write-only keys issued before this no longer work: issue new ones with `strongbox key add --write-only`',
    );
}
