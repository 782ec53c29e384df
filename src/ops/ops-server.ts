import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { ProxyConfig } from '../config/load';
import type { JobQueue } from '../rawcache/types';
import { createHealth, glanceCheck, queueCheck } from './health';
import type { Metrics } from './metrics';

export interface OpsServer {
  /** host:port it listens on. */
  address: string;
  close(): Promise<void>;
}

/**
 * The listener for Prometheus and operators, apart from the API: /metrics (when metrics are on),
 * the detailed /healthcheck and, on a worker, /progress (its conversions in flight, as JSON, which
 * `cache list|show` read). The worker has no API port, and the proxy's API port is public: check
 * names, the upstream URL, queue depth and process metrics are for the operator only. Loopback by
 * default.
 */
export async function startOpsServer(
  listen: string,
  metrics: Metrics | undefined,
  health: (req: http.IncomingMessage, res: http.ServerResponse) => Promise<void>,
  refresh?: () => Promise<void>,
  progress?: () => unknown,
): Promise<OpsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '').split('?', 1)[0];
    if (path === '/healthcheck') return void health(req, res);
    if (path === '/progress' && req.method === 'GET' && progress) {
      const body = JSON.stringify(progress());
      res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': String(Buffer.byteLength(body)) });
      res.end(body);
      return;
    }
    if (path === '/metrics' && req.method === 'GET' && metrics) {
      void metrics.render(refresh).then(({ contentType, body }) => {
        res.writeHead(200, { 'Content-Type': contentType, 'Content-Length': String(Buffer.byteLength(body)) });
        res.end(body);
      });
      return;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain; charset=UTF-8' });
    res.end('Not Found');
  });
  const at = listen.lastIndexOf(':');
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(Number(listen.slice(at + 1)), listen.slice(0, at).replace(/^\[|\]$/g, ''), () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  return {
    address: `${address.family === 'IPv6' ? `[${address.address}]` : address.address}:${address.port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/**
 * The proxy's ops listener at `metrics.listen`: its metrics, and a health check that looks at
 * Glance and, with the raw cache on, at the queue (not critical: triggers are best effort and the
 * sweep repairs what an outage missed). Undefined when `metrics.listen` is null.
 */
export async function startProxyOpsServer(config: ProxyConfig, metrics: Metrics | undefined, queue: JobQueue | undefined): Promise<OpsServer | undefined> {
  if (config.metrics.listen === null) return undefined;
  if (!config.upstream) throw new Error('no upstream Glance configured');
  const health = createHealth({
    disableByFile: config.health.disable_by_file,
    checks: [glanceCheck(config.upstream), ...(queue ? [queueCheck(() => queue.health(), false)] : [])],
  });
  const refreshQueueDepth = async () => {
    const h = await queue?.health().catch(() => undefined);
    if (h?.depth !== undefined) metrics?.queueDepth.set(h.depth);
  };
  return startOpsServer(config.metrics.listen, metrics, health, refreshQueueDepth);
}
