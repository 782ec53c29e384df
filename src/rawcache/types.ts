import type { StepLimits } from './deadline';

/**
 * The raw-cache pipeline's shared vocabulary: trigger -> durable queue -> worker -> Glance.
 * Nothing here imports the HTTP server; the proxy only enqueues.
 */

/** Why an image was (re)queued; for logs and metrics only: the worker always re-reads the image. */
export type TriggerReason = 'upload' | 'import' | 'update' | 'delete' | 'reconcile' | 'operator';

/**
 * A job says "look at this image and make its raw copy right": the worker decides from the image
 * as Glance shows it now (convert, remove the copy, or nothing), so jobs are idempotent and any
 * number of triggers for one image may coalesce.
 */
export interface RawCacheJob {
  imageId: string;
  reason: TriggerReason;
  /** Attempts already made after transient failures (0 on the first run). */
  attempts: number;
  /** ISO-8601 time of the first trigger still pending in this job. */
  enqueuedAt: string;
}

export interface RetryOptions {
  /** False when the job only waits (an import still running): no attempt is used up. Default true. */
  countAttempt?: boolean;
}

/**
 * The fence of a claimed job: a conversion runs only while its holder still owns the job. The queue
 * aborts `signal` as soon as it learns the job is no longer this worker's (an SQLite lease another
 * worker took or that could not be renewed in time, a RabbitMQ channel or connection that closed, so
 * that the broker delivers the job again), and `confirmOwnership()` checks it live, with a round trip
 * to the queue, before each irreversible step.
 */
export interface JobOwnership {
  /** Unique per claim, across processes and hosts: names the claim's partial outputs. */
  readonly claimId: string;
  /** Aborts (with an OwnershipLostError) when the job stops being this worker's. */
  readonly signal: AbortSignal;
  /** Resolves when the queue confirmed, just now, that the job is still this worker's; otherwise aborts `signal` and rejects with OwnershipLostError. */
  confirmOwnership(): Promise<void>;
}

/** The job is no longer this worker's: stop, and write nothing more for it. */
export class OwnershipLostError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OwnershipLostError';
  }
}

/** A job handed to one worker; exactly one of the three settles it. */
export interface ClaimedJob extends RawCacheJob, JobOwnership {
  /** Done. A trigger for the same image that arrived while it ran makes it come back. */
  complete(): Promise<void>;
  /** Run again after `delayMs`, with `attempts` + 1 (transient failure) unless told not to count it. */
  retry(delayMs: number, options?: RetryOptions): Promise<void>;
  /** Hand back at once, no attempt counted (the worker is stopping). */
  release(): Promise<void>;
}

export interface ConsumeOptions {
  /** Jobs running at once in this process. */
  concurrency: number;
}

export interface QueueHealth {
  ok: boolean;
  /** Jobs waiting (not running), when the backend can tell. */
  depth?: number;
  detail?: string;
}

/**
 * A durable queue of raw-cache jobs. Two implementations: SQLite (one host, no server) and
 * RabbitMQ (several proxy and worker hosts).
 *
 * Guarantees every implementation gives:
 * - `enqueue` resolves only once the job is durable (committed / confirmed by the broker);
 * - a job is delivered again if the worker holding it dies (lease expiry / unacked redelivery);
 * - never two jobs for one image at once, across every worker process sharing the queue, and a
 *   claim that loses the job is told (its `signal` aborts, `confirmOwnership` rejects);
 * - a handler that throws counts as `retry` with the queue's default backoff.
 */
export interface JobQueue {
  readonly backend: 'sqlite' | 'amqp';
  enqueue(imageId: string, reason: TriggerReason): Promise<void>;
  /** Starts delivering jobs to `handler` (returns once delivery has started). */
  consume(handler: (job: ClaimedJob) => Promise<void>, options: ConsumeOptions): Promise<void>;
  /** Stops taking new jobs; resolves when the handlers in flight have settled their jobs. */
  stopConsuming(): Promise<void>;
  health(): Promise<QueueHealth>;
  close(): Promise<void>;
}

/** What a target converts: a verified local file, the limits of the conversion, and the fence. */
export interface CopySource {
  path: string;
  /** qemu-img's name of the format. */
  format: string;
  virtualSize: number;
  /** Deadline and stall limit of the conversion. */
  limits?: StepLimits;
  /** Told each percent of the conversion qemu-img reports (the worker's progress board). */
  onProgress?: (percent: number) => void;
  /**
   * The fence: called right before the copy is committed under its final name (rename, snapshot);
   * rejects when the job is no longer this worker's, and the write then removes its partial.
   */
  commit?: () => Promise<void>;
}

/** Where raw copies live: computed from the image id alone, never from an image property. */
export interface RawCopyTarget {
  readonly kind: 'file' | 'rbd';
  /** The cache_raw_url of the copy of `imageId`. */
  urlFor(imageId: string): string;
  /**
   * Converts `source` (a verified local file in `format`, as qemu-img names formats) to RAW as the
   * copy of `imageId`. Partial output is removed when it fails or `signal` aborts. Resolves with
   * the copy's size in bytes.
   */
  write(imageId: string, source: CopySource, signal: AbortSignal): Promise<{ url: string; size: number }>;
  exists(imageId: string): Promise<boolean>;
  /** Removes the copy (and anything a failed write left); succeeds when there is none. */
  remove(imageId: string): Promise<void>;
  /** Ids of the images that have a copy (or leftovers) here, for the orphan sweep. */
  list(): Promise<string[]>;
  /** Bytes free for new copies, when the target can tell. */
  freeBytes(): Promise<number | undefined>;
}

/**
 * A failure the person who owns the image can read and act on. `permanent` failures end in
 * cache_raw_status Error; the others are retried with backoff first.
 */
export class RawCacheError extends Error {
  constructor(
    message: string,
    readonly permanent: boolean,
  ) {
    super(message);
    this.name = 'RawCacheError';
  }
}
