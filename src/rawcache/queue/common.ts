import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import type { Logger } from '../../ops/log';
import { DEFAULT_RETRY, backoffMs } from '../retry';
import { OwnershipLostError, type ClaimedJob, type ConsumeOptions, type RawCacheJob, type RetryOptions, type TriggerReason } from '../types';

/** Options both backends share; none is needed in production (the defaults follow the config schema). */
export interface JobQueueOptions {
  /**
   * Delay before a job whose handler threw (or returned without settling it) runs again, from the
   * attempts it had. Default: 5 s doubling per attempt, at most 600 s (rawcache.worker defaults).
   */
  retryDelayMs?: (attempts: number) => number;
  /** SQLite: how often an idle consumer looks for due jobs. Default 250 ms. */
  pollIntervalMs?: number;
  /** AMQP: how long `enqueue` waits for the broker's confirm before it rejects. Default 10 s. */
  confirmTimeoutMs?: number;
  /** AMQP: how long a new connection's setup (channels, declarations, consumers) may wait for the broker. Default 20 s. */
  setupTimeoutMs?: number;
}

export const DEFAULT_POLL_INTERVAL_MS = 250;
export const DEFAULT_CONFIRM_TIMEOUT_MS = 10_000;

export function defaultRetryDelayMs(attempts: number): number {
  return backoffMs(attempts, DEFAULT_RETRY);
}

/**
 * The one spelling of an image id in jobs, lease rows, partitions and copy names: lower case, as
 * Glance generates them. MySQL and MariaDB (most clouds' Glance database) find an image whatever the
 * case of its id, so without this two spellings of one image would be two jobs running at once.
 */
export function canonicalImageId(imageId: string): string {
  return imageId.toLowerCase();
}

/** This process, in claim ids: host, pid and a random part (several queues per process are fine). */
const PROCESS_TAG = `${hostname().replace(/[^A-Za-z0-9-]/g, '-').slice(0, 32)}.${process.pid}.${randomBytes(3).toString('hex')}`;
let claimCounter = 0;

/** A claim id unique across processes and hosts: `<host>.<pid>.<random>.<n>`. */
export function newClaimId(): string {
  return `${PROCESS_TAG}.${++claimCounter}`;
}

/**
 * The queue cannot record or hand out jobs right now (broker unreachable, database unusable).
 * The caller decides: the proxy logs and lets the reconciler find the image later.
 */
export class QueueUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QueueUnavailableError';
  }
}

export const TRIGGER_REASONS: readonly TriggerReason[] = ['upload', 'import', 'update', 'delete', 'reconcile', 'operator'];

export function isTriggerReason(value: unknown): value is TriggerReason {
  return typeof value === 'string' && (TRIGGER_REASONS as readonly string[]).includes(value);
}

/** Refuses a job no worker could run; returns the image id in its canonical spelling. */
export function checkEnqueueArguments(imageId: string, reason: TriggerReason): string {
  if (typeof imageId !== 'string' || imageId.length === 0 || imageId.length > 255) {
    throw new TypeError(`raw-cache job: image id must be a non-empty string of at most 255 characters`);
  }
  if (!isTriggerReason(reason)) throw new TypeError(`raw-cache job: unknown trigger reason '${String(reason)}'`);
  return canonicalImageId(imageId);
}

/** Refuses a consume() the backend cannot honour, the same way in every backend. */
export function checkConsumeArguments(closed: boolean, consuming: boolean, options: ConsumeOptions): void {
  if (closed) throw new Error('raw-cache queue is closed');
  if (consuming) throw new Error('raw-cache queue: consume() was called twice');
  if (!Number.isInteger(options.concurrency) || options.concurrency < 1) {
    throw new RangeError(`raw-cache queue: concurrency must be a positive integer, not ${options.concurrency}`);
  }
}

/** How a claimed job ends, as the backend applies it. */
export type Settlement = { kind: 'complete' } | { kind: 'retry'; delayMs: number; countAttempt: boolean } | { kind: 'release' };

/**
 * Wraps a job for the handler: only the first of complete/retry/release counts (a second call
 * rejects), and `settled` tells the runner whether the handler left the job open. It also carries
 * the claim's fence: the backend calls `lose()` when the job stops being this worker's, and
 * `confirm` is the backend's live ownership check.
 */
export class JobSettlement {
  private outcome: Promise<void> | undefined;
  private readonly ownership = new AbortController();
  readonly claimId = newClaimId();

  constructor(
    private readonly job: RawCacheJob,
    private readonly apply: (settlement: Settlement) => Promise<void>,
    private readonly confirm: () => Promise<void>,
  ) {}

  get settled(): boolean {
    return this.outcome !== undefined;
  }

  /** Resolves when the settlement the handler chose has been applied (or failed). */
  get applied(): Promise<void> {
    return (this.outcome ?? Promise.resolve()).catch(() => undefined);
  }

  get lost(): boolean {
    return this.ownership.signal.aborted;
  }

  /** The job is no longer this claim's: aborts the handler's work (once; later calls are ignored). */
  lose(why: string): void {
    if (this.ownership.signal.aborted || this.settled) return;
    this.ownership.abort(new OwnershipLostError(`the raw-cache job for image ${this.job.imageId} is no longer this worker's: ${why}`));
  }

  claimed(): ClaimedJob {
    const settle = (settlement: Settlement): Promise<void> => {
      if (this.outcome) {
        return Promise.reject(new Error(`raw-cache job for image ${this.job.imageId} was already settled`));
      }
      this.outcome = this.apply(settlement);
      return this.outcome;
    };
    const signal = this.ownership.signal;
    const confirmOwnership = async (): Promise<void> => {
      if (signal.aborted) throw signal.reason;
      if (this.settled) throw new OwnershipLostError(`the raw-cache job for image ${this.job.imageId} was already settled`);
      try {
        await this.confirm();
      } catch (err) {
        this.lose((err as Error).message);
        throw signal.reason;
      }
      if (signal.aborted) throw signal.reason;
    };
    return {
      ...this.job,
      claimId: this.claimId,
      signal,
      confirmOwnership,
      complete: () => settle({ kind: 'complete' }),
      retry: (delayMs: number, options?: RetryOptions) =>
        settle({ kind: 'retry', delayMs: Math.max(0, Math.round(Number(delayMs) || 0)), countAttempt: options?.countAttempt ?? true }),
      release: () => settle({ kind: 'release' }),
    };
  }

  /**
   * Runs the handler and settles what it left open: a throw, or a return without settling, is a
   * retry with the default backoff (jobs are idempotent, so running again is always safe).
   */
  async run(handler: (job: ClaimedJob) => Promise<void>, retryDelayMs: (attempts: number) => number, logger: Logger): Promise<void> {
    const claimed = this.claimed();
    const log = { image_id: this.job.imageId, reason: this.job.reason, attempts: this.job.attempts };
    try {
      await handler(claimed);
      if (!this.settled) {
        logger.warn('raw-cache handler returned without settling its job; retrying it', log);
        await claimed.retry(retryDelayMs(this.job.attempts)).catch(() => undefined);
      }
    } catch (err) {
      if (this.settled) {
        logger.error('raw-cache handler failed after settling its job', { ...log, error: (err as Error).message });
      } else {
        logger.warn('raw-cache handler failed; retrying the job', { ...log, error: (err as Error).message });
        await claimed.retry(retryDelayMs(this.job.attempts)).catch(() => undefined);
      }
    }
    await this.applied;
  }
}
