import type { IncomingMessage, ServerResponse } from 'node:http';
import type { ProxyConfig } from '../config/load';
import { findLoneSurrogateEscape, GlanceJsonBodyReader, MALFORMED_JSON_MESSAGE, type JsonBodyRefusal, type JsonBodyResult, type JsonLimits, type JsonNode, type TextEdit } from '../images/glance-json';
import { checkImportRequest, reviewCreateRequest, reviewPatchRequest, type InboundReview } from '../images/inbound';
import { enrichImageBytes, enrichImageList, type EnrichContext } from '../images/outbound';
import { patchDialect, ACCEPT_PATCH } from '../images/patch-operations';
import { extendImageSchema, extendImagesSchema } from '../images/schema';
import type { Logger } from '../ops/log';
import type { RawCacheTrigger } from '../rawcache/trigger';
import type { TriggerReason } from '../rawcache/types';
import { withMethodOverride, type Classification, type Refusal } from './classify';
import { sendGlanceError } from './errors';
import { originGlanceSaw, rewriteVersionsDocument } from './links';
import { logRequestId } from './request-id';
import { readRequestBody } from './request-body';
import type { BeforeAnswer, ResponseTransform, Upstream } from './upstream';

const JSON_PATCH_V21 = 'application/openstack-images-v2.1-json-patch';
const PLAIN_JSON = /^application\/json\s*(;|$)/i;

export type RouteClassification = Extract<Classification, { kind: 'route' }>;

export interface ImageApiDeps {
  upstream: Upstream;
  config: ProxyConfig;
  logger: Logger;
  rawCache?: RawCacheTrigger;
}

export interface ImageApi {
  /** A request on one of Glance's v2 routes, already rewritten to its canonical form. */
  route(req: IncomingMessage, res: ServerResponse, classification: RouteClassification, body?: Buffer): Promise<void>;
  /** The versions document (and the /v2 redirect). */
  versions(req: IncomingMessage, res: ServerResponse, body?: Buffer): void;
}

/** Glance's success answer to each data-changing request, after which the raw cache must look again. */
const RAW_CACHE_EVENTS: Readonly<Record<string, { status: number; reason: Extract<TriggerReason, 'upload' | 'import' | 'delete'> }>> = {
  'PUT image-data': { status: 204, reason: 'upload' },
  'POST image-import': { status: 202, reason: 'import' },
  'DELETE image': { status: 204, reason: 'delete' },
  // Multi-store: the image lost its data in one store, so its raw copy may have lost its source.
  'DELETE image-store': { status: 204, reason: 'delete' },
};

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/** Runs the reader's pending work one step per turn of the event loop; the first refusal ends it. */
async function drain(reader: GlanceJsonBodyReader, refused: JsonBodyRefusal | undefined): Promise<JsonBodyRefusal | undefined> {
  while (refused === undefined && reader.pending()) {
    await nextTurn();
    refused = reader.step();
  }
  return refused;
}

/** The whole verdict on a body that is already in memory (a form read for its `_method`), one piece per turn. */
async function readInSteps(buffer: Buffer, limits: JsonLimits): Promise<JsonBodyResult> {
  const reader = new GlanceJsonBodyReader(limits);
  for (let offset = 0; offset < buffer.length; offset += STEP_BYTES) {
    const refused = await drain(reader, reader.push(buffer.subarray(offset, offset + STEP_BYTES)));
    if (refused) return refused;
  }
  return (await drain(reader, reader.close())) ?? reader.end();
}

/** How much of an in-memory body is handed to the reader at a time (its piece size). */
const STEP_BYTES = 256 * 1024;

/**
 * The body's bytes with `edits` (spans of its decoded text, in UTF-16 units) applied, as pieces in
 * order: one pass over the bytes finds where each span starts and ends, and nothing else is copied.
 * The body is valid UTF-8 (the JSON reader refused it otherwise).
 */
export function applyEditsToBytes(body: Buffer, edits: readonly TextEdit[]): Buffer[] {
  const sorted = [...edits].sort((a, b) => a.start - b.start);
  const offsets = sorted.flatMap((edit) => [edit.start, edit.end]);
  const bytesAt: number[] = [];
  let units = 0;
  let index = 0;
  for (let byte = 0; index < offsets.length; ) {
    while (index < offsets.length && offsets[index] === units) bytesAt[index++] = byte;
    if (byte >= body.length) break;
    const lead = body[byte]!;
    const length = lead < 0x80 ? 1 : lead < 0xe0 ? 2 : lead < 0xf0 ? 3 : 4;
    units += length === 4 ? 2 : 1;
    byte += length;
  }
  const pieces: Buffer[] = [];
  let from = 0;
  sorted.forEach((edit, i) => {
    pieces.push(body.subarray(from, bytesAt[2 * i]), Buffer.from(edit.text, 'utf8'));
    from = bytesAt[2 * i + 1]!;
  });
  pieces.push(body.subarray(from));
  return pieces;
}

interface JudgedBody {
  buffer: Buffer;
  /** Undefined for an empty body, which Glance answers itself ("Body expected in request."). */
  document: JsonNode | undefined;
}

/**
 * The routes whose requests the proxy reads or whose answers it rewrites: inbound JSON bodies are
 * judged (and the image ones validated and normalized) before Glance sees them, Glance's image
 * answers are enriched on the way back, and data-changing answers wait for the raw-cache trigger.
 */
export function createImageApi({ upstream, config, logger, rawCache }: ImageApiDeps): ImageApi {
  const enrichContext: EnrichContext = { storeTypes: config.store_types, rawCacheEnabled: rawCache !== undefined };
  const enrichOne: ResponseTransform = (body, _proxyRes, raw) => enrichImageBytes(body, raw, enrichContext);
  const limits: JsonLimits = {
    depth: config.limits.json_depth,
    members: config.limits.json_members,
    elements: config.limits.json_elements,
    values: config.limits.json_values,
    string: config.limits.json_string,
  };

  const refuse = (req: IncomingMessage, res: ServerResponse, { status, message, headers }: Refusal) => {
    logger.info('request rejected before reaching Glance', { request_id: logRequestId(req), method: req.method, path: req.url, status, reason: message });
    sendGlanceError(req, res, status, message, { headers });
  };

  const refusalOf = (result: Exclude<JsonBodyResult, { ok: true }>): Refusal =>
    result.problem === 'malformed' ? { status: 400, message: MALFORMED_JSON_MESSAGE } : { status: result.status, message: result.message };

  /** The body as Glance would decode it, or undefined once the proxy has answered (or the client left). */
  const judgeBody = async (req: IncomingMessage, res: ServerResponse, preread: Buffer | undefined): Promise<JudgedBody | undefined> => {
    let buffer = preread;
    let decoded: JsonBodyResult;
    if (buffer === undefined) {
      // Read as the body arrives: each step costs one piece of the body, never the whole of it.
      const reader = new GlanceJsonBodyReader(limits);
      const verdict = (refused: JsonBodyRefusal | undefined): Refusal | 'more' | undefined =>
        refused ? refusalOf(refused) : reader.pending() ? 'more' : undefined;
      const read = await readRequestBody(req, config.limits.max_json_request, {
        chunk: (chunk) => verdict(reader.push(chunk)),
        step: () => verdict(reader.step()),
      });
      if (!read.ok) {
        if ('refusal' in read) refuse(req, res, read.refusal);
        return undefined;
      }
      buffer = read.body;
      if (buffer.length === 0) return { buffer, document: undefined };
      decoded = (await drain(reader, reader.close())) ?? reader.end();
    } else {
      if (buffer.length === 0) return { buffer, document: undefined };
      decoded = await readInSteps(buffer, limits);
    }
    if (!decoded.ok) {
      refuse(req, res, refusalOf(decoded));
      return undefined;
    }
    const surrogate = findLoneSurrogateEscape(buffer);
    if (surrogate !== undefined) {
      refuse(req, res, { status: 400, message: `The request body holds ${surrogate}, a lone UTF-16 surrogate, which cannot be stored.` });
      return undefined;
    }
    return { buffer, document: decoded.document };
  };

  /** Glance answers a JSON array where its code expects an object with a 500; the proxy answers 400. */
  const refuseArray = (req: IncomingMessage, res: ServerResponse, judged: JudgedBody): boolean => {
    if (judged.document?.kind !== 'array') return false;
    refuse(req, res, { status: 400, message: 'The request body must be a JSON object.' });
    return true;
  };

  const forwardChecked = (req: IncomingMessage, res: ServerResponse, judged: JudgedBody, result: InboundReview, before?: BeforeAnswer) => {
    if (!result.ok) {
      refuse(req, res, result.rejection);
      return;
    }
    // Unchanged bodies go on byte for byte, so Glance judges exactly what the client sent; edited ones
    // are the client's bytes with only the edited values replaced.
    upstream.rewrite(req, res, { transform: enrichOne, before }, result.edits.length > 0 ? applyEditsToBytes(judged.buffer, result.edits) : judged.buffer);
  };

  // A changed image may need its raw copy made or removed (cache_raw turned on or off).
  const afterUpdate = (req: IncomingMessage): BeforeAnswer | undefined =>
    rawCache && ((proxyRes, body) => (proxyRes.statusCode === 200 ? rawCache.afterImageUpdate(body, logRequestId(req)) : Promise.resolve()));

  const update = async (req: IncomingMessage, res: ServerResponse, preread: Buffer | undefined) => {
    // Glance checks the media type before it reads the body.
    if (patchDialect(req.headers['content-type']) === undefined) {
      req.resume();
      refuse(req, res, { status: 415, message: `The request media type ${req.headers['content-type'] ?? 'text/plain'} is not supported by this server.`, headers: { 'Accept-Patch': ACCEPT_PATCH } });
      return;
    }
    const judged = await judgeBody(req, res, preread);
    if (judged) forwardChecked(req, res, judged, reviewPatchRequest(req.headers['content-type'], judged.document), afterUpdate(req));
  };

  // The StarlingX API reference documents image updates as PUT with a JSON-patch body; Glance only
  // knows PATCH (and answers PUT with 405), so such a PUT becomes the PATCH it means.
  const starlingxPut = async (req: IncomingMessage, res: ServerResponse, preread: Buffer | undefined) => {
    const contentType = req.headers['content-type'] ?? '';
    const judged = await judgeBody(req, res, preread);
    if (!judged) return;
    const isPatch = patchDialect(contentType) !== undefined || (PLAIN_JSON.test(contentType) && judged.document?.kind === 'array');
    if (!isPatch) {
      upstream.pass(req, res, judged.buffer);
      return;
    }
    if (patchDialect(contentType) === undefined) req.headers['content-type'] = JSON_PATCH_V21;
    req.method = 'PATCH';
    req.url = withMethodOverride(req.url ?? '/', 'PATCH');
    forwardChecked(req, res, judged, reviewPatchRequest(req.headers['content-type'], judged.document), afterUpdate(req));
  };

  return {
    route: async (req, res, classification, preread) => {
      const { route, method, routeKind, imageId } = classification;
      const key = `${method} ${route.name}`;
      const event = rawCache && imageId !== undefined ? RAW_CACHE_EVENTS[key] : undefined;
      const trigger: BeforeAnswer | undefined =
        event && ((proxyRes) => (proxyRes.statusCode === event.status ? rawCache!.afterImageChange(imageId!, event.reason, logRequestId(req)) : Promise.resolve()));
      switch (key) {
        case 'POST images': {
          const judged = await judgeBody(req, res, preread);
          if (judged && !refuseArray(req, res, judged)) forwardChecked(req, res, judged, reviewCreateRequest(judged.document));
          return;
        }
        case 'PATCH image':
          return update(req, res, preread);
        case 'PUT image':
          return starlingxPut(req, res, preread);
        case 'GET images':
          return upstream.rewrite(req, res, { transform: (body) => enrichImageList(body, enrichContext) }, preread);
        case 'GET image':
          return upstream.rewrite(req, res, { transform: enrichOne }, preread);
        case 'GET image-schema':
          return upstream.rewrite(req, res, { transform: extendImageSchema }, preread);
        case 'GET images-schema':
          return upstream.rewrite(req, res, { transform: extendImagesSchema }, preread);
      }
      if (routeKind === 'json-body') {
        const judged = await judgeBody(req, res, preread);
        if (!judged || refuseArray(req, res, judged)) return;
        const importRefusal = key === 'POST image-import' ? checkImportRequest(judged.document) : undefined;
        if (importRefusal) return refuse(req, res, importRefusal);
        if (trigger) upstream.rewrite(req, res, { before: trigger }, judged.buffer);
        else upstream.pass(req, res, judged.buffer);
        return;
      }
      // The request body still streams; only the answer waits until the job is durable.
      if (trigger) upstream.rewrite(req, res, { before: trigger }, preread);
      else upstream.pass(req, res, preread);
    },
    versions: (req, res, preread) => {
      if (req.method !== 'GET' || !config.public_url) {
        upstream.pass(req, res, preread);
        return;
      }
      const from = originGlanceSaw(req);
      upstream.rewrite(req, res, { transform: (body) => rewriteVersionsDocument(body, from, config.public_url) }, preread);
    },
  };
}
