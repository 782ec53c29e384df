import { createReadStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import type { RawCacheConfig } from '../config/load';
import type { Logger } from '../ops/log';
import { DeadlineError, StepWatch, type StepLimits } from './deadline';
import { isAbortError } from './exec';
import { GlanceHttpError, type GlanceClient } from './glance-client';
import { containerFormatInHeader, inspectImage } from './inspect';
import { removeLeftovers, workDirPlace } from './leftovers';
import type { ProgressBoard } from './progress';
import { decideRetry, retrySettingsOf } from './retry';
import { RbdRawCopyTarget } from './targets/rbd';
import {
  chooseFileSource,
  chooseSource,
  dataRecordOf,
  describeVerification,
  fetchVerifiedSource,
  parseRbdLocation,
  rbdExportReader,
  readAndVerify,
  readHead,
  verificationOf,
  type InPlaceReadPolicy,
  type OpenSource,
  type RbdLocation,
} from './source';
import { RAW_CACHE_FIELDS, hasRawCacheFields, isAlreadyRaw, isDataPending, isGone, ownDataFields, wantsRawCopy, type CachedImage } from './state';
import { OwnershipLostError, RawCacheError, type ClaimedJob, type JobQueue, type RawCopyTarget } from './types';

/** How often an import still running is looked at again (it does not count as a failure). */
const DATA_PENDING_RECHECK_MS = 3_000;
/** How often a conversion checks that its image still exists and still wants a copy. */
const WATCH_INTERVAL_MS = 2_000;
/** Enough of an image to see any container format's header. */
const RAW_HEADER_BYTES = 64 * 1024;
/**
 * Formats converted straight from RBD: their inspection needs only the header. A fixed VHD has its
 * footer at the end, and a VMDK's extents are checked against a local file name: those are
 * downloaded first.
 */
const IN_PLACE_RBD_FORMATS = new Set(['qcow2', 'vdi', 'vhdx', 'ploop', 'raw', 'iso', 'ami']);

/** A source qemu-img reads where it lives, and a second read of it that proves it (readAndVerify). */
interface InPlaceSource {
  kind: 'in-place';
  open: OpenSource;
  /** What qemu-img opens: Glance's file, or an rbd: spec of the image's snapshot. */
  qemuSource: string;
  /** True when the inspection cannot read the source itself (rbd:) and takes the verifying read's header. */
  headOnly: boolean;
}

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
  /** Where the conversions in flight report qemu-img's progress (the ops listener publishes it). */
  progress?: ProgressBoard;
}

/** Why a conversion stopped before the end without having failed. */
class Cancelled extends Error {
  constructor(readonly why: 'image-gone' | 'cache-raw-off' | 'shutdown') {
    super(why);
  }
}

/** The error an aborted step stands for: the abort's reason when it is one of ours. */
function causeOf(err: unknown): unknown {
  if (isAbortError(err)) {
    const cause = (err as Error).cause;
    if (cause instanceof Cancelled || cause instanceof DeadlineError || cause instanceof OwnershipLostError) return cause;
  }
  return err;
}

/**
 * The image's first `rbd://<fsid>/<pool>/<image>/<snap>` location (as Glance's rbd store writes
 * them), from `locations` or `direct_url`: whichever Glance shows the worker.
 */
export function rbdLocationOf(image: CachedImage): RbdLocation | undefined {
  const urls = [...(image.locations ?? []).map((l) => l.url), image.direct_url].filter((u): u is string => typeof u === 'string');
  for (const url of urls) {
    if (!url.startsWith('rbd://')) continue;
    return parseRbdLocation(url);
  }
  return undefined;
}

/**
 * Runs raw-cache jobs: for each image it reads what Glance shows now and makes the raw copy match
 * (convert, remove, or nothing), recording the state on the image with the worker's own identity.
 *
 * Every step that cannot be taken back (recording a state on the image, committing or removing a
 * copy) runs only after the queue confirmed, just then, that the job is still this worker's; a job
 * the queue takes away mid-way aborts the conversion, which removes its own partial output and
 * writes nothing more. Every failure, whatever step it comes from, is settled in one place
 * (settleFailure) by the one retry policy (retry.ts).
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
    const log = this.deps.logger.child({ image_id: job.imageId, reason: job.reason, attempt: job.attempts + 1 });
    const started = Date.now();
    let image: CachedImage | undefined;
    try {
      image = await this.deps.glance.getImage(job.imageId);
      return await this.handle(image, job, log);
    } catch (err) {
      return this.settleFailure(image, job, log, err, started);
    }
  }

  private async handle(image: CachedImage | undefined, job: ClaimedJob, log: Logger): Promise<void> {
    const { target } = this.deps;
    if (isGone(image)) {
      await job.confirmOwnership();
      await target.remove(job.imageId);
      log.info('image is gone; its raw copy is removed');
      return job.complete();
    }
    if (!wantsRawCopy(image!)) {
      // Every upload is a trigger; most images never asked for a copy and have nothing to undo.
      if (!hasRawCacheFields(image!)) return job.complete();
      return this.removeCopy(image!, job, log);
    }
    if (isDataPending(image!)) return this.waitForData(image!, job, log);
    if (image!.status !== 'active') return job.complete();
    if (isAlreadyRaw(image!)) {
      await job.confirmOwnership();
      return this.recordOwnData(image!, job, log);
    }
    if (image!.cache_raw_status === 'Error' && job.reason !== 'operator' && job.reason !== 'update') return job.complete();
    if (image!.cache_raw_status === 'Cached' && image!.cache_raw_url === target.urlFor(image!.id) && (await target.exists(image!.id))) {
      return job.complete();
    }
    return this.convert(image!, job, log);
  }

  /**
   * An upload or import still running: looked at again later without using up an attempt, for at
   * most data_wait_seconds after the trigger. Then the job ends; the reconciler's sweep queues the
   * image again once it is active (an upload through the proxy triggers on its own when it ends).
   */
  private waitForData(image: CachedImage, job: ClaimedJob, log: Logger): Promise<void> {
    const waitedMs = Date.now() - Date.parse(job.enqueuedAt);
    const limitMs = this.deps.config.worker.data_wait_seconds * 1000;
    if (waitedMs >= limitMs) {
      log.warn('image data still not there; the job ends and the sweep queues the image again once it is active', {
        status: image.status,
        waited_s: Math.round(waitedMs / 1000),
      });
      return job.complete();
    }
    return job.retry(Math.min(DATA_PENDING_RECHECK_MS, limitMs - waitedMs), { countAttempt: false });
  }

  private async removeCopy(image: CachedImage, job: ClaimedJob, log: Logger): Promise<void> {
    await job.confirmOwnership();
    await this.deps.target.remove(image.id);
    await this.deps.glance.updateProperties(image, {}, RAW_CACHE_FIELDS);
    log.info('cache_raw is off: raw copy and fields removed');
    return job.complete();
  }

  /**
   * An image already in RAW gets no copy: it is recorded Cached, with its size and without a
   * cache_raw_url (ownDataFields says why). Its header is still read, without a Range request,
   * to refuse a qcow2 or other container uploaded as raw.
   */
  private async recordOwnData(image: CachedImage, job: ClaimedJob, log: Logger): Promise<void> {
    await this.deps.target.remove(image.id);
    const from = await this.chooseDataSource(image, 'header');
    const disguised = containerFormatInHeader(await readHead(from.open, RAW_HEADER_BYTES, image.id));
    await job.confirmOwnership();
    if (disguised) {
      const message = `The image data is ${disguised}, not raw as its disk_format says: refused (set disk_format to ${disguised} and upload again).`;
      await this.deps.glance.updateProperties(image, { cache_raw_status: 'Error', cache_raw_error: message, cache_raw_size: '-' }, ['cache_raw_url']);
      return job.complete();
    }
    await this.deps.glance.updateProperties(image, ownDataFields(image), ['cache_raw_error', 'cache_raw_url']);
    log.info('image is already raw: recorded Cached, no copy made', { size: image.size });
    return job.complete();
  }

  /** The limits of one long step (download, convert, import): rawcache.worker's timeouts. */
  private stepLimits(): StepLimits {
    const { step_timeout_seconds, stall_timeout_seconds } = this.deps.config.worker;
    return { timeoutMs: step_timeout_seconds * 1000, stallMs: stall_timeout_seconds * 1000 };
  }

  private async convert(image: CachedImage, job: ClaimedJob, log: Logger): Promise<void> {
    const { glance, target, config } = this.deps;
    const started = Date.now();
    const controller = new AbortController();
    // The fence: a job the queue takes away stops the conversion at once.
    const onLost = (): void => controller.abort(job.signal.reason);
    if (job.signal.aborted) onLost();
    else job.signal.addEventListener('abort', onLost, { once: true });
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
    // Progress is qemu-img's: shown from its first report until the conversion ends, whatever ends it.
    const { progress } = this.deps;
    const onProgress = (percent: number): void => progress?.report(image.id, percent);
    try {
      await job.confirmOwnership();
      // Caching already: a run before this one died mid-way; start from a clean target and work dir.
      if (image.cache_raw_status === 'Caching') {
        await target.remove(image.id);
        await this.removeStaleSources(image.id);
      }
      let current = await glance.updateProperties(image, { cache_raw_status: 'Caching', cache_raw_size: '-' }, ['cache_raw_url', 'cache_raw_error']);
      log.info('converting to RAW', { disk_format: image.disk_format, size: image.size });
      // Refused (no hash this worker can check) before anything is opened or read.
      verificationOf(dataRecordOf(image));
      const from = await this.chooseDataSource(image, 'copy');
      let copy: { url: string; size: number };
      if (from.kind === 'in-place') {
        copy = await this.convertInPlace(image, from, job, controller, onProgress);
      } else {
        const source = await this.step('downloading the image data', controller.signal, (watch) =>
          fetchVerifiedSource(
            dataRecordOf(image),
            async (signal) => {
              const stream = await from.open(signal);
              stream.on('data', () => watch.progress());
              return stream;
            },
            config.worker.work_dir,
            watch.signal,
          ),
        );
        sourcePath = source.path;
        const info = await this.step('inspecting the image data', controller.signal, (watch) => inspectImage(source.path, String(image.disk_format), watch.signal), false);
        copy = await target.write(
          image.id,
          { path: source.path, format: info.format, virtualSize: info.virtualSize, limits: this.stepLimits(), onProgress, commit: () => job.confirmOwnership() },
          controller.signal,
        );
      }
      // The work dir is cleared before the image says Cached: Cached means the worker is done with it.
      if (sourcePath !== undefined) await rm(sourcePath, { force: true });
      sourcePath = undefined;
      current = (await glance.getImage(image.id)) ?? current;
      await job.confirmOwnership();
      await glance.updateProperties(current, { cache_raw_status: 'Cached', cache_raw_url: copy.url, cache_raw_size: String(copy.size) }, ['cache_raw_error']);
      log.info('raw copy cached', { url: copy.url, size: copy.size, seconds: (Date.now() - started) / 1000 });
      this.deps.onConversion?.('cached', (Date.now() - started) / 1000);
      await job.complete();
    } catch (err) {
      throw controller.signal.aborted && !(causeOf(err) instanceof DeadlineError) ? controller.signal.reason : err;
    } finally {
      progress?.end(image.id);
      clearInterval(watch);
      job.signal.removeEventListener('abort', onLost);
      this.running.delete(controller);
      if (sourcePath) await rm(sourcePath, { force: true });
    }
  }

  /**
   * Runs one step under its limits (rawcache.worker.step_timeout_seconds; and, for steps that
   * report progress, stall_timeout_seconds).
   */
  private async step<T>(what: string, parent: AbortSignal, work: (watch: StepWatch) => Promise<T>, reportsProgress = true): Promise<T> {
    const limits = this.stepLimits();
    const watch = new StepWatch(what, reportsProgress ? limits : { timeoutMs: limits.timeoutMs }, parent);
    try {
      return await work(watch);
    } catch (err) {
      const reason: unknown = watch.signal.reason;
      if (watch.signal.aborted && reason instanceof DeadlineError) throw reason;
      throw err;
    } finally {
      watch.stop();
    }
  }

  /** Work-dir files a killed run left (a live writer's, on this host or another, stay). */
  private async removeStaleSources(imageId: string): Promise<void> {
    await removeLeftovers([workDirPlace(this.deps.config.worker.work_dir)], this.deps.logger, imageId);
  }

  /**
   * Converts the image where it lives (an RBD snapshot, or a file of Glance's file store the worker
   * shares), with its data read a second time beside the conversion to prove it against Glance's
   * record: the header the inspection needs comes from that read, and the copy is committed (its
   * final name) only once every byte was proven and the job still belongs to this worker. A
   * mismatch fails the commit, which removes the partial copy.
   */
  private async convertInPlace(
    image: CachedImage,
    from: InPlaceSource,
    job: ClaimedJob,
    controller: AbortController,
    onProgress: (percent: number) => void,
  ): Promise<{ url: string; size: number }> {
    // Ends the read when the conversion ends first (a refusal, a failure): not a failure of the read.
    const stopRead = new AbortController();
    const readWatch = new StepWatch('reading the image data to verify it', this.stepLimits(), AbortSignal.any([controller.signal, stopRead.signal]));
    const read = readAndVerify(dataRecordOf(image), from.open, readWatch.signal, () => readWatch.progress());
    const verified = read.verified.then(
      (result) => {
        readWatch.stop();
        return result;
      },
      (error: unknown) => {
        const reason: unknown = readWatch.signal.reason;
        readWatch.stop();
        // The conversion is not killed: it ends by itself and its commit fails on this, so its
        // partial is removed at once (a killed qemu-img would keep the RBD partial's watch, and
        // with it the partial, for the OSD's 30 s).
        throw readWatch.signal.aborted && reason instanceof DeadlineError ? reason : error;
      },
    );
    verified.catch(() => undefined);
    try {
      const head = await read.head;
      const info = await this.step('inspecting the image data', controller.signal, (watch) =>
        inspectImage(from.qemuSource, String(image.disk_format), watch.signal, from.headOnly ? { head } : undefined),
        false,
      );
      const copy = await this.deps.target.write(
        image.id,
        {
          path: from.qemuSource,
          format: info.format,
          virtualSize: info.virtualSize,
          limits: this.stepLimits(),
          onProgress,
          commit: async () => {
            await verified;
            await job.confirmOwnership();
          },
        },
        controller.signal,
      );
      // A copy already complete is returned without a commit: the data is still proven before Cached.
      await verified;
      return copy;
    } finally {
      // Whatever ended the conversion ends the read too (a no-op once it has finished).
      stopRead.abort();
      readWatch.stop();
      await verified.catch(() => undefined);
    }
  }

  /**
   * Where the image data is read from. In place, when the worker can see the store and is
   * configured to read it: the RBD snapshot (chooseSource: the target's own cluster, a pool it
   * reads) when qemu-img can open rbd: specs, or Glance's file (chooseFileSource:
   * rawcache.target.file_source_dirs). Else through Glance's API, downloaded first. `purpose` only
   * shapes the log: a copy logs how its data will be verified (a warning when md5 is all Glance has).
   */
  private async chooseDataSource(image: CachedImage, purpose: 'copy' | 'header'): Promise<InPlaceSource | { kind: 'download'; open: OpenSource }> {
    const { target, config } = this.deps;
    const log = this.deps.logger.child({ image_id: image.id });
    const verification = describeVerification(dataRecordOf(image));
    const fields = { purpose, ...(purpose === 'copy' ? { verified_by: verification } : {}) };
    if (purpose === 'copy' && verification.startsWith('checksum')) {
      log.warn('verifying the image data against its md5 checksum only: Glance recorded no os_hash_value', fields);
    }
    let why: string;
    if (target instanceof RbdRawCopyTarget) {
      const location = rbdLocationOf(image);
      let policy: InPlaceReadPolicy | { unavailable: string };
      if (location === undefined) {
        policy = { unavailable: 'no location to read' };
      } else {
        const fsid = await target.clusterFsid().then(
          (value) => value,
          (error: Error) => ({ unavailable: `the fsid of the target's Ceph cluster is unknown (${error.message})` }),
        );
        policy = typeof fsid === 'string' ? { fsid, pools: config.target.rbd_source_pools ?? [target.pool] } : fsid;
      }
      const choice = chooseSource(location, policy);
      if (choice.from === 'rbd') {
        const { pool, image: name, snap } = choice.location;
        const open: OpenSource = (signal) => rbdExportReader(pool, name, snap, target.user, target.cephConf, signal);
        const convertible = purpose === 'copy' && IN_PLACE_RBD_FORMATS.has(String(image.disk_format)) && (await target.writesThroughQemu());
        log.info('reading the image data from RBD in place', { ...fields, source: `${pool}/${name}@${snap}`, ...(purpose === 'copy' ? { converted_in_place: convertible } : {}) });
        if (!convertible) return { kind: 'download', open };
        return { kind: 'in-place', open, qemuSource: target.qemuSourceSpec(pool, name, snap), headOnly: true };
      }
      why = choice.why;
    } else {
      const urls = [...(image.locations ?? []).map((l) => l.url), image.direct_url].filter((u): u is string => typeof u === 'string');
      const choice = await chooseFileSource(image.id, urls, config.target.file_source_dirs ?? []);
      if (choice.from === 'file') {
        log.info("reading the image data in place from Glance's file store", { ...fields, source: choice.path });
        const open: OpenSource = () => createReadStream(choice.path, { highWaterMark: 1024 * 1024 });
        return purpose === 'copy' ? { kind: 'in-place', open, qemuSource: choice.path, headOnly: false } : { kind: 'download', open };
      }
      why = target.kind === 'file' ? choice.why : 'the raw-copy target is not Ceph RBD';
    }
    log.info("reading the image data through Glance's API", { ...fields, why });
    return { kind: 'download', open: (signal) => this.deps.glance.download(image.id, signal) };
  }

  /**
   * The one place a failed job is settled, whatever step failed: a job this worker no longer owns
   * is left alone; a cancelled one starts over from the top; everything else is retried with the
   * retry policy's backoff until max_attempts, then recorded as Error with what to do about it.
   */
  private async settleFailure(image: CachedImage | undefined, job: ClaimedJob, log: Logger, failure: unknown, started: number): Promise<void> {
    const { glance, config } = this.deps;
    const err = causeOf(failure);
    const seconds = (Date.now() - started) / 1000;
    if (err instanceof OwnershipLostError || job.signal.aborted) {
      // Another worker has (or will have) the job: nothing more is written for it here.
      log.warn('job taken away mid-way; stopped without recording anything', { error: (job.signal.reason as Error | undefined)?.message ?? (err as Error).message });
      this.deps.onConversion?.('cancelled', seconds);
      return job.release().catch(() => undefined);
    }
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
    if (err instanceof GlanceHttpError && err.status === 404 && image !== undefined) {
      log.info('image deleted during conversion');
      return job.complete();
    }
    const message = describeFailure(err);
    const permanent = err instanceof RawCacheError && err.permanent;
    const decision = decideRetry(job.attempts, permanent, retrySettingsOf(config.worker));
    const current = image === undefined ? undefined : ((await glance.getImage(image.id).catch(() => image)) ?? image);
    if (decision.kind === 'give-up') {
      const reason = permanent ? message : `The RAW copy failed ${decision.attemptsMade} times; last error: ${message.replace(RETRY_PROMISE, '')}`;
      log.error('raw cache failed', { error: message, permanent, attempts: decision.attemptsMade });
      this.deps.onConversion?.('error', seconds);
      if (current === undefined || isGone(current)) {
        log.error('the failure cannot be recorded on the image (Glance did not answer); the sweep looks at it again', { error: message });
        return job.complete();
      }
      if (!(await this.stillOwned(job, log))) return;
      await glance
        .updateProperties(current, { cache_raw_status: 'Error', cache_raw_error: reason, cache_raw_size: '-' }, ['cache_raw_url'])
        .catch((e: Error) => log.error('could not record the error on the image', { error: e.message }));
      return job.complete();
    }
    log.warn(image === undefined ? 'cannot read the image from Glance; will retry' : 'conversion failed; will retry', { error: message, retry_in_s: decision.delayMs / 1000 });
    this.deps.onConversion?.('retry', seconds);
    if (current !== undefined && !isGone(current) && wantsRawCopy(current) && current.cache_raw_status !== undefined && current.cache_raw_status !== 'Queued') {
      if (!(await this.stillOwned(job, log))) return;
      await glance.updateProperties(current, { cache_raw_status: 'Queued', cache_raw_size: '-' }, ['cache_raw_url']).catch(() => undefined);
    }
    return job.retry(decision.delayMs);
  }

  private async stillOwned(job: ClaimedJob, log: Logger): Promise<boolean> {
    try {
      await job.confirmOwnership();
      return true;
    } catch (err) {
      log.warn('job taken away mid-way; stopped without recording anything', { error: (err as Error).message });
      await job.release().catch(() => undefined);
      return false;
    }
  }
}

/** A failure as the image's owner reads it in cache_raw_error. */
function describeFailure(err: unknown): string {
  if (err instanceof DeadlineError) {
    const limit = err.kind === 'stall' ? 'rawcache.worker.stall_timeout_seconds' : 'rawcache.worker.step_timeout_seconds';
    return `${err.message}: stopped (limit ${limit}). If it keeps happening, check the links to Glance and Ceph and the target's speed, or raise the limit; will retry`;
  }
  if (err instanceof GlanceHttpError) return `Glance answered ${err.status} to the worker: ${err.message}; will retry`;
  return (err as Error)?.message ?? String(err);
}
