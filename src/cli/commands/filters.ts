import type { Command } from 'commander';
import type { SnapshotFilter } from '../../repository/repository.ts';

export interface FilterOptions {
  tag: string[];
  env?: string;
  host?: string;
  kind?: string;
  name?: string;
}

const collect = (value: string, previous: string[]) => [...previous, value];

/** The options that narrow which snapshots a command sees. */
export function filterOptions(command: Command): Command {
  return command
    .option('--tag <key=value>', 'only snapshots with this tag (repeatable: all must match)', collect, [])
    .option('--env <name>', 'only snapshots of this environment (short for --tag env=NAME)')
    .option('--host <name>', 'only snapshots from this host')
    .option('--kind <kind>', 'only snapshots of this kind (files, stdin…)')
    .option('--name <name>', 'only snapshots with this name');
}

export function snapshotFilter(options: FilterOptions): SnapshotFilter {
  const tags = withEnvironment(options.tag, options.env);
  return {
    ...(tags.length ? { tags } : {}),
    ...(options.host ? { host: options.host } : {}),
    ...(options.kind ? { kind: options.kind } : {}),
    ...(options.name ? { name: options.name } : {}),
  };
}

/** `tags` with env=NAME added for --env NAME: the environment is an ordinary tag. */
export function withEnvironment(tags: readonly string[], env: string | undefined): string[] {
  return env === undefined ? [...tags] : [...tags, `env=${env}`];
}
