import http from 'node:http';
import type { RawCacheRuntime } from '../rawcache/runtime';
import { describeProgress, renderProgressBar, type ConversionProgress } from '../rawcache/progress';
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
  /** Percent done and ETA of a conversion in flight, from the worker running it; null otherwise. */
  progress: { percent: number; eta_seconds: number | null } | null;
}

/** Conversions in flight by image id, as the workers' /progress tell. */
export type ProgressByImage = ReadonlyMap<string, ConversionProgress>;

/** How long one worker's /progress may take; a worker that does not answer shows no progress. */
const PROGRESS_TIMEOUT_MS = 2_000;

/**
 * Asks each worker's ops listener (metrics.worker_listen, and metrics.worker_progress_from for
 * workers on other hosts) for its conversions in flight. Progress lives in the workers, not in
 * Glance (a property write per percent would be a Glance write per step, and the spec's fields
 * keep their meaning) nor in the queue (RabbitMQ has no place for it). A worker that does not
 * answer is skipped: progress is a view, never a reason for the command to fail.
 */
export async function fetchProgress(addresses: readonly string[]): Promise<ProgressByImage> {
  const answers = await Promise.all([...new Set(addresses)].map((address) => getProgress(address).catch(() => [])));
  const byImage = new Map<string, ConversionProgress>();
  for (const conversion of answers.flat()) byImage.set(conversion.image_id, conversion);
  return byImage;
}

function getProgress(address: string): Promise<ConversionProgress[]> {
  const at = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = http.get(
      { host: address.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(address.slice(at + 1)), path: '/progress', timeout: PROGRESS_TIMEOUT_MS },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          try {
            if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
            const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as { conversions?: unknown };
            resolve(Array.isArray(body.conversions) ? body.conversions.filter(isConversionProgress) : []);
          } catch (error) {
            reject(error as Error);
          }
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error('no answer in time')));
    req.on('error', reject);
  });
}

function isConversionProgress(value: unknown): value is ConversionProgress {
  const v = value as ConversionProgress;
  return typeof v?.image_id === 'string' && typeof v.percent === 'number' && (v.eta_seconds === null || typeof v.eta_seconds === 'number');
}

/** The progress shown for an entry: only while Glance still says Caching (a stale answer shows none). */
function progressOf(entry: Omit<CacheEntry, 'progress'>, progress: ProgressByImage): CacheEntry['progress'] {
  const p = progress.get(entry.id);
  return p && entry.cache_raw_status === 'Caching' ? { percent: p.percent, eta_seconds: p.eta_seconds } : null;
}

function entryOf(image: CachedImage & { name?: string | null }): Omit<CacheEntry, 'progress'> {
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
export async function listCache(
  runtime: RawCacheRuntime,
  status: string | undefined,
  progress?: (count: number) => void,
  inFlight: ProgressByImage = new Map(),
): Promise<CacheEntry[]> {
  const seen = new Map<string, CacheEntry>();
  const filters = status ? [{ cache_raw_status: status }] : [{ cache_raw: 'True' }, ...['Queued', 'Caching', 'Cached', 'Error'].map((s) => ({ cache_raw_status: s }))];
  for (const filter of filters) {
    for await (const image of runtime.glance.listImages(filter)) {
      if (seen.has(image.id)) continue;
      const entry = entryOf(image);
      seen.set(image.id, { ...entry, progress: progressOf(entry, inFlight) });
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

export async function showCache(runtime: RawCacheRuntime, imageId: string, inFlight: ProgressByImage = new Map()): Promise<CacheDetail | undefined> {
  const image = await runtime.glance.getImage(imageId);
  if (!image) return undefined;
  const verification = isAlreadyRaw(image) ? 'none needed: no copy is made of an image already in RAW' : describeVerification(dataRecordOf(image));
  const entry = entryOf(image);
  return { ...entry, progress: progressOf(entry, inFlight), copy_present: await runtime.target.exists(imageId), copy_url: runtime.target.urlFor(imageId), verification };
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
    ['Progress', (e) => (e.progress ? describeProgress(e.progress) : '')],
    ['URL or error', (e) => e.cache_raw_error ?? e.cache_raw_url ?? ''],
  ];
  const rows = [columns.map(([title]) => title), ...entries.map((e) => columns.map(([, cell]) => cell(e)))];
  const widths = columns.map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]))).join('  ')).join('\n');
}

export function formatDetail(detail: CacheDetail): string {
  const keys: Array<keyof CacheDetail> = ['id', 'name', 'status', 'disk_format', 'cache_raw', ...RAW_CACHE_FIELDS, 'progress', 'copy_url', 'copy_present', 'verification'];
  const width = Math.max(...keys.map((k) => k.length));
  const text = (k: keyof CacheDetail): string => {
    if (k === 'progress') return detail.progress ? describeProgress(detail.progress) : '';
    return detail[k] === null ? '' : String(detail[k]);
  };
  return keys.map((k) => `${k.padEnd(width)}  ${text(k)}`).join('\n');
}

/** Where `cache show --watch` writes: a terminal gets a redrawn bar, anything else plain lines. */
export interface WatchOutput {
  isTTY?: boolean;
  write(text: string): unknown;
}

/** Percent steps at which plain output prints a new line. */
const WATCH_LINE_STEP = 5;

/**
 * What `cache show --watch` prints for each look at the image, from the previous look: pure, so
 * the TTY bar and the plain lines are tested without a terminal. `last` is what the previous call
 * returned as its state.
 */
export function watchFrame(
  detail: Pick<CacheEntry, 'cache_raw_status' | 'cache_raw_error' | 'cache_raw_size' | 'progress'>,
  tty: boolean,
  last: { line?: string; step?: number } = {},
): { text: string; state: { line?: string; step?: number } } {
  const status = detail.cache_raw_status ?? 'none';
  if (status === 'Cached' || status === 'Error') {
    const line = status === 'Cached' ? `Cached (${detail.cache_raw_size ?? '?'} bytes)` : `Error: ${detail.cache_raw_error ?? ''}`;
    return { text: `${tty && last.line !== undefined ? '\r\x1b[K' : ''}${line}\n`, state: { line } };
  }
  if (tty) {
    const line = detail.progress ? `${status} ${renderProgressBar(detail.progress)}` : status;
    return { text: line === last.line ? '' : `\r\x1b[K${line}`, state: { line } };
  }
  const step = detail.progress ? Math.floor(detail.progress.percent / WATCH_LINE_STEP) : undefined;
  const line = detail.progress ? `${status} ${describeProgress(detail.progress)}` : status;
  const changed = last.line === undefined || status !== last.line.split(' ', 1)[0] || step !== last.step;
  return { text: changed ? `${line}\n` : '', state: changed ? { line, step } : last };
}

/**
 * `cache show IMAGE --watch`: looks at the image (Glance, then the workers' /progress) every
 * `intervalMs` until it is Cached (resolves 0) or in Error (resolves 1); an image that is gone or
 * asks for no raw copy resolves 1 at once. Ctrl-C ends it like any command.
 */
export async function watchCache(runtime: RawCacheRuntime, imageId: string, addresses: readonly string[], out: WatchOutput, intervalMs = 1000): Promise<number> {
  const tty = out.isTTY === true;
  let state: { line?: string; step?: number } = {};
  for (;;) {
    const detail = await showCache(runtime, imageId, await fetchProgress(addresses));
    if (!detail) {
      out.write(`${tty && state.line !== undefined ? '\n' : ''}image ${imageId} is gone\n`);
      return 1;
    }
    if (detail.cache_raw_status === null && detail.cache_raw !== 'True') {
      out.write(`${tty && state.line !== undefined ? '\n' : ''}image ${imageId} asks for no raw copy (cache_raw is not True)\n`);
      return 1;
    }
    const frame = watchFrame(detail, tty, state);
    out.write(frame.text);
    state = frame.state;
    if (detail.cache_raw_status === 'Cached') return 0;
    if (detail.cache_raw_status === 'Error') return 1;
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}
