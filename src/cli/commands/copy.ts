import type { Command } from 'commander';
import { ConfigError, KeyError, RetiredKeyError, VerificationError } from '../../errors.ts';
import { copySnapshots, type CopiedSnapshot, type CopyResult } from '../../ops/copy.ts';
import { openRepositoryAt, type RepositoryKey } from '../../repository/open.ts';
import type { Repository } from '../../repository/repository.ts';
import { positiveInteger } from '../arguments.ts';
import { auditOpened, releaseRepository } from '../audit.ts';
import {
  describeKeyOptions,
  globalOptions,
  openRepository,
  outputFor,
  readWithoutLockWhereRefused,
  resolveKey,
  type RepositoryRole,
} from '../context.ts';
import { publicLocation } from '../outcome.ts';
import { formatBytes, type Output } from '../output.ts';
import { filterOptions, snapshotFilter, type FilterOptions } from './filters.ts';
import { count } from '../../util/plural.ts';

const SOURCE: RepositoryRole = { label: 'source repository', option: '--from', env: 'STRONGBOX_FROM' };
const COPY_TO: RepositoryRole = {
  label: 'copy-to repository',
  option: '--copy-to',
  env: 'STRONGBOX_COPY_TO',
};

function keyOptionsOf(command: Command, role: RepositoryRole): Command {
  return command
    .option(
      `${role.option}-password-file <file>`,
      `read the ${role.label}'s password from a file (env ${role.env}_PASSWORD_FILE)`,
    )
    .option(
      `${role.option}-password-command <command>`,
      `run a command that prints the ${role.label}'s password (env ${role.env}_PASSWORD_COMMAND)`,
    )
    .option(
      `${role.option}-identity-file <file>`,
      `open the ${role.label} with an identity file (env ${role.env}_IDENTITY_FILE)`,
    );
}

async function openOther(
  role: RepositoryRole,
  location: string,
  key: RepositoryKey,
  output: Output,
): Promise<Repository> {
  try {
    const repository = await openRepositoryAt(location, key, {
      onWarning: (message) => output.warn(`warning: ${message} (in the ${role.label})`),
    });
    auditOpened(repository);
    return repository;
  } catch (error) {
    // The message names the location; the hint must name this repository's options, not the global ones.
    if (error instanceof KeyError && !(error instanceof RetiredKeyError))
      throw new KeyError(error.message, { cause: error, hint: `Check ${describeKeyOptions(role)}.` });
    throw error;
  }
}

interface CopyCommandOptions extends FilterOptions {
  from?: string;
  to?: string;
  threads?: number;
  /** False with --no-wal. */
  wal: boolean;
  fromPasswordFile?: string;
  fromPasswordCommand?: string;
  fromIdentityFile?: string;
}

export function registerCopy(program: Command): void {
  const command = program
    .command('copy')
    .description(
      'copy snapshots, and the data they need, from another repository into this one (skips what is there)',
    )
    .argument('[snapshots...]', 'snapshot ids, unique prefixes or latest (default: all the filters select)')
    .option(
      '--from <location>',
      'the repository to copy from, opened with a full key (env STRONGBOX_FROM_REPO)',
    )
    .option(
      '--to <location>',
      'the repository to copy into (default: --repo or STRONGBOX_REPO); the global key options open it',
    );
  filterOptions(keyOptionsOf(command, SOURCE))
    .option(
      '--threads <n>',
      'worker threads that compress and encrypt (default: CPUs - 1)',
      positiveInteger('--threads'),
    )
    .option(
      '--no-wal',
      "leave the source's WAL files out (copied by default, whichever snapshots are copied)",
    )
    .action(async (references: string[], options: CopyCommandOptions, command: Command) => {
      const global = globalOptions(command);
      const output = outputFor(global);
      const from = options.from ?? process.env.STRONGBOX_FROM_REPO;
      if (!from)
        throw new ConfigError('no repository to copy from', {
          hint: 'Pass --from or set STRONGBOX_FROM_REPO.',
        });
      if (options.to && global.repo && options.to !== global.repo)
        throw new ConfigError('--to and --repo name different repositories', { hint: 'Give only --to.' });
      const sourceKey = await resolveKey(SOURCE, {
        passwordFile: options.fromPasswordFile,
        passwordCommand: options.fromPasswordCommand,
        identityFile: options.fromIdentityFile,
      });
      const source = await openOther(SOURCE, from, sourceKey, output);
      readWithoutLockWhereRefused(source, output);
      try {
        const target = await openRepository({ ...global, ...(options.to ? { repo: options.to } : {}) });
        try {
          const result = await copySnapshots(source, target, {
            snapshots: references,
            filter: snapshotFilter(options),
            ...(options.threads ? { threads: options.threads } : {}),
            onProgress: (progress) =>
              output.progress(
                `copy: snapshot ${progress.snapshot}/${progress.snapshots}: ${formatBytes(progress.bytesRead)} read, ${formatBytes(progress.bytesNew)} new`,
              ),
            onSnapshot: (snapshot) => output.info(describeCopied(snapshot)),
            wal: options.wal,
            onWalProgress: (done, total) => output.progress(`copy: WAL files ${done}/${total}`),
          });
          output.clearProgress();
          if (global.json) output.data(result);
          else {
            for (const problem of result.walProblems)
              output.warn(`error: WAL file ${problem.name} not copied: ${problem.message}`);
            output.info(summarizeCopy(result));
          }
          if (result.walProblems.length > 0) {
            const fromSource = result.walProblems.some((problem) => problem.repository === 'source');
            throw new VerificationError(
              `copy: ${count(result.walProblems.length, 'WAL file')} not copied (damaged or not trusted in the source, or held in the target with other content)`,
              {
                hint: fromSource
                  ? 'Run `strongbox check` on the source; a damaged WAL file is not copied, and recovery through it fails in the copy as in the source.'
                  : 'Inspect the WAL files the target holds under those names: another cluster may archive into it, or they are damaged.',
              },
            );
          }
        } finally {
          await releaseRepository(target);
        }
      } finally {
        await releaseRepository(source);
      }
    });
}

function describeCopied(snapshot: CopiedSnapshot): string {
  const what = `${snapshot.source.slice(0, 8)} (${snapshot.kind} ${snapshot.name}, ${snapshot.time.replace('T', ' ').slice(0, 19)})`;
  return snapshot.skipped
    ? `skipped ${what}: in the target already as ${snapshot.target.slice(0, 8)}`
    : `copied ${what} as ${snapshot.target.slice(0, 8)}, ${formatBytes(snapshot.stored)} stored`;
}

export function summarizeCopy(result: CopyResult): string {
  const wal = result.walFilesCopied + result.walFilesSkipped + result.walProblems.length;
  return [
    `copy: ${count(result.snapshotsCopied, 'snapshot')} copied, ${result.snapshotsSkipped} skipped (in the target already)`,
    `  blobs: ${result.blobsCopied} copied, ${result.blobsSkipped} skipped (in the target already)`,
    ...(wal > 0
      ? [
          `  WAL files: ${result.walFilesCopied} copied (${formatBytes(result.walBytesCopied)}, ${formatBytes(result.walStored)} stored), ${result.walFilesSkipped} skipped (in the target already)${result.walProblems.length > 0 ? `, ${result.walProblems.length} not copied` : ''}`,
        ]
      : []),
    `  read ${formatBytes(result.bytesRead)}, new ${formatBytes(result.bytesNew)}, stored ${formatBytes(result.stored)} in ${(result.durationMs / 1000).toFixed(1)} s`,
  ].join('\n');
}

/** `backup --copy-to`: its options, as `copy --from` has them for the source. */
export interface CopyToOptions {
  copyTo?: string;
  copyToPasswordFile?: string;
  copyToPasswordCommand?: string;
  copyToIdentityFile?: string;
}

export function copyToOptions(command: Command): Command {
  return keyOptionsOf(
    command.option(
      '--copy-to <location>',
      'then copy the new snapshot into this repository too (needs a full key for the backup)',
    ),
    COPY_TO,
  );
}

export interface CopyTo {
  /** Fails before the backup starts when its key could not read the snapshot to copy. */
  checkSource(repository: Repository): void;
  copy(source: Repository, snapshot: string, output: Output): Promise<CopyResult>;
}

/** The copy `backup --copy-to` makes, with its key resolved before the backup runs; undefined without it. */
export async function prepareCopyTo(options: CopyToOptions): Promise<CopyTo | undefined> {
  const location = options.copyTo;
  if (!location) return undefined;
  const key = await resolveKey(COPY_TO, {
    passwordFile: options.copyToPasswordFile,
    passwordCommand: options.copyToPasswordCommand,
    identityFile: options.copyToIdentityFile,
  });
  return {
    checkSource(repository) {
      if (!repository.canRead) {
        throw new KeyError(
          '--copy-to needs a full key: this write-only key cannot read the snapshot back to copy it',
          {
            hint: 'Back up with a full key, or back up here and run `strongbox copy` where a full key is kept.',
          },
        );
      }
    },
    async copy(source, snapshot, output) {
      try {
        const target = await openOther(COPY_TO, location, key, output);
        try {
          return await copySnapshots(source, target, {
            snapshots: [snapshot],
            // The backup's snapshot only: the WAL archive is `strongbox copy`'s to carry, which
            // reads every WAL file of both repositories, too much to do after every backup.
            wal: false,
            onProgress: (progress) =>
              output.progress(
                `copy to ${target.backend.location}: ${formatBytes(progress.bytesRead)} read, ${formatBytes(progress.bytesNew)} new`,
              ),
          });
        } finally {
          await releaseRepository(target);
        }
      } catch (error) {
        // --copy-to is as typed, credentials and all; the message is for terminals and logs.
        const from = publicLocation(source.backend.location);
        const to = publicLocation(location);
        const withheld =
          to === location ? '' : ' (give --to the whole --copy-to location: part of it is not shown here)';
        output.warn(
          `backup: snapshot ${snapshot.slice(0, 8)} is saved in ${from}, but copying it to ${to} failed; ` +
            `retry with: strongbox copy --from ${from} --to ${to} ${snapshot.slice(0, 8)}${withheld}`,
        );
        throw error;
      }
    },
  };
}
