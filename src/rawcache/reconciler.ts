import type { RawCacheConfig } from '../config/load';
import type { Logger } from '../ops/log';
import type { GlanceClient } from './glance-client';
import { leftoverPlaces, removeLeftovers } from './leftovers';
import { isAlreadyRaw, isGone, needsRawCacheWork, wantsRawCopy, type CachedImage, type RawCacheStatus } from './state';
import type { JobQueue, RawCopyTarget } from './types';

export interface SweepDeps {
  glance: GlanceClient;
  queue: JobQueue;
  target: RawCopyTarget;
  config: RawCacheConfig;
  logger: Logger;
  /** Called for each image looked at, for a progress display. */
  onImage?: (image: { id: string }, requeued: boolean) => void;
}

export interface SweepResult {
  /** Images with cache_raw or raw-cache fields looked at. */
  examined: number;
  /** Images that needed a copy, had a stuck or lost one, or fields to clear. */
  requeued: string[];
  /** Copies on the target whose image is gone or no longer wants one. */
  orphans: string[];
  /** Partial copies and work-dir files whose writer is gone, removed (where each was). */
  leftovers: string[];
}

const STATUSES: RawCacheStatus[] = ['Queued', 'Caching', 'Cached', 'Error'];

/**
 * Repairs what a crash or a lost trigger left: finds images that need a raw copy and have no job
 * (uploaded around the proxy, or the proxy died before recording the trigger), conversions stuck in
 * Caching, Cached images whose copy is missing, fields left after cache_raw was turned off, and
 * copies whose image is gone. It only enqueues jobs (the worker does the work, one image at a time),
 * and removes the leftovers of conversions whose writer is gone (./leftovers.ts).
 */
export async function sweep(deps: SweepDeps): Promise<SweepResult> {
  const { glance, queue, target, config, logger } = deps;
  const result: SweepResult = { examined: 0, requeued: [], orphans: [], leftovers: [] };
  result.leftovers = (await removeLeftovers(leftoverPlaces(target, config.worker.work_dir), logger)).removed;
  const seen = new Set<string>();
  const requeue = async (image: CachedImage, why: string) => {
    if (result.requeued.includes(image.id)) return;
    await queue.enqueue(image.id, 'reconcile');
    result.requeued.push(image.id);
    logger.info('sweep requeued an image', { image_id: image.id, why });
  };

  const look = async (image: CachedImage) => {
    if (seen.has(image.id)) return;
    seen.add(image.id);
    result.examined += 1;
    const before = result.requeued.length;
    const why = await reasonToRequeue(image, target, config);
    if (why) await requeue(image, why);
    deps.onImage?.(image, result.requeued.length > before);
  };

  for await (const image of glance.listImages({ cache_raw: 'True' })) await look(image);
  for (const status of STATUSES) {
    for await (const image of glance.listImages({ cache_raw_status: status })) await look(image);
  }
  for (const id of await target.list()) {
    if (seen.has(id)) continue;
    const image = await glance.getImage(id);
    if (isGone(image) || !wantsRawCopy(image!)) {
      await queue.enqueue(id, 'reconcile');
      result.orphans.push(id);
      logger.info('sweep found an orphan raw copy', { image_id: id });
    }
  }
  return result;
}

async function reasonToRequeue(image: CachedImage, target: RawCopyTarget, config: RawCacheConfig): Promise<string | undefined> {
  if (needsRawCacheWork(image)) return wantsRawCopy(image) ? 'needs a raw copy' : 'cache_raw is off but raw-cache fields remain';
  if (!wantsRawCopy(image) || image.status !== 'active') return undefined;
  if (image.cache_raw_status === 'Caching' || image.cache_raw_status === 'Queued') {
    const age = (Date.now() - Date.parse(image.updated_at ?? '')) / 1000;
    if (!(age < config.worker.stuck_after_seconds)) return `${image.cache_raw_status} for ${Math.round(age)} s`;
  }
  if (image.cache_raw_status === 'Cached' && !isAlreadyRaw(image) && !(await target.exists(image.id))) return 'Cached but the copy is missing';
  return undefined;
}
