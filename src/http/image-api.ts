import type { IncomingMessage, ServerResponse } from 'node:http';
import express, { type NextFunction, type Request, type Response } from 'express';
import type { ProxyConfig } from '../config/load';
import { normalizeCreateRequest, normalizePatchRequest, type InboundResult } from '../images/inbound';
import { enrichImage, enrichImageList, type EnrichContext } from '../images/outbound';
import { extendImageSchema, extendImagesSchema } from '../images/schema';
import type { Logger } from '../ops/log';
import { sendGlanceError } from './errors';
import { originGlanceSaw, rewriteVersionsDocument } from './links';
import { logRequestId } from './request-id';
import type { RawCacheTrigger } from '../rawcache/trigger';
import type { BeforeAnswer, ResponseTransform, Upstream } from './upstream';

const JSON_PATCH_V21 = 'application/openstack-images-v2.1-json-patch';
const JSON_PATCH = /^application\/openstack-images-v2\.[01]-json-patch\s*(;|$)/i;
const PLAIN_JSON = /^application\/json\s*(;|$)/i;

export interface ImageApiDeps {
  upstream: Upstream;
  config: ProxyConfig;
  logger: Logger;
  rawCache?: RawCacheTrigger;
}

/**
 * The image metadata routes the proxy reads or rewrites: inbound requests are validated and
 * normalized before Glance sees them, and Glance's JSON answers are enriched on the way back.
 * Everything else never enters this app (see server.ts); a request that matches no route here
 * still goes to Glance as it came.
 */
export function createImageApi({ upstream, config, logger, rawCache }: ImageApiDeps): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.set('etag', false);

  const readBody = express.raw({ type: () => true, limit: config.limits.max_json_request });
  const enrichContext: EnrichContext = { storeTypes: config.store_types, rawCacheEnabled: rawCache !== undefined };
  const enrichOne: ResponseTransform = (body) => enrichImage(body as Record<string, unknown>, enrichContext);

  const forwardChecked = (req: Request, res: Response, result: InboundResult, transform: ResponseTransform, before?: BeforeAnswer) => {
    if (!result.ok) {
      const { status, message, headers } = result.rejection;
      logger.info('request rejected before reaching Glance', { request_id: logRequestId(req), method: req.method, path: req.originalUrl, status, reason: message });
      sendGlanceError(req, res, status, message, { headers });
      return;
    }
    // Unchanged bodies go on byte for byte, so Glance judges exactly what the client sent.
    upstream.rewrite(req, res, { transform, before }, result.changed ? Buffer.from(result.body) : rawBody(req) ?? Buffer.alloc(0));
  };

  app.post('/v2/images', readBody, (req, res) => {
    forwardChecked(req, res, normalizeCreateRequest(bodyText(req)), enrichOne);
  });

  // A changed image may need its raw copy made or removed (cache_raw turned on or off).
  const afterUpdate = (req: Request): BeforeAnswer | undefined =>
    rawCache && ((proxyRes, body) => (proxyRes.statusCode === 200 ? rawCache.afterImageUpdate(body, logRequestId(req)) : Promise.resolve()));

  app.patch('/v2/images/:id', readBody, (req, res) => {
    forwardChecked(req, res, normalizePatchRequest(req.headers['content-type'], bodyText(req)), enrichOne, afterUpdate(req));
  });

  // The StarlingX API reference documents image updates as PUT with a JSON-patch body; Glance only
  // knows PATCH (and answers PUT with 405), so such a PUT becomes the PATCH it means.
  app.put('/v2/images/:id', readBody, (req, res) => {
    const contentType = req.headers['content-type'] ?? '';
    const text = bodyText(req);
    const isPatch = JSON_PATCH.test(contentType) || (PLAIN_JSON.test(contentType) && text.trimStart().startsWith('['));
    if (!isPatch) {
      upstream.pass(req, res, rawBody(req));
      return;
    }
    if (!JSON_PATCH.test(contentType)) req.headers['content-type'] = JSON_PATCH_V21;
    req.method = 'PATCH';
    forwardChecked(req, res, normalizePatchRequest(req.headers['content-type'], text), enrichOne, afterUpdate(req));
  });

  app.get('/v2/images', (req, res) => upstream.rewrite(req, res, { transform: (body) => enrichImageList(body, enrichContext) }));
  app.get('/v2/images/:id', (req, res) => upstream.rewrite(req, res, { transform: enrichOne }));
  app.get('/v2/schemas/image', (req, res) => upstream.rewrite(req, res, { transform: extendImageSchema }));
  app.get('/v2/schemas/images', (req, res) => upstream.rewrite(req, res, { transform: extendImagesSchema }));
  app.get('/{*any}', (req, res) => {
    if (req.path.startsWith('/v2/') || req.path === '/v2') {
      upstream.pass(req, res);
      return;
    }
    const from = originGlanceSaw(req);
    upstream.rewrite(req, res, { transform: (body) => rewriteVersionsDocument(body, from, config.public_url) });
  });

  app.use((req: IncomingMessage, res: ServerResponse) => upstream.pass(req, res, rawBody(req as Request)));

  app.use((err: Error & { type?: string; status?: number }, req: Request, res: Response, _next: NextFunction) => {
    if (err.type === 'entity.too.large') {
      sendGlanceError(req, res, 413, `The request body is larger than the ${config.limits.max_json_request} bytes this image API accepts for image metadata.`);
      return;
    }
    if (err.type === 'request.aborted') return;
    if (err.type === 'encoding.unsupported') {
      sendGlanceError(req, res, 415, `The request media type ${req.headers['content-type'] ?? 'application/x-www-form-urlencoded'} is not supported by this server.`);
      return;
    }
    logger.error('request failed in the proxy', { request_id: logRequestId(req), method: req.method, path: req.originalUrl, error: err.message });
    sendGlanceError(req, res, err.status && err.status >= 400 && err.status < 500 ? err.status : 500, 'The server has either erred or is incapable of performing the requested operation.');
  });
  return app;
}

function rawBody(req: Request): Buffer | undefined {
  return Buffer.isBuffer(req.body) ? req.body : undefined;
}

function bodyText(req: Request): string {
  return Buffer.isBuffer(req.body) ? req.body.toString('utf8') : '';
}
