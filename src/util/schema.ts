import { z } from 'zod';
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
