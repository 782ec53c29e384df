import { mkdir } from 'node:fs/promises';
import type { ProxyConfig } from '../config/load';
import { ConfigError } from '../config/load';
import { createServiceAuth } from '../auth/keystone';
import type { Logger } from '../ops/log';
import { GlanceClient } from './glance-client';
import { leftoverPlaces, removeLeftovers, type LeftoverResult } from './leftovers';
import { createJobQueue } from './queue';
import { backoffMs, retrySettingsOf } from './retry';
import { RbdRawCopyTarget, createRawCopyTarget } from './targets';
import type { JobQueue, RawCopyTarget } from './types';
import { setStaleAge } from './writer';

/** The pieces a worker, a sweep or an operator command needs, built from the configuration. */
export interface RawCacheRuntime {
  glance: GlanceClient;
  queue: JobQueue;
  target: RawCopyTarget;
  /** Removes what killed or failed conversions left (a worker does it once as it starts). */
  removeLeftovers(): Promise<LeftoverResult>;
  close(): Promise<void>;
}

export function glanceUrlFor(config: ProxyConfig): string {
  const url = config.rawcache.glance_url ?? config.upstream;
  if (!url) throw new ConfigError('config: the raw cache needs rawcache.glance_url or upstream');
  return url.replace(/\/$/, '');
}

export async function openQueue(config: ProxyConfig, logger: Logger): Promise<JobQueue> {
  const retry = retrySettingsOf(config.rawcache.worker);
  return createJobQueue(config.rawcache.queue, logger, { retryDelayMs: (attempts) => backoffMs(attempts, retry) });
}

/**
 * The worker's Glance client: with `service_auth`, a Keystone service identity (and, if asked,
 * Glance's URL from the catalog); without it, a Glance that needs no token.
 */
export async function serviceGlanceClient(config: ProxyConfig, logger: Logger): Promise<GlanceClient> {
  if (!config.service_auth) return new GlanceClient({ baseUrl: glanceUrlFor(config) });
  let auth: ReturnType<typeof createServiceAuth>;
  try {
    auth = createServiceAuth(config.service_auth, logger);
  } catch (err) {
    throw new ConfigError(`config: ${(err as Error).message}`);
  }
  let baseUrl = config.service_auth.glance_from_catalog ? await auth.imageEndpoint() : undefined;
  if (config.service_auth.glance_from_catalog && !baseUrl) throw new ConfigError("config: service_auth.glance_from_catalog is set but the catalog has no 'image' endpoint for that interface and region");
  baseUrl ??= glanceUrlFor(config);
  return new GlanceClient({ baseUrl, authHeaders: () => auth.authHeaders(), onUnauthorized: () => auth.invalidate() });
}

export async function openRawCacheRuntime(config: ProxyConfig, logger: Logger): Promise<RawCacheRuntime> {
  await mkdir(config.rawcache.worker.work_dir, { recursive: true });
  setStaleAge(config.rawcache.worker.leftover_stale_seconds);
  const glance = await serviceGlanceClient(config, logger);
  const queue = await openQueue(config, logger);
  const target = createRawCopyTarget(config.rawcache.target, logger);
  // An rbd copy's URL names the cluster: learn its fsid once, before the first urlFor().
  if (target instanceof RbdRawCopyTarget) await target.clusterFsid();
  return {
    glance,
    queue,
    target,
    removeLeftovers: () => removeLeftovers(leftoverPlaces(target, config.rawcache.worker.work_dir), logger),
    close: async () => {
      await queue.close();
      glance.close();
    },
  };
}
