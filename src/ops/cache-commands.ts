import type { RawCacheRuntime } from '../rawcache/runtime';
import { dataRecordOf, describeVerification } from '../rawcache/source';
import { RAW_CACHE_FIELDS, isAlreadyRaw, type CachedImage } from '../rawcache/state';

/**
 * `stx-glance-proxy cache list|show|retry`: what an operator needs to see and nudge the raw cache,
 * reading Glance with the worker's service identity. Each returns data; the CLI prints it as a
 * table or, with --json, as JSON for scripts.
 */

export interface CacheEntry {
  id: string;
  name: string | null;
  status: string;
  disk_format: string | null;
  cache_raw: string | null;
  cache_raw_status: string | null;
  cache_raw_size: string | null;
  cache_raw_url: string | null;
  cache_raw_error: string | null;
}

function entryOf(image: CachedImage & { name?: string | null }): CacheEntry {
  return {
    id: image.id,
    name: image.name ?? null,
    status: image.status,
    disk_format: image.disk_format ?? null,
    cache_raw: image.cache_raw ?? null,
    cache_raw_status: image.cache_raw_status ?? null,
    cache_raw_size: image.cache_raw_size ?? null,
    cache_raw_url: image.cache_raw_url ?? null,
    cache_raw_error: image.cache_raw_error ?? null,
  };
}

/** Every image that asks for a raw copy or still carries raw-cache fields, optionally by state. */
export async function listCache(runtime: RawCacheRuntime, status: string | undefined, progress?: (count: number) => void): Promise<CacheEntry[]> {
  const seen = new Map<string, CacheEntry>();
  const filters = status ? [{ cache_raw_status: status }] : [{ cache_raw: 'True' }, ...['Queued', 'Caching', 'Cached', 'Error'].map((s) => ({ cache_raw_status: s }))];
  for (const filter of filters) {
    for await (const image of runtime.glance.listImages(filter)) {
      if (seen.has(image.id)) continue;
      seen.set(image.id, entryOf(image));
      progress?.(seen.size);
    }
  }
  return [...seen.values()].sort((a, b) => (a.name ?? '').localeCompare(b.name ?? '') || a.id.localeCompare(b.id));
}

export interface CacheDetail extends CacheEntry {
  /** Whether the copy the target would hold for this image is there and complete. */
  copy_present: boolean;
  /** Where the copy of this image lives (or would live) on the configured target. */
  copy_url: string;
  /** What the worker proves this image's data against (os_hash_value; md5 only when Glance has nothing else). */
  verification: string;
}

export async function showCache(runtime: RawCacheRuntime, imageId: string): Promise<CacheDetail | undefined> {
  const image = await runtime.glance.getImage(imageId);
  if (!image) return undefined;
  const verification = isAlreadyRaw(image) ? 'none needed: no copy is made of an image already in RAW' : describeVerification(dataRecordOf(image));
  return { ...entryOf(image), copy_present: await runtime.target.exists(imageId), copy_url: runtime.target.urlFor(imageId), verification };
}

/** Queues the image for the worker as an operator's retry: an image in Error is converted again. */
export async function retryCache(runtime: RawCacheRuntime, imageId: string): Promise<'queued' | 'not-found'> {
  const image = await runtime.glance.getImage(imageId);
  if (!image) return 'not-found';
  await runtime.queue.enqueue(imageId, 'operator');
  return 'queued';
}

/** A plain table, columns as wide as their widest cell. */
export function formatTable(entries: CacheEntry[]): string {
  const columns: Array<[string, (e: CacheEntry) => string]> = [
    ['ID', (e) => e.id],
    ['Name', (e) => e.name ?? ''],
    ['Status', (e) => e.status],
    ['cache_raw', (e) => e.cache_raw ?? ''],
    ['Raw cache', (e) => e.cache_raw_status ?? ''],
    ['Size', (e) => e.cache_raw_size ?? ''],
    ['URL or error', (e) => e.cache_raw_error ?? e.cache_raw_url ?? ''],
  ];
  const rows = [columns.map(([title]) => title), ...entries.map((e) => columns.map(([, cell]) => cell(e)))];
  const widths = columns.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]))).join('  ')).join('\n');
}

export function formatDetail(detail: CacheDetail): string {
  const keys: Array<keyof CacheDetail> = ['id', 'name', 'status', 'disk_format', 'cache_raw', ...RAW_CACHE_FIELDS, 'copy_url', 'copy_present', 'verification'];
  const width = Math.max(...keys.map((k) => k.length));
  return keys.map((k) => `${k.padEnd(width)}  ${detail[k] === null ? '' : String(detail[k])}`).join('\n');
}
