import { z } from 'zod';
import { MalformedRecordError, type RecordName } from '../errors.ts';
import { printable } from './printable.ts';

/** Padded base64 of exactly `bytes` bytes. */
export function base64Of(bytes: number) {
  return base64Between(bytes, bytes);
}

/** Padded base64 of `min` to `max` bytes; longer text is refused before it is decoded. */
export function base64Between(min: number, max: number) {
  const what = min === max ? `${min} bytes` : `${min} to ${max} bytes`;
  return z
    .base64()
    .max(Math.ceil(max / 3) * 4, `must be base64 of ${what}`)
    .refine((text) => {
      const length = Buffer.byteLength(text, 'base64');
      return length >= min && length <= max;
    }, `must be base64 of ${what}`);
}

/** A zod error's first issue, for a message: where, and what is wrong, safe to print. */
export function firstIssue(error: z.ZodError): string {
  const issue = error.issues[0];
  if (!issue) return 'it is not valid';
  return printable(issue.path.length > 0 ? `${issue.path.join('.')}: ${issue.message}` : issue.message);
}

/**
 * Parses a record read from storage against its schema: the typed data, or a
 * MalformedRecordError naming the object, the path of the first problem and what it is. Nothing
 * else is thrown, whatever `value` is: storage may have been written by an attacker.
 */
export function parseRecord<S extends z.ZodType>(
  schema: S,
  value: unknown,
  record: RecordName & { at?: readonly PropertyKey[] },
): z.output<S> {
  const { at = [], ...name } = record;
  let result: z.ZodSafeParseResult<z.output<S>>;
  try {
    result = schema.safeParse(value, { reportInput: false });
  } catch (cause) {
    // A schema throws only on what JSON cannot hold (a getter that throws, nesting too deep).
    throw new MalformedRecordError(name, at, 'it cannot be read', cause);
  }
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  throw new MalformedRecordError(name, [...at, ...issue.path], describe(issue));
}

function describe(issue: z.core.$ZodIssue): string {
  switch (issue.code) {
    case 'unrecognized_keys':
      return `unexpected field${issue.keys.length > 1 ? 's' : ''} ${issue.keys.map((key) => JSON.stringify(key)).join(', ')}`;
    case 'invalid_key':
      return `invalid key: ${issue.issues[0] ? describe(issue.issues[0]) : issue.message}`;
    case 'invalid_type':
      return issue.message.startsWith('Invalid input') ? `expected ${issue.expected}` : issue.message;
    default:
      return issue.message;
  }
}

/** JSON text read from storage; text that is not JSON is a MalformedRecordError too. */
export function parseJson(text: string, record: RecordName): unknown {
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new MalformedRecordError(record, [], 'it is not JSON', cause);
  }
}

const HEX_ID = /^[0-9a-f]{64}$/;

/** Lowercase hex of a SHA-256 or HMAC-SHA-256: blob, pack, tree and snapshot ids. */
export const hexId = z.string().regex(HEX_ID, { error: 'expected 64 lowercase hex digits' });

/** An integer in [min, max], with a message saying so. */
export function integer(min: number, max: number) {
  const range =
    min === 0
      ? `a non-negative integer${max === Number.MAX_SAFE_INTEGER ? '' : ` up to ${max}`}`
      : `an integer from ${min} to ${max}`;
  const error = { error: `expected ${range}` };
  return z.number(error).int(error).min(min, error).max(max, error);
}

/** A count or size in bytes: a non-negative safe integer. */
export const count = integer(0, Number.MAX_SAFE_INTEGER);

/** Text of at most `max` UTF-16 code units. */
export function text(max: number) {
  return z.string().max(max, { error: `expected text of at most ${max} characters` });
}

/** A list of at most `max` items. */
export function list<T extends z.ZodType>(item: T, max: number) {
  return z.array(item).max(max, { error: `expected at most ${max} items` });
}

/**
 * An object used as a map (`{oid: …}`, `{database: …}`), of at most `max` entries, each key
 * checked by `key` and each value by `value`. Unlike z.record, a key `__proto__` is kept as an
 * ordinary key (a PostgreSQL database may be called so), in an object without a prototype, so no
 * key can change what the object inherits.
 */
export function recordOf<V extends z.ZodType>(key: z.ZodType<string>, value: V, max: number) {
  return z.unknown().transform((input, context): Record<string, z.output<V>> => {
    if (typeof input !== 'object' || input === null || Array.isArray(input)) {
      context.addIssue({ code: 'custom', message: 'expected an object', input });
      return z.NEVER;
    }
    const keys = Object.keys(input);
    if (keys.length > max) {
      context.addIssue({ code: 'custom', message: `expected at most ${max} entries`, input });
      return z.NEVER;
    }
    const output = Object.create(null) as Record<string, z.output<V>>;
    for (const name of keys) {
      const checkedKey = key.safeParse(name, { reportInput: false });
      if (!checkedKey.success) {
        context.addIssue({
          code: 'custom',
          message: `invalid key: ${describe(checkedKey.error.issues[0]!)}`,
          path: [name],
          input,
        });
        return z.NEVER;
      }
      const checked = value.safeParse((input as Record<string, unknown>)[name], { reportInput: false });
      if (!checked.success) return passOn(context, checked.error, [name]);
      output[name] = checked.data as z.output<V>;
    }
    return output;
  });
}

/**
 * A list of at most `max` items, each checked by `accepts` and, when that says no, by `item`,
 * which has the last word and gives the message. zod takes about a microsecond a check: too
 * slow for the millions of blobs and tree nodes a repository holds, which a plain predicate
 * passes at a fraction of that. `accepts` must pass nothing that `item` refuses.
 */
export function fastList<T extends z.ZodType>(item: T, accepts: (value: unknown) => boolean, max: number) {
  return z
    .array(z.unknown())
    .max(max, { error: `expected at most ${max} items` })
    .transform((items, context) => {
      for (const [i, value] of items.entries()) {
        if (accepts(value)) continue;
        const parsed = item.safeParse(value, { reportInput: false });
        if (!parsed.success) return passOn(context, parsed.error, [i]);
        items[i] = parsed.data;
      }
      return items as z.output<T>[];
    });
}

/** An integer in [0, max] (max at most 2^53 - 1), as `integer(0, max)` takes it. */
export function isInteger(value: unknown, max: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= 0 && value <= max;
}

/** What `hexId` takes. */
export function isHexId(value: unknown): value is string {
  return typeof value === 'string' && HEX_ID.test(value);
}

/** Reports, from within a transform, the first problem of a schema it applied at `path`. */
export function passOn(
  context: z.core.$RefinementCtx,
  error: z.ZodError,
  path: PropertyKey[] = [],
): typeof z.NEVER {
  const issue = error.issues[0]!;
  context.addIssue({
    code: 'custom',
    message: describe(issue),
    path: [...path, ...issue.path],
    input: undefined,
  });
  return z.NEVER;
}
