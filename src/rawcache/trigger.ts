import type { RawCacheConfig } from '../config/load';
import type { Logger } from '../ops/log';
import { withDeadline } from './deadline';
import { QueueUnavailableError } from './queue/common';
import { needsRawCacheWork, type CachedImage } from './state';
import { TriggerSpool, type SpooledTrigger } from './trigger-spool';
import type { JobQueue, TriggerReason } from './types';

/**
 * The proxy's side of the raw cache: after Glance has done something that may change what an
 * image's raw copy should be, record a job durably before the client hears the answer.
 */
export interface RawCacheTrigger {
  /** Upload finished (204), import accepted (202) or image deleted (204). */
  afterImageChange(imageId: string, reason: Extract<TriggerReason, 'upload' | 'import' | 'delete'>, requestId: string): Promise<void>;
  /** An update answered with the image as it is now: a job only when the raw cache must follow. */
  afterImageUpdate(image: unknown, requestId: string): Promise<void>;
  /** Stops draining the spool (what is left waits for the next start) once spool writes in flight are done. */
  close(): Promise<void>;
}

/**
 * How long an answer waits for the spool once the queue has failed it. A local fsync that takes
 * longer means a sick disk: the answer goes out, the error is logged, and the reconciler's sweep
 * is what finds the image.
 */
const SPOOL_WAIT_MS = 5_000;
/** A drain that finds the queue still unable to take jobs tries again after this, doubling up to the maximum. */
const DRAIN_RETRY_FIRST_MS = 1_000;
const DRAIN_RETRY_MAX_MS = 10_000;
/** Spooled triggers handed to the queue at once (the SQLite writer commits them together; RabbitMQ confirms them together). */
const DRAIN_BATCH = 64;

/**
 * Answers wait until the trigger is durable: confirmed by the queue within `queue_wait_seconds`,
 * or else appended and fsynced to the spool (`spool_dir`), which a background drain empties into
 * the queue once it takes jobs again (and at every start). Only when the spool fails too does the
 * answer go out with nothing recorded: logged as an error, for the reconciler's sweep to find.
 * An answer never waits longer than `queue_wait_seconds` plus 5 s.
 */
export function createRawCacheTrigger(queue: JobQueue, logger: Logger, settings: RawCacheConfig['trigger']): RawCacheTrigger {
  return new DurableTrigger(queue, logger, settings);
}

class DurableTrigger implements RawCacheTrigger {
  private readonly queueWaitMs: number;
  private readonly spool: TriggerSpool | undefined;
  private drainTimer: NodeJS.Timeout | undefined;
  private draining: Promise<void> | undefined;
  private drainRequested = false;
  private drainRetryMs = DRAIN_RETRY_FIRST_MS;
  /** The queue failed the last drain: the next failure is not news, its success is. */
  private drainFailing = false;
  private closed = false;

  constructor(
    private readonly queue: JobQueue,
    private readonly logger: Logger,
    settings: RawCacheConfig['trigger'],
  ) {
    this.queueWaitMs = Math.max(1, Math.round(settings.queue_wait_seconds * 1000));
    this.spool = settings.spool_dir === null ? undefined : new TriggerSpool(settings.spool_dir);
    // What an earlier run spooled (and could not drain before it stopped or died) goes first.
    this.scheduleDrain(0);
  }

  afterImageChange(imageId: string, reason: Extract<TriggerReason, 'upload' | 'import' | 'delete'>, requestId: string): Promise<void> {
    return this.record(imageId, reason, requestId);
  }

  async afterImageUpdate(image: unknown, requestId: string): Promise<void> {
    const candidate = image as CachedImage;
    if (typeof candidate?.id === 'string' && needsRawCacheWork(candidate)) await this.record(candidate.id, 'update', requestId);
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.drainTimer);
    this.drainTimer = undefined;
    await this.draining;
    await this.spool?.close();
  }

  private async record(imageId: string, reason: TriggerReason, requestId: string): Promise<void> {
    const log = { request_id: requestId, image_id: imageId, reason };
    const queued = this.queue.enqueue(imageId, reason);
    let queueError: Error;
    try {
      await withDeadline(queued, this.queueWaitMs, () => new QueueUnavailableError(`the queue did not confirm within ${this.queueWaitMs} ms`));
      this.logger.debug('raw-cache job recorded', log);
      return;
    } catch (err) {
      queueError = err as Error;
    }
    // A confirm that still comes duplicates the spooled trigger: harmless, jobs are idempotent.
    queued.catch(() => undefined);
    if (!(queueError instanceof QueueUnavailableError)) {
      // Not the queue being away: the trigger itself is wrong, and would be wrong from the spool too.
      this.logger.error('raw-cache trigger refused by the queue', { ...log, error: queueError.message });
      return;
    }
    const spool = this.spool;
    if (!spool) {
      this.logger.error("raw-cache trigger not recorded: the queue did not take it and rawcache.trigger.spool_dir is null; the reconciler's sweep will find the image", {
        ...log,
        error: queueError.message,
      });
      return;
    }
    try {
      const trigger: SpooledTrigger = { imageId, reason, spooledAt: new Date().toISOString(), requestId };
      await withDeadline(spool.append(trigger), SPOOL_WAIT_MS, () => new Error(`the spool did not confirm within ${SPOOL_WAIT_MS} ms`));
      this.logger.warn('raw-cache trigger spooled: the queue did not take it; it is queued from the spool once the queue takes jobs again', {
        ...log,
        error: queueError.message,
        spool_dir: spool.dir,
      });
    } catch (err) {
      this.logger.error("raw-cache trigger not recorded: neither the queue nor the spool took it; the reconciler's sweep will find the image", {
        ...log,
        error: queueError.message,
        spool_error: (err as Error).message,
        spool_dir: spool.dir,
      });
    } finally {
      // Also after a spool write that timed out: it may still land.
      this.scheduleDrain(this.drainRetryMs);
    }
  }

  private scheduleDrain(delayMs: number): void {
    if (!this.spool || this.closed) return;
    if (this.draining) {
      this.drainRequested = true;
      return;
    }
    if (this.drainTimer) return;
    this.drainTimer = setTimeout(() => {
      this.drainTimer = undefined;
      this.draining = this.drain();
    }, delayMs);
    // The spool is on disk: a timer must not keep a stopping process alive.
    this.drainTimer.unref();
  }

  private async drain(): Promise<void> {
    let outcome: 'empty' | 'queued' | 'failed';
    try {
      outcome = await this.drainOnce(this.spool!);
    } catch (err) {
      this.logger.error('raw-cache spool: cannot read the spooled triggers', { spool_dir: this.spool!.dir, error: (err as Error).message });
      outcome = 'failed';
    }
    this.draining = undefined;
    const requested = this.drainRequested;
    this.drainRequested = false;
    if (outcome === 'failed') {
      this.scheduleDrain(this.drainRetryMs);
      this.drainRetryMs = Math.min(DRAIN_RETRY_MAX_MS, this.drainRetryMs * 2);
      return;
    }
    this.drainRetryMs = DRAIN_RETRY_FIRST_MS;
    // Until a pass finds the spool empty: triggers may have been spooled while this one ran.
    if (outcome === 'queued' || requested) this.scheduleDrain(0);
  }

  private async drainOnce(spool: TriggerSpool): Promise<'empty' | 'queued' | 'failed'> {
    const claim = await spool.claim();
    if (claim.files.length === 0) return 'empty';
    if (claim.unreadable > 0) {
      this.logger.warn('raw-cache spool: skipped lines that are not triggers (a write a crash cut short, never answered)', {
        spool_dir: spool.dir,
        lines: claim.unreadable,
      });
    }
    // One job per image, with the latest reason, as the queue itself coalesces.
    const latest = new Map<string, SpooledTrigger>();
    for (const trigger of claim.triggers) {
      latest.delete(trigger.imageId);
      latest.set(trigger.imageId, trigger);
    }
    const triggers = [...latest.values()];
    for (let start = 0; start < triggers.length; start += DRAIN_BATCH) {
      const batch = triggers.slice(start, start + DRAIN_BATCH);
      const results = await Promise.allSettled(batch.map((trigger) => this.queue.enqueue(trigger.imageId, trigger.reason)));
      let unavailable: Error | undefined;
      results.forEach((result, n) => {
        if (result.status === 'fulfilled') return;
        const error = result.reason as Error;
        if (error instanceof QueueUnavailableError) unavailable ??= error;
        else this.logger.error('raw-cache spool: dropping a trigger the queue refuses', { image_id: batch[n].imageId, reason: batch[n].reason, error: error.message });
      });
      if (unavailable) {
        this.logger.log(this.drainFailing ? 'debug' : 'warn', 'raw-cache spool: the queue still does not take jobs; the spooled triggers wait', {
          spool_dir: spool.dir,
          triggers: triggers.length,
          error: unavailable.message,
        });
        this.drainFailing = true;
        return 'failed';
      }
    }
    await spool.release(claim.files);
    this.drainFailing = false;
    this.logger.info('raw-cache spool: spooled triggers queued', {
      spool_dir: spool.dir,
      triggers: triggers.length,
      oldest: claim.triggers[0]?.spooledAt,
    });
    return 'queued';
  }
}
