import http from 'node:http';
import { Readable } from 'node:stream';
import { createProxyServer, type ProxyServer } from 'http-proxy-3';
import type { Logger } from '../ops/log';
import { DEFAULT_EXPLANATIONS, sendGlanceError } from './errors';
import { originGlanceSaw, rewriteLink } from './links';
import { pythonJson } from './python-json';
import { logRequestId } from './request-id';

/** Rewrites a parsed JSON answer of Glance; the result is what the client gets. */
export type ResponseTransform = (body: unknown, proxyRes: http.IncomingMessage) => unknown;

/**
 * Runs once Glance has answered and before the client sees anything of the answer (with the parsed
 * JSON body when there is one): the place for work that must be durable before the client is told.
 */
export type BeforeAnswer = (proxyRes: http.IncomingMessage, body: unknown) => Promise<void>;

export interface RewriteOptions {
  transform?: ResponseTransform;
  before?: BeforeAnswer;
}

/** A request body the proxy has read, whole: one buffer, or its pieces in order (never joined into one copy). */
export type RequestBody = Buffer | readonly Buffer[];

export interface UpstreamOptions {
  target: string;
  publicUrl: string | null;
  maxSockets: number;
  maxFreeSockets: number;
  /** ms of silence from Glance before the request is given up (0: never). */
  idleTimeoutMs: number;
  maxJsonResponse: number;
  logger: Logger;
  /** Told of every request Glance could not answer, with the status the client got. */
  onFailure?: (status: 502 | 503 | 504) => void;
}

export interface Upstream {
  /** Streams the request to Glance and the answer back as Glance sent it. */
  pass(req: http.IncomingMessage, res: http.ServerResponse, body?: RequestBody): void;
  /** Like pass, but a successful JSON answer goes through `transform`, and `before` runs first. */
  rewrite(req: http.IncomingMessage, res: http.ServerResponse, options: RewriteOptions, body?: RequestBody): void;
  /** Called with every answer Glance starts, before the client sees it. */
  onResponse(listener: (req: http.IncomingMessage, proxyRes: http.IncomingMessage) => void): void;
  readonly agent: http.Agent;
  close(): void;
}

interface InFlight extends RewriteOptions {
  timedOut?: boolean;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection']);
/** Failures before Glance took the request: nothing listens there (503), as opposed to a broken answer (502). */
const UNREACHABLE = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL']);

class UpstreamTimeout extends Error {
  readonly code = 'UPSTREAM_TIMEOUT';
}

export function createUpstream(options: UpstreamOptions): Upstream {
  const { logger, publicUrl } = options;
  const agent = new http.Agent({
    keepAlive: true,
    maxSockets: options.maxSockets,
    maxFreeSockets: options.maxFreeSockets,
    // Idle pooled sockets are closed well before Glance's own client_socket_timeout (900 s), so a
    // request is never written to a socket Glance is about to drop.
    timeout: 30_000,
    scheduling: 'lifo',
  });
  const inFlight = new WeakMap<http.IncomingMessage, InFlight>();
  const responseListeners: Array<(req: http.IncomingMessage, proxyRes: http.IncomingMessage) => void> = [];
  // toProxy: the path goes out exactly as the classification wrote it into req.url; without it the
  // library re-parses it as a URL, which resolves dot segments and drops a "#" that Glance would keep.
  const common = { target: options.target, agent, preserveHeaderKeyCase: true, changeOrigin: false, toProxy: true, xfwd: false };
  const streaming = createProxyServer(common);
  const rewriting = createProxyServer({ ...common, selfHandleResponse: true });

  for (const proxy of [streaming, rewriting] as ProxyServer[]) {
    proxy.on('proxyReq', (proxyReq: http.ClientRequest, req: http.IncomingMessage) => {
      if (options.idleTimeoutMs > 0) {
        proxyReq.setTimeout(options.idleTimeoutMs, () => {
          const state = inFlight.get(req);
          if (state) state.timedOut = true;
          proxyReq.destroy(new UpstreamTimeout(`no answer from Glance within ${options.idleTimeoutMs} ms`));
        });
      }
    });
    proxy.on('proxyRes', (proxyRes: http.IncomingMessage, req: http.IncomingMessage, res: http.ServerResponse) => {
      // Glance dying mid-body must end the client's response too, not leave it waiting for bytes.
      proxyRes.once('close', () => {
        if (!proxyRes.complete) res.destroy();
      });
      for (const listener of responseListeners) listener(req, proxyRes);
      const location = proxyRes.headers.location;
      if (location && publicUrl) proxyRes.headers.location = rewriteLink(location, originGlanceSaw(req), publicUrl);
    });
    proxy.on('error', (err: Error & { code?: string }, req: http.IncomingMessage, res: http.ServerResponse | import('node:net').Socket) => {
      if (!(res instanceof http.ServerResponse)) return;
      const timedOut = inFlight.get(req)?.timedOut === true;
      const clientGone = res.destroyed || req.destroyed && !req.complete;
      if (clientGone || res.writableEnded) return;
      const status = timedOut ? 504 : UNREACHABLE.has(err.code ?? '') ? 503 : 502;
      options.onFailure?.(status);
      logger.warn('upstream request failed', { request_id: logRequestId(req), method: req.method, path: req.url, status, error: err.code ?? err.message });
      sendGlanceError(req, res, status, DEFAULT_EXPLANATIONS[status], {
        detail: { 502: 'The image service sent an incomplete or invalid answer.', 503: 'The image service could not be reached.', 504: 'The image service did not answer in time.' }[status],
      });
    });
  }

  rewriting.on('proxyRes', (proxyRes: http.IncomingMessage, req: http.IncomingMessage, res: http.ServerResponse) => {
    const { transform, before } = inFlight.get(req) ?? {};
    const status = proxyRes.statusCode ?? 502;
    const isJson = /^application\/json\b/i.test(String(proxyRes.headers['content-type'] ?? ''));
    const streamAsIs = async () => {
      await runBefore(before, proxyRes, undefined, req);
      if (res.destroyed) return proxyRes.destroy();
      res.writeHead(status, proxyRes.statusMessage, responseHeaders(proxyRes, true));
      proxyRes.pipe(res);
    };
    // 2xx bodies, and the 300 versions document Glance answers outside /v2.
    if (!transform || !isJson || status < 200 || status > 300 || req.method === 'HEAD') {
      void streamAsIs();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let overflowed = false;
    proxyRes.on('data', (chunk: Buffer) => {
      if (overflowed) return;
      size += chunk.length;
      chunks.push(chunk);
      if (size > options.maxJsonResponse) {
        // Too large to rewrite in memory: hand it over as Glance sent it.
        overflowed = true;
        logger.warn('response too large to enrich, passed through', { request_id: logRequestId(req), method: req.method, path: req.url, limit: options.maxJsonResponse });
        res.writeHead(status, proxyRes.statusMessage, responseHeaders(proxyRes, true));
        for (const c of chunks) res.write(c);
        proxyRes.pipe(res);
      }
    });
    proxyRes.on('end', () => {
      if (overflowed || res.destroyed) return;
      const original = Buffer.concat(chunks);
      let parsed: unknown;
      let body = original;
      try {
        parsed = JSON.parse(original.toString('utf8'));
        body = Buffer.from(pythonJson(transform(parsed, proxyRes)));
      } catch (err) {
        logger.warn('could not rewrite a Glance answer, passed through', { request_id: logRequestId(req), method: req.method, path: req.url, error: (err as Error).message });
      }
      void runBefore(before, proxyRes, parsed, req).then(() => {
        if (res.destroyed) return;
        const headers = responseHeaders(proxyRes, false);
        headers.push('Content-Length', String(body.length));
        res.writeHead(status, proxyRes.statusMessage, headers);
        res.end(body);
      });
    });
  });

  /** A failing hook is logged, never turned into a failed answer: Glance has already done the work. */
  async function runBefore(before: BeforeAnswer | undefined, proxyRes: http.IncomingMessage, body: unknown, req: http.IncomingMessage): Promise<void> {
    if (!before) return;
    try {
      await before(proxyRes, body);
    } catch (err) {
      logger.error('post-answer hook failed', { request_id: logRequestId(req), method: req.method, path: req.url, error: (err as Error).message });
    }
  }

  function forward(proxy: ProxyServer, req: http.IncomingMessage, res: http.ServerResponse, state: InFlight, body?: RequestBody): void {
    inFlight.set(req, state);
    // Without Expect the library announces every upstream request (it skips those with one), so the
    // idle timeout always applies; Node has already answered 100 Continue to the client.
    delete req.headers.expect;
    if (body) {
      const pieces = Buffer.isBuffer(body) ? [body] : body;
      req.headers['content-length'] = String(pieces.reduce((total, piece) => total + piece.length, 0));
      delete req.headers['transfer-encoding'];
      delete req.headers['content-encoding'];
      proxy.web(req, res, { buffer: Readable.from(pieces, { objectMode: false }) });
    } else {
      proxy.web(req, res);
    }
  }

  return {
    agent,
    onResponse: (listener) => responseListeners.push(listener),
    pass: (req, res, body) => forward(streaming, req, res, {}, body),
    rewrite: (req, res, rewriteOptions, body) => {
      // Glance does not compress today; asking it not to keeps the body parseable if that changes.
      if (rewriteOptions.transform) delete req.headers['accept-encoding'];
      forward(rewriting, req, res, { ...rewriteOptions }, body);
    },
    close: () => {
      streaming.close();
      rewriting.close();
      agent.destroy();
    },
  };
}

/** Glance's response headers in their original case and order, without hop-by-hop ones. */
function responseHeaders(proxyRes: http.IncomingMessage, keepLength: boolean): string[] {
  const out: string[] = [];
  const raw = proxyRes.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (HOP_BY_HOP.has(name) || (!keepLength && name === 'content-length')) continue;
    out.push(raw[i], name === 'location' ? String(proxyRes.headers.location) : raw[i + 1]);
  }
  return out;
}
