import { createHmac } from 'node:crypto';
import { isTransientHttpStatus, isTransientNetworkError } from '../storage/retry.ts';
import { printable } from '../util/printable.ts';
import { PROGRAM } from '../version.ts';
import { DeliveryError } from './delivery-error.ts';

/** Of an error response, what a message quotes: Slack says why there (`invalid_payload`). */
const MAX_EXCERPT_BYTES = 512;

export const SIGNATURE_HEADER = 'X-Strongbox-Signature';
export const TIMESTAMP_HEADER = 'X-Strongbox-Timestamp';

/**
 * The signature of a webhook request: HMAC-SHA256 of the timestamp header's value, a dot and the
 * raw body, as `sha256=<hex>`. The timestamp is signed with the body, so a receiver that refuses
 * old timestamps refuses a replayed request.
 */
export function webhookSignature(key: string, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', key).update(`${timestamp}.${body}`).digest('hex')}`;
}

/**
 * POSTs a JSON body and succeeds on a 2xx answer. A redirect is a failure: following it would
 * send the body, and its signature, somewhere the configuration does not name.
 */
export async function postJson(
  url: string,
  body: string,
  headers: Record<string, string>,
  timeoutMs: number,
): Promise<void> {
  let response: Response;
  try {
    response = await fetch(url, {
      method: 'POST',
      body,
      headers: {
        'Content-Type': 'application/json',
        'User-Agent': PROGRAM.replace(' ', '/'),
        ...headers,
      },
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (error) {
    throw requestFailure(error, timeoutMs);
  }
  if (response.ok) {
    await response.body?.cancel();
    return;
  }
  const excerpt = await readExcerpt(response);
  throw new DeliveryError(
    `HTTP ${response.status}${excerpt ? `: ${excerpt}` : ''}`,
    isTransientHttpStatus(response.status),
  );
}

/** Why no answer came, by code: a fetch's own message says only "fetch failed". */
function requestFailure(error: unknown, timeoutMs: number): DeliveryError {
  if (error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError')) {
    return new DeliveryError(`no answer within ${timeoutMs / 1000} s`, true, { cause: error });
  }
  const code = codeOf(error);
  return new DeliveryError(
    code ? `request failed (${code})` : 'request failed',
    isTransientNetworkError(error),
    { cause: error },
  );
}

function codeOf(error: unknown): string | undefined {
  for (let current = error, depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

/** The start of an error response's body, one printable line; the rest is not read. */
async function readExcerpt(response: Response): Promise<string> {
  const reader = response.body?.getReader();
  if (!reader) return '';
  const chunks: Uint8Array[] = [];
  let length = 0;
  try {
    while (length < MAX_EXCERPT_BYTES) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      length += value.length;
    }
  } catch {
    // What came before the failure is excerpt enough.
  } finally {
    await reader.cancel().catch(() => undefined);
  }
  const text = Buffer.concat(chunks).subarray(0, MAX_EXCERPT_BYTES).toString('utf8');
  return printable(text.replace(/\s+/g, ' ').trim(), 200);
}
