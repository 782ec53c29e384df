/**
 * What an image's raw-cache fields say, and whether an image needs the worker's attention. The
 * proxy's trigger, the worker and the reconciler all decide with these few pure functions.
 */

export type RawCacheStatus = 'Queued' | 'Caching' | 'Cached' | 'Error';

/** The image fields the raw cache reads or writes, as Glance returns them (extra properties are strings). */
export interface CachedImage {
  id: string;
  name?: string | null;
  status: string;
  disk_format?: string | null;
  size?: number | null;
  checksum?: string | null;
  os_hash_algo?: string | null;
  os_hash_value?: string | null;
  direct_url?: string;
  locations?: Array<{ url: string; metadata?: Record<string, unknown> }>;
  updated_at?: string;
  cache_raw?: string;
  cache_raw_status?: string;
  cache_raw_url?: string;
  cache_raw_size?: string;
  cache_raw_error?: string;
}

/** The fields the worker owns; a user can never write them through the proxy. */
export const RAW_CACHE_FIELDS = ['cache_raw_status', 'cache_raw_url', 'cache_raw_size', 'cache_raw_error'] as const;

/** Glance statuses in which the image's data may still arrive (upload or import in progress). */
const DATA_PENDING = new Set(['saving', 'uploading', 'importing']);
const GONE = new Set(['deleted', 'pending_delete', 'killed']);

export function wantsRawCopy(image: CachedImage): boolean {
  return image.cache_raw === 'True';
}

export function isGone(image: CachedImage | undefined): boolean {
  return image === undefined || GONE.has(image.status);
}

export function isDataPending(image: CachedImage): boolean {
  return DATA_PENDING.has(image.status);
}

/** An image already in RAW needs no copy: its own data is what a raw cache would hold. */
export function isAlreadyRaw(image: CachedImage): boolean {
  return image.disk_format === 'raw';
}

/**
 * What an image already in RAW records: `Cached` with the image's size, and no cache_raw_url.
 * The URL would have to name where the image's own data lives, and a property is shown to every
 * reader of the image, whatever Glance's show_image_direct_url, show_multiple_locations and
 * location policy hide from them; once written it would also outlive a change of those settings
 * or of the image's locations. Consumers that may see the location read it from Glance
 * (direct_url, locations), as Cinder does for any RAW image.
 */
export function ownDataFields(image: CachedImage): Record<string, string> {
  return { cache_raw_status: 'Cached', cache_raw_size: String(image.size ?? '-') };
}

export function hasRawCacheFields(image: CachedImage): boolean {
  return RAW_CACHE_FIELDS.some((f) => image[f] !== undefined);
}

/**
 * True when the worker has something to do for this image now or soon: a copy to make, a
 * conversion to resume, or fields (and a copy) to remove because cache_raw was turned off.
 * An image in Error stays there until an operator retries it or cache_raw is toggled.
 */
export function needsRawCacheWork(image: CachedImage): boolean {
  if (isGone(image)) return false;
  if (!wantsRawCopy(image)) return hasRawCacheFields(image);
  if (isDataPending(image)) return true;
  // A location recorded as the cache_raw_url of a RAW image (by earlier versions) is taken back.
  if (isAlreadyRaw(image) && image.cache_raw_url !== undefined) return image.status === 'active';
  if (image.status !== 'active') return false;
  // Queued, Caching: a job holds the image (a retry waits out its backoff); the sweep looks after
  // the ones that stay so too long.
  return image.cache_raw_status === undefined;
}

/** What clients see while the durable job waits for a worker: Queued with size "-". */
export function pendingView(image: CachedImage): Partial<CachedImage> | undefined {
  if (!wantsRawCopy(image) || image.status !== 'active' || image.cache_raw_status !== undefined) return undefined;
  if (isAlreadyRaw(image)) return undefined;
  return { cache_raw_status: 'Queued', cache_raw_size: '-' };
}
