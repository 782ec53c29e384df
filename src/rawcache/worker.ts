import { rm } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { RawCacheConfig } from '../config/load';
import type { Logger } from '../ops/log';
import { GlanceHttpError, type GlanceClient } from './glance-client';
import { containerFormatInHeader, inspectImage } from './inspect';
import { removeLeftovers, workDirPlace } from './leftovers';
import { fetchVerifiedSource, rbdExportReader } from './source';
import { RAW_CACHE_FIELDS, hasRawCacheFields, isAlreadyRaw, isDataPending, isGone, wantsRawCopy, type CachedImage } from './state';
import { RawCacheError, type ClaimedJob, type JobQueue, type RawCopyTarget } from './types';

/** How often an import still running is looked at again (it does not count as a failure). */
const DATA_PENDING_RECHECK_MS = 3_000;
/** How often a conversion checks that its image still exists and still wants a copy. */
const WATCH_INTERVAL_MS = 2_000;
/** Enough of an image to see any container format's header. */
const RAW_HEADER_BYTES = 64 * 1024;
/** Retried failures say so; once they end in Error that promise no longer holds. */
const RETRY_PROMISE = /;?\s*(it )?will (be )?retr(y|ied)[^.;]*\.?$/i;

export interface WorkerDeps {
  glance: GlanceClient;
  queue: JobQueue;
  target: RawCopyTarget;
  config: RawCacheConfig;
  logger: Logger;
  /** Called with each finished conversion, for metrics. */
  onConversion?: (outcome: 'cached' | 'error' | 'retry' | 'cancelled', seconds: number) => void;
}

/** Why a conversion stopped before the end without having failed. */
class Cancelled extends Error {
  constructor(readonly why: 'image-gone' | 'cache-raw-off' | 'shutdown') {
    super(why);
  }
}

interface RbdLocation { pool: string; image: string; snap: string }

/** `rbd://<fsid>/<pool>/<image>/<snap>`, as Glance's rbd store writes image locations. */
export function rbdLocationOf(image: CachedImage): RbdLocation | undefined {
  const urls = [...(image.locations ?? []).map((l) => l.url), image.direct_url].filter((u): u is string => typeof u === 'string');
  for (const url of urls) {
    const m = /^rbd:\/\/[^/]+\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(url);
    if (m) return { pool: decodeURIComponent(m[1]), image: decodeURIComponent(m[2]), snap: decodeURIComponent(m[3]) };
  }
  return undefined;
}

/**
 * Runs raw-cache jobs: for each image it reads what Glance shows now and makes the raw copy match
 * (convert, remove, or nothing), recording the state on the image with the worker's own identity.
 */
export class RawCacheWorker {
  private readonly running = new Set<AbortController>();

  constructor(private readonly deps: WorkerDeps) {}

  start(): Promise<void> {
    return this.deps.queue.consume((job) => this.process(job), { concurrency: this.deps.config.worker.concurrency });
  }

  /** Takes no new job; lets running ones finish for `graceMs`, then hands them back to the queue. */
  async stop(graceMs: number): Promise<void> {
    const stopped = this.deps.queue.stopConsuming();
    const timer = setTimeout(() => {
      for (const controller of this.running) controller.abort(new Cancelled('shutdown'));
    }, graceMs);
    await stopped;
    clearTimeout(timer);
  }

  async process(job: ClaimedJob): Promise<void> {
    const { glance, target, logger } = this.deps;
    const log = logger.child({ image_id: job.imageId, reason: job.reason, attempt: job.attempts + 1 });
    let image: CachedImage | undefined;
    try {
      image = await glance.getImage(job.imageId);
    } catch (err) {
      log.warn('cannot read the image from Glance; will retry', { error: (err as Error).message });
      return job.retry(this.backoff(job.attempts));
    }
    if (isGone(image)) {
      await target.remove(job.imageId);
      log.info('image is gone; its raw copy is removed');
      return job.complete();
    }
    if (!wantsRawCopy(image!)) {
      // Every upload is a trigger; most images never asked for a copy and have nothing to undo.
      if (!hasRawCacheFields(image!)) return job.complete();
      return this.removeCopy(image!, job, log);
    }
    if (isDataPending(image!)) return job.retry(DATA_PENDING_RECHECK_MS, { countAttempt: false });
    if (image!.status !== 'active') return job.complete();
    if (isAlreadyRaw(image!)) return this.recordOwnData(image!, job);
    if (image!.cache_raw_status === 'Error' && job.reason !== 'operator' && job.reason !== 'update') return job.complete();
    if (image!.cache_raw_status === 'Cached' && image!.cache_raw_url === target.urlFor(image!.id) && (await target.exists(image!.id))) {
      return job.complete();
    }
    return this.convert(image!, job, log);
  }

  private async removeCopy(image: CachedImage, job: ClaimedJob, log: Logger): Promise<void> {
    await this.deps.target.remove(image.id);
    await this.deps.glance.updateProperties(image, {}, RAW_CACHE_FIELDS);
    log.info('cache_raw is off: raw copy and fields removed');
    return job.complete();
  }

  private async recordOwnData(image: CachedImage, job: ClaimedJob): Promise<void> {
    await this.deps.target.remove(image.id);
    const disguised = containerFormatInHeader(await this.deps.glance.downloadHead(image.id, RAW_HEADER_BYTES));
    if (disguised) {
      const message = `The image data is ${disguised}, not raw as its disk_format says: refused (set disk_format to ${disguised} and upload again).`;
      await this.deps.glance.updateProperties(image, { cache_raw_status: 'Error', cache_raw_error: message, cache_raw_size: '-' }, ['cache_raw_url']);
      return job.complete();
    }
    const own = image.direct_url ?? image.locations?.[0]?.url;
    const fields: Record<string, string> = { cache_raw_status: 'Cached', cache_raw_size: String(image.size ?? '-') };
    if (own) fields.cache_raw_url = own;
    await this.deps.glance.updateProperties(image, fields, own ? ['cache_raw_error'] : ['cache_raw_error', 'cache_raw_url']);
    return job.complete();
  }

  private async convert(image: CachedImage, job: ClaimedJob, log: Logger): Promise<void> {
    const { glance, target, config } = this.deps;
    const started = Date.now();
    const controller = new AbortController();
    this.running.add(controller);
    const watch = setInterval(() => {
      glance.getImage(image.id).then(
        (now) => {
          if (isGone(now)) controller.abort(new Cancelled('image-gone'));
          else if (!wantsRawCopy(now!)) controller.abort(new Cancelled('cache-raw-off'));
        },
        () => undefined,
      );
    }, WATCH_INTERVAL_MS);
    let sourcePath: string | undefined;
    try {
      // Caching already: a run before this one died mid-way; start from a clean target and work dir.
      if (image.cache_raw_status === 'Caching') {
        await target.remove(image.id);
        await this.removeStaleSources(image.id);
      }
      let current = await glance.updateProperties(image, { cache_raw_status: 'Caching', cache_raw_size: '-' }, ['cache_raw_url', 'cache_raw_error']);
      log.info('converting to RAW', { disk_format: image.disk_format, size: image.size });
      const source = await fetchVerifiedSource(
        { imageId: image.id, checksum: image.checksum ?? null, osHashAlgo: image.os_hash_algo ?? null, osHashValue: image.os_hash_value ?? null, size: image.size ?? null },
        () => this.openSource(image, controller.signal),
        config.worker.work_dir,
        controller.signal,
      );
      sourcePath = source.path;
      const info = await inspectImage(source.path, String(image.disk_format), controller.signal);
      const copy = await target.write(image.id, { path: source.path, format: info.format, virtualSize: info.virtualSize }, controller.signal);
      // The work dir is cleared before the image says Cached: Cached means the worker is done with it.
      await rm(source.path, { force: true });
      sourcePath = undefined;
      current = (await glance.getImage(image.id)) ?? current;
      await glance.updateProperties(current, { cache_raw_status: 'Cached', cache_raw_url: copy.url, cache_raw_size: String(copy.size) }, ['cache_raw_error']);
      log.info('raw copy cached', { url: copy.url, size: copy.size, seconds: (Date.now() - started) / 1000 });
      this.deps.onConversion?.('cached', (Date.now() - started) / 1000);
      await job.complete();
    } catch (err) {
      await this.settleFailure(image, job, log, controller.signal.aborted ? controller.signal.reason : err, started);
    } finally {
      clearInterval(watch);
      this.running.delete(controller);
      if (sourcePath) await rm(sourcePath, { force: true });
    }
  }

  /** Work-dir files a killed run left (a live writer's, on this host or another, stay). */
  private async removeStaleSources(imageId: string): Promise<void> {
    await removeLeftovers([workDirPlace(this.deps.config.worker.work_dir)], this.deps.logger, imageId);
  }

  private openSource(image: CachedImage, signal: AbortSignal): Promise<Readable> | Readable {
    const { target } = this.deps.config;
    const rbd = rbdLocationOf(image);
    // Straight from Ceph when the image lives there and this worker can reach the cluster.
    if (rbd && target.kind === 'rbd') return rbdExportReader(rbd.pool, rbd.image, rbd.snap, target.rbd_user, target.ceph_conf, signal);
    return this.deps.glance.download(image.id, signal);
  }

  private async settleFailure(image: CachedImage, job: ClaimedJob, log: Logger, err: unknown, started: number): Promise<void> {
    const { glance, target, config } = this.deps;
    const seconds = (Date.now() - started) / 1000;
    await target.remove(image.id).catch((e: Error) => log.warn('could not remove a partial raw copy', { error: e.message }));
    if (err instanceof Cancelled) {
      this.deps.onConversion?.('cancelled', seconds);
      if (err.why === 'shutdown') {
        log.info('worker stopping: conversion handed back');
        return job.release();
      }
      log.info('conversion cancelled', { why: err.why });
      // Once more from the top: the image is gone (nothing to record) or cache_raw is off (clear fields).
      return this.process(job);
    }
    if (err instanceof GlanceHttpError && err.status === 404) {
      log.info('image deleted during conversion');
      return job.complete();
    }
    const permanent = err instanceof RawCacheError && err.permanent;
    const lastAttempt = job.attempts + 1 >= config.worker.max_attempts;
    const message = (err as Error).message;
    const current = (await glance.getImage(image.id).catch(() => image)) ?? image;
    if (permanent || lastAttempt) {
      const reason = permanent ? message : `The RAW copy failed ${job.attempts + 1} times; last error: ${message.replace(RETRY_PROMISE, '')}`;
      log.error('raw cache failed', { error: message, permanent });
      this.deps.onConversion?.('error', seconds);
      await glance
        .updateProperties(current, { cache_raw_status: 'Error', cache_raw_error: reason, cache_raw_size: '-' }, ['cache_raw_url'])
        .catch((e: Error) => log.error('could not record the error on the image', { error: e.message }));
      return job.complete();
    }
    const delay = this.backoff(job.attempts);
    log.warn('conversion failed; will retry', { error: message, retry_in_s: delay / 1000 });
    this.deps.onConversion?.('retry', seconds);
    await glance.updateProperties(current, { cache_raw_status: 'Queued', cache_raw_size: '-' }, ['cache_raw_url']).catch(() => undefined);
    return job.retry(delay);
  }

  private backoff(attempts: number): number {
    const { retry_base_seconds, retry_max_seconds } = this.deps.config.worker;
    return Math.min(retry_max_seconds, retry_base_seconds * 2 ** attempts) * 1000;
  }
}
