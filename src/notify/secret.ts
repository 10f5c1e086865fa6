import { open } from 'node:fs/promises';
import type { ValueSource } from './schema.ts';

/** Far more than any key, URL or password: a file larger than this is the wrong file. */
const MAX_SECRET_BYTES = 64 * 1024;

/** A setting's source could not be read; the message names where it looked, never the value. */
export class SettingUnavailableError extends Error {}

/**
 * The value a setting's source holds: the text itself, an environment variable, or a file's
 * content without its final line break. Empty is as good as missing: a key of no bytes signs
 * nothing anyone should trust.
 */
export async function readSetting(
  what: string,
  source: ValueSource,
  env: NodeJS.ProcessEnv,
): Promise<string> {
  if ('value' in source) return source.value;
  if ('env' in source) {
    const value = env[source.env];
    if (!value) throw new SettingUnavailableError(`the ${what} variable ${source.env} is not set`);
    return value;
  }
  const text = await readBounded(source.file, what);
  const value = text.replace(/\r?\n$/, '');
  if (!value) throw new SettingUnavailableError(`the ${what} file ${source.file} is empty`);
  return value;
}

async function readBounded(file: string, what: string): Promise<string> {
  let handle;
  try {
    handle = await open(file, 'r');
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code;
    throw new SettingUnavailableError(`cannot read the ${what} file ${file}: ${why ?? 'unreadable'}`, {
      cause,
    });
  }
  try {
    const buffer = Buffer.alloc(MAX_SECRET_BYTES + 1);
    let length = 0;
    for (;;) {
      const { bytesRead } = await handle.read(buffer, length, buffer.length - length);
      if (bytesRead === 0) break;
      length += bytesRead;
      if (length > MAX_SECRET_BYTES) {
        throw new SettingUnavailableError(
          `the ${what} file ${file} is larger than ${MAX_SECRET_BYTES} bytes`,
        );
      }
    }
    return buffer.subarray(0, length).toString('utf8');
  } finally {
    await handle.close();
  }
}
