import { createReadStream, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HttpClient } from './http';

/** What raw-cache tests share: a configuration file for proxy and workers, and image steps. */

export interface RawCacheSettings {
  upstream: string;
  queue?: Record<string, unknown>;
  target?: Record<string, unknown>;
  worker?: Record<string, unknown>;
  /** Other rawcache keys (glance_url, for a worker that must reach Glance some other way). */
  rawcache?: Record<string, unknown>;
  /** Other top-level keys (metrics, service_auth...). */
  extra?: Record<string, unknown>;
}

/**
 * Writes `<dir>/config.json` for a proxy and its workers: raw cache on, SQLite queue, trigger
 * spool and file copies under `dir` unless told otherwise, fast retries, no periodic sweep (tests sweep on purpose).
 */
export function writeRawCacheConfig(dir: string, settings: RawCacheSettings): string {
  const file = join(dir, 'config.json');
  writeFileSync(
    file,
    JSON.stringify({
      upstream: settings.upstream,
      rawcache: {
        enabled: true,
        queue: { backend: 'sqlite', sqlite_path: join(dir, 'queue.sqlite'), lease_seconds: 3, ...settings.queue },
        target: { kind: 'file', file_dir: join(dir, 'raw'), ...settings.target },
        worker: { concurrency: 2, work_dir: join(dir, 'work'), max_attempts: 2, retry_base_seconds: 0.5, retry_max_seconds: 2, reconcile_interval_seconds: 0, ...settings.worker },
        trigger: { spool_dir: join(dir, 'spool') },
        ...settings.rawcache,
      },
      ...settings.extra,
    }),
  );
  return file;
}

export type Image = Record<string, any>;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Create, upload, show and wait for images through one client (the proxy, or Glance directly). */
export function imageSteps(client: HttpClient, context: () => string = () => '') {
  const show = async (id: string): Promise<Image> => (await client.get(`/v2/images/${id}`)).json();
  return {
    /** Creates an image (qcow2, bare unless `body` says otherwise) and returns Glance's answer. */
    async create(body: Record<string, unknown>): Promise<Image> {
      const res = await client.sendJson('POST', '/v2/images', { container_format: 'bare', disk_format: 'qcow2', ...body });
      if (res.status !== 201) throw new Error(`create answered ${res.status}: ${res.text()}`);
      return res.json();
    },
    async upload(id: string, file: string): Promise<void> {
      const res = await client.request({ method: 'PUT', path: `/v2/images/${id}/file`, headers: { 'Content-Type': 'application/octet-stream' }, body: createReadStream(file) });
      if (res.status !== 204) throw new Error(`upload answered ${res.status}: ${res.text()}`);
    },
    show,
    /**
     * Polls until `done`; an image that ends in Error instead fails at once, with `context()` (worker
     * logs), unless `failOnError` is false (waiting for an image in Error to change).
     */
    async waitForImage(id: string, done: (image: Image) => boolean, timeoutMs = 60_000, failOnError = true): Promise<Image> {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const image = await show(id);
        if (done(image)) return image;
        if ((failOnError && image.cache_raw_status === 'Error') || Date.now() > deadline) {
          throw new Error(`image ${id} did not reach the expected state: ${JSON.stringify(image)}\n${context()}`);
        }
        await sleep(200);
      }
    },
  };
}
