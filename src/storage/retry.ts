import { setTimeout as sleep } from 'node:timers/promises';

export interface RetryPolicy {
  /** Attempts in all, the first included. */
  attempts: number;
  /** Delay before the first retry; each later one doubles, up to `maxDelayMs`. */
  baseDelayMs: number;
  maxDelayMs: number;
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = { attempts: 8, baseDelayMs: 200, maxDelayMs: 20_000 };

/**
 * Runs `operation` until it succeeds, retrying only the errors `isTransient` accepts, with
 * exponential backoff and full jitter (a random delay up to the exponential bound), so that
 * writers that failed together do not retry together. Anything else is thrown at once.
 */
export async function withRetries<T>(
  operation: (attempt: number) => Promise<T>,
  isTransient: (error: unknown) => boolean,
  policy: RetryPolicy = DEFAULT_RETRY_POLICY,
  onRetry?: (error: unknown, attempt: number, delayMs: number) => void,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await operation(attempt);
    } catch (error) {
      if (attempt >= policy.attempts || !isTransient(error)) throw error;
      const bound = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** (attempt - 1));
      const delayMs = Math.round(Math.random() * bound);
      onRetry?.(error, attempt, delayMs);
      await sleep(delayMs);
    }
  }
}

/** Network errors a retry may cure: the connection, not the request, failed. */
const TRANSIENT_NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'ESOCKETTIMEDOUT',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
  'ENOTCONN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ERR_STREAM_PREMATURE_CLOSE',
]);

/** True for a connection-level failure anywhere in the error's cause chain. */
export function isTransientNetworkError(error: unknown): boolean {
  for (let current = error, depth = 0; current && depth < 5; depth++) {
    const code = (current as { code?: unknown }).code;
    if (typeof code === 'string' && TRANSIENT_NETWORK_CODES.has(code)) return true;
    current = (current as { cause?: unknown }).cause;
  }
  return false;
}

/** HTTP statuses worth retrying: timeouts, throttling and server-side failures. */
export function isTransientHttpStatus(status: number | undefined): boolean {
  return status === 408 || status === 429 || (status !== undefined && status >= 500);
}
