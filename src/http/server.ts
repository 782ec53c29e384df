import http from 'node:http';
import type { ProxyConfig } from '../config/load';
import type { Logger } from '../ops/log';
import { createImageApi, type ImageApi } from './image-api';
import { REQUEST_ID_HEADER, adoptClientRequestId, logRequestId, recordUpstreamRequestId } from './request-id';
import { publicHealthcheck } from '../ops/health';
import type { Metrics } from '../ops/metrics';
import type { RawCacheTrigger } from '../rawcache/trigger';
import { classifyRequest, unquoteLatin1, type Classification } from './classify';
import { handleClientErrors } from './client-errors';
import { applyForwardingHeaders, compileTrustedProxies, forwardingHeaders } from './forwarded';
import { sendGlanceError } from './errors';
import { readRequestBody } from './request-body';
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

/** Methods counted under their own name in metrics; any other is OTHER, so clients cannot add labels. */
const METHOD_LABELS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);

interface DispatchDeps {
  imageApi: ImageApi;
  maxFormBody: number;
  trustedProxies: readonly string[];
}

/**
 * Acts on the classification alone: the request is rewritten to the canonical form the proxy judged
 * (method after any override, canonical path, no versioning Accept), then refused, answered with the
 * versions document, or sent to its route's handler.
 */
async function handleClassified(req: http.IncomingMessage, res: http.ServerResponse, first: Classification, deps: DispatchDeps): Promise<void> {
  let classification = first;
  let body: Buffer | undefined;
  if (classification.kind === 'needs-form-body') {
    const read = await readRequestBody(req, deps.maxFormBody);
    if (!read.ok) {
      if ('refusal' in read) sendGlanceError(req, res, read.refusal.status, read.refusal.message, { headers: read.refusal.headers });
      return;
    }
    body = read.body;
    classification = classifyRequest({ method: req.method ?? 'POST', url: req.url ?? '/', headers: req.headers }, body);
  }
  if (classification.kind === 'refused') {
    req.resume();
    const { status, message, headers } = classification.refusal;
    sendGlanceError(req, res, status, message, { headers });
    return;
  }
  if (classification.kind === 'needs-form-body') throw new Error('form body classified without its body');
  req.method = classification.method;
  req.url = classification.forwardUrl;
  if (classification.dropAccept) delete req.headers.accept;
  applyForwardingHeaders(req.headers, forwardingHeaders(req, deps.trustedProxies));
  // eventlet gives `X_Foo` and `X-Foo` one WSGI name, so a header spelled with underscores could stand
  // in for one the proxy or Glance's middleware reads under its dashed name; none is forwarded.
  for (const name of Object.keys(req.headers)) {
    if (name.includes('_')) delete req.headers[name];
  }
  if (classification.kind === 'versions') deps.imageApi.versions(req, res, body);
  else await deps.imageApi.route(req, res, classification, body);
}

export interface ProxyExtras {
  rawCache?: RawCacheTrigger;
  metrics?: Metrics;
}

const UPSTREAM_FAILURE = { 502: 'bad_gateway', 503: 'unreachable', 504: 'timeout' } as const;

export function createProxy(config: ProxyConfig, logger: Logger, { rawCache, metrics }: ProxyExtras = {}): ProxyServer {
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
  const healthcheck = publicHealthcheck(config.health.disable_by_file);
  // Glance's own healthcheck answers the decoded path, and Python's HTTP server folds leading slashes.
  const ownEndpoint = (req: http.IncomingMessage, res: http.ServerResponse): boolean => {
    const path = unquoteLatin1((req.url ?? '').split('?', 1)[0]!).replace(/^\/+/, '/');
    if (path !== '/healthcheck') return false;
    void healthcheck(req, res);
    return true;
  };
  const imageApi = createImageApi({ upstream, config, logger, rawCache });
  // A bad entry stops the start here, not at the first request.
  compileTrustedProxies(config.trusted_proxies);
  const trustedProxies = config.trusted_proxies;
  const dispatch = (req: http.IncomingMessage, res: http.ServerResponse, classification: Classification) =>
    handleClassified(req, res, classification, { imageApi, maxFormBody: config.limits.max_json_request, trustedProxies });

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
      const { method, url } = req;
      let label = 'unclassified';
      res.once('close', () => {
        const seconds = Number(process.hrtime.bigint() - started) / 1e9;
        const bytesIn = socket.bytesRead - readBefore;
        const bytesOut = socket.bytesWritten - writtenBefore;
        if (metrics) {
          const methodLabel = METHOD_LABELS.has(req.method ?? '') ? req.method! : 'OTHER';
          metrics.requests.inc({ route: label, method: methodLabel, status: String(res.statusCode) });
          metrics.requestDuration.observe({ route: label }, seconds);
          metrics.bytes.inc({ direction: 'in', route: label }, bytesIn);
          metrics.bytes.inc({ direction: 'out', route: label }, bytesOut);
        }
        logger.info('request', {
          request_id: logRequestId(req),
          method,
          path: url,
          route: label,
          ...(req.url !== url || req.method !== method ? { forwarded_as: `${req.method} ${req.url}` } : {}),
          status: res.statusCode,
          completed: res.writableFinished,
          bytes_in: bytesIn,
          bytes_out: bytesOut,
          duration_ms: seconds * 1000,
        });
      });
      // No request may end the process: a failure becomes a Glance-style 500 for this request alone.
      const fail = (err: unknown) => {
        logger.error('request failed in the proxy', { request_id: logRequestId(req), method, path: url, error: (err as Error)?.message ?? String(err) });
        if (!res.headersSent) sendGlanceError(req, res, 500, 'The server has either erred or is incapable of performing the requested operation.');
        else res.destroy();
      };
      try {
        if (ownEndpoint(req, res)) {
          label = 'proxy';
          return;
        }
        const classification = classifyRequest({ method: method ?? 'GET', url: url ?? '/', headers: req.headers });
        label = classification.label;
        dispatch(req, res, classification).catch(fail);
      } catch (err) {
        fail(err);
      }
    },
  );
  handleClientErrors(server, logger);
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
