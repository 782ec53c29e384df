/**
 * The raw cache's one retry policy. Every failure of a job, whatever its class (Glance unreachable,
 * a command that failed or stalled, a full target, a removal that did not go through), is settled by
 * the worker with `decideRetry`: retried after `backoffMs` until `max_attempts`, then recorded as
 * Error. The queues' own fallback (a handler that throws) and the RabbitMQ reconnect loop use the
 * same backoff function.
 */

export interface RetrySettings {
  /** Attempts, the first included, before a job ends in Error. */
  maxAttempts: number;
  /** First delay; doubles each attempt. */
  baseMs: number;
  /** Longest delay. */
  maxMs: number;
}

/** The defaults of rawcache.worker: 5 attempts, 5 s doubling to at most 600 s. */
export const DEFAULT_RETRY: RetrySettings = { maxAttempts: 5, baseMs: 5_000, maxMs: 600_000 };

/**
 * Delay before attempt `attempts + 1`, given `attempts` failed ones: base * 2^attempts, capped.
 * `jitter` (0..1) spreads retries of many clients: the delay is scaled by a random factor in
 * [1 - jitter, 1 + jitter].
 */
export function backoffMs(attempts: number, settings: Pick<RetrySettings, 'baseMs' | 'maxMs'>, jitter = 0): number {
  const exponent = Math.max(0, Math.min(attempts, 52));
  const delay = Math.min(settings.maxMs, settings.baseMs * 2 ** exponent);
  if (jitter <= 0) return delay;
  return Math.round(delay * (1 - jitter + Math.random() * 2 * jitter));
}

export type RetryDecision = { kind: 'retry'; delayMs: number } | { kind: 'give-up'; attemptsMade: number };

/**
 * What to do after a failed attempt. `attempts` is how many failed before this one; a permanent
 * failure (the data is damaged, the image breaks a limit) gives up at once.
 */
export function decideRetry(attempts: number, permanent: boolean, settings: RetrySettings): RetryDecision {
  const attemptsMade = attempts + 1;
  if (permanent || attemptsMade >= settings.maxAttempts) return { kind: 'give-up', attemptsMade };
  return { kind: 'retry', delayMs: backoffMs(attempts, settings) };
}

export function retrySettingsOf(worker: { max_attempts: number; retry_base_seconds: number; retry_max_seconds: number }): RetrySettings {
  return { maxAttempts: worker.max_attempts, baseMs: worker.retry_base_seconds * 1000, maxMs: worker.retry_max_seconds * 1000 };
}
