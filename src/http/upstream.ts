import http from 'node:http';
import type { Logger } from '../ops/log';
import { DEFAULT_EXPLANATIONS, sendGlanceError } from './errors';
import { originGlanceSaw, rewriteLink } from './links';
import { pythonJson } from './python-json';
import { logRequestId } from './request-id';

/**
 * Rewrites a parsed JSON answer of Glance; the result is what the client gets. A Buffer result is
 * sent as it is (a transform that only adds to Glance's bytes returns them with its addition, so the
 * rest of the body is never serialised again); any other value is written as Python's json.dumps would.
 */
export type ResponseTransform = (body: unknown, proxyRes: http.IncomingMessage, raw: Buffer) => unknown;

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

/** Headers of one connection, never forwarded (RFC 9110 7.6.1); the framing one, transfer-encoding, is Node's to write. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-connection']);
/** Failures before Glance took the request: nothing listens there (503), as opposed to a broken answer (502). */
const UNREACHABLE = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL']);
const FAILURE_DETAIL = {
  502: 'The image service sent an incomplete or invalid answer.',
  503: 'The image service could not be reached.',
  504: 'The image service did not answer in time.',
} as const;
const JSON_TYPE = /^application\/json\b/i;

class UpstreamTimeout extends Error {
  readonly code = 'UPSTREAM_TIMEOUT';
}

/**
 * Every request goes to Glance with Node's own http client over one keep-alive pool: the request body
 * is piped as it arrives (or written from the pieces the proxy read), and the answer is piped back as
 * Glance sends it, or read whole when it is to be rewritten. Both directions keep Node's backpressure.
 */
export function createUpstream(options: UpstreamOptions): Upstream {
  const { logger, publicUrl, idleTimeoutMs } = options;
  const target = new URL(options.target);
  const host = target.hostname.replace(/^\[|\]$/g, '');
  const port = Number(target.port || 80);
  const pathPrefix = target.pathname.replace(/\/+$/, '');
  const agent = new http.Agent({
    keepAlive: true,
    maxSockets: options.maxSockets,
    maxFreeSockets: options.maxFreeSockets,
    // Idle pooled sockets are closed well before Glance's own client_socket_timeout (900 s), so a
    // request is never written to a socket Glance is about to drop.
    timeout: 30_000,
    scheduling: 'lifo',
  });
  const responseListeners: Array<(req: http.IncomingMessage, proxyRes: http.IncomingMessage) => void> = [];

  function forward(req: http.IncomingMessage, res: http.ServerResponse, rewrite: RewriteOptions | undefined, body?: RequestBody): void {
    const headers = outgoingHeaders(req, body);
    // The path goes out exactly as the classification wrote it into req.url (no URL parsing, which
    // would resolve dot segments and drop a "#" that Glance would keep).
    const url = req.url ?? '/';
    const proxyReq = http.request({ host, port, method: req.method, path: pathPrefix + (url.startsWith('/') ? url : `/${url}`), headers, agent });
    let timedOut = false;
    if (idleTimeoutMs > 0) {
      proxyReq.setTimeout(idleTimeoutMs, () => {
        timedOut = true;
        proxyReq.destroy(new UpstreamTimeout(`no answer from Glance within ${idleTimeoutMs} ms`));
      });
    }
    const fail = (err: Error & { code?: string }) => {
      const clientGone = res.destroyed || (req.destroyed && !req.complete);
      if (clientGone || res.writableEnded) return;
      const status = timedOut ? 504 : UNREACHABLE.has(err.code ?? '') ? 503 : 502;
      options.onFailure?.(status);
      logger.warn('upstream request failed', { request_id: logRequestId(req), method: req.method, path: req.url, status, error: err.code ?? err.message });
      sendGlanceError(req, res, status, DEFAULT_EXPLANATIONS[status], { detail: FAILURE_DETAIL[status] });
    };
    proxyReq.on('error', fail);
    // A client that goes away releases the upstream request (and its pooled socket) at once.
    res.once('close', () => {
      if (!res.writableFinished) proxyReq.destroy();
    });
    req.once('error', () => proxyReq.destroy());
    proxyReq.once('response', (proxyRes: http.IncomingMessage) => {
      // Glance dying mid-body must end the client's response too, not leave it waiting for bytes.
      proxyRes.once('close', () => {
        if (!proxyRes.complete) res.destroy();
      });
      for (const listener of responseListeners) listener(req, proxyRes);
      const location = proxyRes.headers.location;
      if (location && publicUrl) proxyRes.headers.location = rewriteLink(location, originGlanceSaw(req), publicUrl);
      if (rewrite) answerRewritten(req, res, proxyRes, rewrite);
      else streamAnswer(res, proxyRes);
    });
    if (body) {
      if (Buffer.isBuffer(body)) proxyReq.end(body);
      else {
        for (const piece of body) proxyReq.write(piece);
        proxyReq.end();
      }
    } else {
      req.pipe(proxyReq);
    }
  }

  function streamAnswer(res: http.ServerResponse, proxyRes: http.IncomingMessage): void {
    if (res.destroyed) {
      proxyRes.destroy();
      return;
    }
    res.writeHead(proxyRes.statusCode ?? 502, proxyRes.statusMessage, responseHeaders(proxyRes, true));
    proxyRes.pipe(res);
  }

  function answerRewritten(req: http.IncomingMessage, res: http.ServerResponse, proxyRes: http.IncomingMessage, { transform, before }: RewriteOptions): void {
    const status = proxyRes.statusCode ?? 502;
    // 2xx bodies, and the 300 versions document Glance answers outside /v2.
    if (!transform || status < 200 || status > 300 || req.method === 'HEAD' || !JSON_TYPE.test(String(proxyRes.headers['content-type'] ?? ''))) {
      if (!before) streamAnswer(res, proxyRes);
      else void runBefore(before, proxyRes, undefined, req).then(() => streamAnswer(res, proxyRes));
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let overflowed = false;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      chunks.push(chunk);
      if (size <= options.maxJsonResponse) return;
      // Too large to rewrite in memory: hand it over as Glance sent it.
      overflowed = true;
      proxyRes.off('data', onData);
      logger.warn('response too large to enrich, passed through', { request_id: logRequestId(req), method: req.method, path: req.url, limit: options.maxJsonResponse });
      res.writeHead(status, proxyRes.statusMessage, responseHeaders(proxyRes, true));
      for (const c of chunks) res.write(c);
      proxyRes.pipe(res);
    };
    proxyRes.on('data', onData);
    proxyRes.once('end', () => {
      if (overflowed || res.destroyed) return;
      const original = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
      let parsed: unknown;
      let body = original;
      try {
        parsed = JSON.parse(original.toString('utf8'));
        const result = transform(parsed, proxyRes, original);
        body = Buffer.isBuffer(result) ? result : Buffer.from(pythonJson(result));
      } catch (err) {
        logger.warn('could not rewrite a Glance answer, passed through', { request_id: logRequestId(req), method: req.method, path: req.url, error: (err as Error).message });
      }
      const send = () => {
        if (res.destroyed) return;
        const headers = responseHeaders(proxyRes, false);
        headers.push('Content-Length', String(body.length));
        res.writeHead(status, proxyRes.statusMessage, headers);
        res.end(body);
      };
      if (before) void runBefore(before, proxyRes, parsed, req).then(send);
      else send();
    });
  }

  /** A failing hook is logged, never turned into a failed answer: Glance has already done the work. */
  async function runBefore(before: BeforeAnswer, proxyRes: http.IncomingMessage, body: unknown, req: http.IncomingMessage): Promise<void> {
    try {
      await before(proxyRes, body);
    } catch (err) {
      logger.error('post-answer hook failed', { request_id: logRequestId(req), method: req.method, path: req.url, error: (err as Error).message });
    }
  }

  return {
    agent,
    onResponse: (listener) => responseListeners.push(listener),
    pass: (req, res, body) => forward(req, res, undefined, body),
    rewrite: (req, res, rewriteOptions, body) => {
      // Glance does not compress today; asking it not to keeps the body parseable if that changes.
      if (rewriteOptions.transform) delete req.headers['accept-encoding'];
      forward(req, res, rewriteOptions, body);
    },
    close: () => agent.destroy(),
  };
}

/**
 * The client's headers as they go to Glance: without hop-by-hop ones (but the body's framing, which
 * Node's client writes from transfer-encoding or content-length) and without Expect (Node has already
 * answered 100 Continue to the client); a body the proxy read goes with its exact length.
 */
function outgoingHeaders(req: http.IncomingMessage, body: RequestBody | undefined): http.OutgoingHttpHeaders {
  const headers: http.OutgoingHttpHeaders = {};
  const incoming = req.headers;
  for (const name in incoming) {
    if (name === 'expect' || (name !== 'transfer-encoding' && HOP_BY_HOP.has(name))) continue;
    headers[name] = incoming[name];
  }
  if (body) {
    headers['content-length'] = String(Buffer.isBuffer(body) ? body.length : body.reduce((total, piece) => total + piece.length, 0));
    delete headers['transfer-encoding'];
    delete headers['content-encoding'];
  } else if ((req.method === 'DELETE' || req.method === 'OPTIONS') && headers['content-length'] === undefined) {
    // As Glance's own clients send them: a body-less DELETE or OPTIONS says so.
    headers['content-length'] = '0';
    delete headers['transfer-encoding'];
  }
  return headers;
}

/** Glance's response headers in their original case and order, without hop-by-hop ones. */
function responseHeaders(proxyRes: http.IncomingMessage, keepLength: boolean): string[] {
  const out: string[] = [];
  const raw = proxyRes.rawHeaders;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (HOP_BY_HOP.has(name) || (!keepLength && name === 'content-length')) continue;
    out.push(raw[i]!, name === 'location' ? String(proxyRes.headers.location) : raw[i + 1]!);
  }
  return out;
}
