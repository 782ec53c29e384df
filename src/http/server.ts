import http from 'node:http';
import type { ProxyConfig } from '../config/load';
import type { Logger } from '../ops/log';
import { createImageApi } from './image-api';
import { REQUEST_ID_HEADER, adoptClientRequestId, logRequestId, recordUpstreamRequestId } from './request-id';
import { createHealth, glanceCheck, queueCheck } from '../ops/health';
import type { Metrics } from '../ops/metrics';
import type { RawCacheTrigger } from '../rawcache/trigger';
import type { JobQueue } from '../rawcache/types';
import { classifyRoute, type RouteClass } from './routes';
import { createUpstream, type Upstream } from './upstream';

export interface ProxyServer {
  server: http.Server;
  upstream: Upstream;
  /** Resolves once the proxy listens. */
  listen(): Promise<{ host: string; port: number }>;
  /** Stops accepting, lets requests in flight finish for up to `graceMs`, then cuts the rest. */
  shutdown(graceMs: number): Promise<void>;
}

export function splitHostPort(listen: string): { host: string; port: number } {
  const at = listen.lastIndexOf(':');
  return { host: listen.slice(0, at).replace(/^\[|\]$/g, ''), port: Number(listen.slice(at + 1)) };
}

/** Glance's success answer to each data-changing route, after which the raw cache must look again. */
const RAW_CACHE_EVENTS: Partial<Record<RouteClass, { method: string; status: number; reason: 'upload' | 'import' | 'delete' }>> = {
  'image-data': { method: 'PUT', status: 204, reason: 'upload' },
  'image-import': { method: 'POST', status: 202, reason: 'import' },
  'image-delete': { method: 'DELETE', status: 204, reason: 'delete' },
};

export interface ProxyExtras {
  rawCache?: RawCacheTrigger;
  queue?: JobQueue;
  metrics?: Metrics;
}

const UPSTREAM_FAILURE = { 502: 'bad_gateway', 503: 'unreachable', 504: 'timeout' } as const;

export function createProxy(config: ProxyConfig, logger: Logger, { rawCache, queue, metrics }: ProxyExtras = {}): ProxyServer {
  if (!config.upstream) throw new Error('no upstream Glance configured');
  const upstream = createUpstream({
    target: config.upstream,
    publicUrl: config.public_url,
    maxSockets: config.upstream_pool.max_sockets,
    maxFreeSockets: config.upstream_pool.max_free_sockets,
    idleTimeoutMs: config.timeouts.upstream_idle * 1000,
    maxJsonResponse: config.limits.max_json_response,
    logger,
    onFailure: (status) => metrics?.upstreamErrors.inc({ kind: UPSTREAM_FAILURE[status] }),
  });
  const health = createHealth({
    disableByFile: config.health.disable_by_file,
    checks: [glanceCheck(config.upstream), ...(queue ? [queueCheck(() => queue.health(), false)] : [])],
  });
  const refreshGauges = async () => {
    const h = await queue?.health().catch(() => undefined);
    if (h?.depth !== undefined) metrics?.queueDepth.set(h.depth);
  };
  /** The proxy's own endpoints; everything else belongs to Glance. */
  const ownEndpoint = (req: http.IncomingMessage, res: http.ServerResponse): boolean => {
    const path = (req.url ?? '').split('?', 1)[0];
    if (path === '/healthcheck' && (req.method === 'GET' || req.method === 'HEAD')) {
      void health(req, res);
      return true;
    }
    if (path === '/metrics' && req.method === 'GET' && metrics) {
      void metrics.render(refreshGauges).then(({ contentType, body }) => {
        res.writeHead(200, { 'Content-Type': contentType, 'Content-Length': String(Buffer.byteLength(body)) });
        res.end(body);
      });
      return true;
    }
    return false;
  };
  const imageApi = createImageApi({ upstream, config, logger, rawCache });
  const rewriteVersions = Boolean(config.public_url);

  const server = http.createServer(
    {
      // Node's default 300 s limit on a whole request would cut multi-GB uploads; silence is
      // bounded by the socket idle timeout below instead.
      requestTimeout: 0,
      headersTimeout: config.timeouts.request_headers * 1000,
      keepAliveTimeout: config.timeouts.keep_alive * 1000,
    },
    (req, res) => {
      const started = process.hrtime.bigint();
      const socket = req.socket;
      const readBefore = socket.bytesRead;
      const writtenBefore = socket.bytesWritten;
      adoptClientRequestId(req);
      const route = classifyRoute(req.method, req.url, rewriteVersions);
      const { method, url } = req;
      res.once('close', () => {
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        const bytesIn = socket.bytesRead - readBefore;
        const bytesOut = socket.bytesWritten - writtenBefore;
        if (metrics) {
          metrics.requests.inc({ route: route.routeClass, method: method ?? '', status: String(res.statusCode) });
          metrics.requestDuration.observe({ route: route.routeClass }, seconds);
          metrics.bytes.inc({ direction: 'in', route: route.routeClass }, bytesIn);
          metrics.bytes.inc({ direction: 'out', route: route.routeClass }, bytesOut);
        }
        logger.info('request', {
          request_id: logRequestId(req),
          method,
          path: url,
          route: route.routeClass,
          status: res.statusCode,
          completed: res.writableFinished,
          bytes_in: bytesIn,
          bytes_out: bytesOut,
          duration_ms: seconds * 1000,
        });
      });
      if (ownEndpoint(req, res)) return;
      const event = rawCache && route.imageId ? RAW_CACHE_EVENTS[route.routeClass] : undefined;
      if (route.intercepted) imageApi(req, res);
      else if (event && event.method === req.method) {
        const imageId = route.imageId!;
        // The request body still streams; only the answer waits until the job is durable.
        upstream.rewrite(req, res, {
          before: (proxyRes) => (proxyRes.statusCode === event.status ? rawCache!.afterImageChange(imageId, event.reason, logRequestId(req)) : Promise.resolve()),
        });
      } else upstream.pass(req, res);
    },
  );
  server.timeout = config.timeouts.client_idle * 1000;
  // A client that has sent its whole request and waits for Glance is not idle: how long Glance may
  // take is bounded by upstream_idle. Any other silent socket is closed, as Node would by default.
  const requestOnSocket = new WeakMap<import('node:net').Socket, http.IncomingMessage>();
  server.on('request', (req: http.IncomingMessage, res: http.ServerResponse) => {
    requestOnSocket.set(req.socket, req);
    res.once('close', () => requestOnSocket.delete(req.socket));
  });
  server.on('timeout', (socket: import('node:net').Socket) => {
    const req = requestOnSocket.get(socket);
    if (req?.complete) return;
    socket.destroy();
  });

  upstream.onResponse((req, proxyRes) => {
    const id = proxyRes.headers[REQUEST_ID_HEADER];
    if (typeof id === 'string') recordUpstreamRequestId(req, id);
  });

  return {
    server,
    upstream,
    listen: () =>
      new Promise((resolve, reject) => {
        const { host, port } = splitHostPort(config.listen);
        server.once('error', reject);
        server.listen(port, host, () => {
          server.off('error', reject);
          const address = server.address() as import('node:net').AddressInfo;
          resolve({ host: address.address, port: address.port });
        });
      }),
    shutdown: (graceMs) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          upstream.close();
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}
