import http from 'node:http';
import type { ProxyConfig } from '../config/load';
import type { Logger } from '../ops/log';
import { createImageApi } from './image-api';
import { REQUEST_ID_HEADER, adoptClientRequestId, logRequestId, recordUpstreamRequestId } from './request-id';
import { classifyRoute } from './routes';
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

export function createProxy(config: ProxyConfig, logger: Logger): ProxyServer {
  if (!config.upstream) throw new Error('no upstream Glance configured');
  const upstream = createUpstream({
    target: config.upstream,
    publicUrl: config.public_url,
    maxSockets: config.upstream_pool.max_sockets,
    maxFreeSockets: config.upstream_pool.max_free_sockets,
    idleTimeoutMs: config.timeouts.upstream_idle * 1000,
    maxJsonResponse: config.limits.max_json_response,
    logger,
  });
  const imageApi = createImageApi({ upstream, config, logger });
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
        logger.info('request', {
          request_id: logRequestId(req),
          method,
          path: url,
          route: route.routeClass,
          status: res.statusCode,
          completed: res.writableFinished,
          bytes_in: socket.bytesRead - readBefore,
          bytes_out: socket.bytesWritten - writtenBefore,
          duration_ms: Number(process.hrtime.bigint() - started) / 1e6,
        });
      });
      if (route.intercepted) imageApi(req, res);
      else upstream.pass(req, res);
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
