import type { Logger } from '../ops/log';
import { needsRawCacheWork, type CachedImage } from './state';
import type { JobQueue, TriggerReason } from './types';
import { withDeadline } from './deadline';

/**
 * The proxy's side of the raw cache: after Glance has done something that may change what an
 * image's raw copy should be, record a job durably before the client hears the answer.
 */
export interface RawCacheTrigger {
  /** Upload finished (204), import accepted (202) or image deleted (204). */
  afterImageChange(imageId: string, reason: Extract<TriggerReason, 'upload' | 'import' | 'delete'>, requestId: string): Promise<void>;
  /** An update answered with the image as it is now: a job only when the raw cache must follow. */
  afterImageUpdate(image: unknown, requestId: string): Promise<void>;
}

/**
 * How long a client's answer waits for the queue. If the queue does not confirm in time the answer
 * goes out anyway (Glance already did the work) and the reconciler's sweep finds the image later.
 */
const ENQUEUE_WAIT_MS = 10_000;

export function createRawCacheTrigger(queue: JobQueue, logger: Logger): RawCacheTrigger {
  const enqueue = async (imageId: string, reason: TriggerReason, requestId: string) => {
    try {
      await withDeadline(queue.enqueue(imageId, reason), ENQUEUE_WAIT_MS, () => new Error(`the queue did not confirm within ${ENQUEUE_WAIT_MS} ms`));
      logger.debug('raw-cache job recorded', { request_id: requestId, image_id: imageId, reason });
    } catch (err) {
      logger.error('raw-cache trigger not recorded; the reconciler will find the image', {
        request_id: requestId,
        image_id: imageId,
        reason,
        error: (err as Error).message,
      });
    }
  };
  return {
    afterImageChange: (imageId, reason, requestId) => enqueue(imageId, reason, requestId),
    afterImageUpdate: async (image, requestId) => {
      const candidate = image as CachedImage;
      if (typeof candidate?.id === 'string' && needsRawCacheWork(candidate)) await enqueue(candidate.id, 'update', requestId);
    },
  };
}
