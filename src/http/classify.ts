/**
 * What a request means to Glance, decided once, before anything else reads it.
 *
 * Glance's stack turns the request line into a route in steps, each of which the proxy repeats here:
 * eventlet percent-decodes the path into Latin-1 bytes (PATH_INFO) and never resolves dot segments;
 * webob decodes those bytes as UTF-8 (Glance answers 500 when they are not); the version negotiation
 * filter answers /versions, then takes the version from a `application/vnd.openstack.images-` Accept
 * header or pops the first path segment (leading slashes skipped); paste's urlmap collapses repeated
 * slashes and strips `/v2`; Routes honours a `_method` override and matches templates with Python's
 * `$`. The proxy then forwards the canonical spelling of what it judged (see `forwardUrl`), so that
 * what Glance acts on is what the proxy decided, whatever the client wrote.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { encodePathBytes, matchGlanceRoute, routeLabel, routePath, type GlanceRoute, type RouteKind } from './glance-routes';

/**
 * Version tokens Glance 25 accepts in a path or an Accept header, in any configuration
 * (version_negotiation.py; v2.8 and v2.10-13 need enabled_backends, v2.14 and v2.16 the image cache).
 * A token outside this set gets Glance's versions document.
 */
const VERSION_TOKENS = new Set(['v2', ...Array.from({ length: 17 }, (_, minor) => `v2.${minor}`)]);
const VERSIONED_MEDIA_TYPE = 'application/vnd.openstack.images-';
/** Glance's image ids: what its schema's pattern allows, as a whole string (no trailing newline). */
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;
const FORM_TYPES = new Set(['application/x-www-form-urlencoded', 'multipart/form-data']);
const METHOD_TOKEN = /^[A-Z]+$/;

export interface Refusal {
  status: number;
  message: string;
  headers?: Record<string, string>;
}

interface Common {
  /** The method Glance routes by, after any `_method` override. */
  method: string;
  /** Path and query to send to Glance. */
  forwardUrl: string;
  /** The client asked for a version through Accept; the forwarded request must not carry it. */
  dropAccept: boolean;
  /** Bounded label for logs and metrics. */
  label: string;
}

export type Classification =
  | (Common & { kind: 'route'; route: GlanceRoute; routeKind: RouteKind | 'reject'; params: Readonly<Record<string, string>>; imageId?: string })
  /** Answered by Glance without reaching the v2 router: the versions document, or the /v2 redirect. */
  | (Common & { kind: 'versions' })
  | (Common & { kind: 'refused'; refusal: Refusal })
  /** A POST form whose body may hold a `_method` override: classify again with the body. */
  | (Common & { kind: 'needs-form-body' });

export interface RequestLine {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
}

export function classifyRequest(request: RequestLine, formBody?: Buffer): Classification {
  const rawUrl = request.url;
  const queryAt = rawUrl.indexOf('?');
  const rawPath = queryAt === -1 ? rawUrl : rawUrl.slice(0, queryAt);
  const rawQuery = queryAt === -1 ? undefined : rawUrl.slice(queryAt + 1);
  const override = methodOverride(request, rawQuery, formBody);
  const method = override.method ?? request.method;
  const forwardQuery = override.query;
  const dropAccept = /vnd\.openstack\.images-/i.test(String(request.headers.accept ?? ''));
  const common = (forwardPath: string, label: string): Common => ({
    method,
    forwardUrl: forwardQuery === undefined ? forwardPath : `${forwardPath}?${forwardQuery}`,
    dropAccept,
    label,
  });
  const refuse = (status: number, message: string, headers?: Record<string, string>): Classification => ({
    ...common('/', 'refused'),
    kind: 'refused',
    refusal: { status, message, headers },
  });
  if (override.refusal) return refuse(override.refusal.status, override.refusal.message, override.refusal.headers);
  if (override.needsBody) return { ...common('/', 'form'), kind: 'needs-form-body' };

  const pathInfo = unquoteLatin1(rawPath);
  if (!isUtf8(pathInfo)) return refuse(400, 'The request path is not valid UTF-8.');
  if (pathInfo.replace(/^\/+/, '').split('/', 1)[0] === 'versions') return { ...common('/versions', 'versions'), kind: 'versions' };

  let version = acceptedVersion(request.headers.accept);
  let rest: string;
  if (version !== undefined) {
    rest = pathInfo;
  } else {
    const stripped = pathInfo.replace(/^\/+/, '');
    const slash = stripped.indexOf('/');
    version = slash === -1 ? stripped : stripped.slice(0, slash);
    rest = slash === -1 ? '' : stripped.slice(slash);
  }
  const versionsDocument: Classification = { ...common('/', 'versions'), kind: 'versions' };
  if (!VERSION_TOKENS.has(version)) return versionsDocument;
  const collapsed = `/v2${rest}`.replace(/\/\/+/g, '/');
  if (collapsed === '/v2') return { ...common('/v2', 'versions'), kind: 'versions' };
  if (!collapsed.startsWith('/v2/')) return versionsDocument;

  const match = matchGlanceRoute(collapsed.slice('/v2'.length));
  if (!match) return refuse(404, 'The resource could not be found.');
  const params = { ...match.params };
  let imageId: string | undefined;
  if (match.route.imageParam) {
    const raw = params[match.route.imageParam]!;
    // MySQL and MariaDB compare ids without regard to case or trailing spaces (and accents), so any
    // spelling but a UUID's could name an image the proxy did not recognise.
    if (!UUID.test(raw)) return refuse(404, `No image found with ID ${decodeUtf8(raw)}`);
    imageId = raw.toLowerCase();
    params[match.route.imageParam] = imageId;
  }
  return {
    ...common(`/v2${routePath(match.route, params)}`, routeLabel(match.route, method)),
    kind: 'route',
    route: match.route,
    routeKind: match.route.methods[method] ?? 'reject',
    params,
    ...(imageId === undefined ? {} : { imageId }),
  };
}

interface Override {
  method?: string;
  /** The query to forward (the client's, or its canonical spelling when Glance would read `_method` from it). */
  query: string | undefined;
  needsBody?: boolean;
  refusal?: Refusal;
}

/**
 * Routes' RoutesMiddleware: when the raw query string contains `_method`, the last `_method` of
 * webob's parse of it (if the parse decodes) names the method; otherwise a POSTed form body's
 * `_method` does. Routes matches with that method.
 */
function methodOverride(request: RequestLine, rawQuery: string | undefined, formBody: Buffer | undefined): Override {
  if (rawQuery !== undefined && rawQuery.includes('_method')) {
    const pairs = webobQueryPairs(rawQuery);
    // The proxy forwards its own parse, spelled so that Glance's parse gives it back unchanged.
    const query = spellQuery(pairs);
    if (!pairs.every(([name, value]) => isUtf8(name) && isUtf8(value))) return { query };
    const value = pairs.filter(([name]) => name === '_method').at(-1)?.[1];
    if (!value) return { query };
    return overrideTo(decodeUtf8(value), query);
  }
  if (request.method !== 'POST') return { query: rawQuery };
  const contentType = String(request.headers['content-type'] ?? '').toLowerCase();
  const mediaType = contentType.split(';', 1)[0]!;
  if (!FORM_TYPES.has(mediaType)) return { query: rawQuery };
  if (mediaType === 'multipart/form-data') {
    return { query: rawQuery, refusal: { status: 415, message: 'The request media type multipart/form-data is not supported by this server.' } };
  }
  // webob refuses to parse a form in any charset but UTF-8 (Glance answers 500).
  const charset = /;\s*charset\s*=\s*"?([^";]*)"?/.exec(contentType)?.[1]?.trim() ?? '';
  if (charset !== '' && charset !== 'utf-8' && charset !== 'utf8') {
    return { query: rawQuery, refusal: { status: 415, message: `The request media type ${request.headers['content-type']} is not supported by this server.` } };
  }
  if (formBody === undefined) return { query: rawQuery, needsBody: true };
  const value = formPairs(formBody).filter(([name]) => name === '_method').at(-1)?.[1];
  return value ? overrideTo(value, rawQuery) : { query: rawQuery };
}

function overrideTo(value: string, query: string | undefined): Override {
  // Python's str.upper() maps some non-ASCII letters to ASCII ones ("ſ" to "S"); only plain ASCII
  // overrides are taken, so the proxy and Glance cannot upper-case differently.
  const method = /^[\x20-\x7e]*$/.test(value) ? value.toUpperCase() : undefined;
  if (method === undefined || !METHOD_TOKEN.test(method)) {
    return { query, refusal: { status: 400, message: `The _method override ${JSON.stringify(value)} is not an HTTP method.` } };
  }
  return { method, query };
}

/**
 * `url` with every `_method` of its query saying `method`: for a request whose method the proxy
 * changes after classifying it (the StarlingX PUT that becomes a PATCH), so Glance's override agrees.
 */
export function withMethodOverride(url: string, method: string): string {
  const queryAt = url.indexOf('?');
  if (queryAt === -1 || !url.includes('_method', queryAt)) return url;
  const pairs = webobQueryPairs(url.slice(queryAt + 1)).map(([name, value]): [string, string] => [name, name === '_method' ? method : value]);
  return `${url.slice(0, queryAt)}?${spellQuery(pairs)}`;
}

/** webob's parse_qsl_text on a raw query: `&` and `;` separate, `+` is a space, pairs stay bytes (Latin-1). */
function webobQueryPairs(rawQuery: string): Array<[string, string]> {
  return rawQuery
    .replace(/\+/g, ' ')
    .split(/[&;]/)
    .filter((pair) => pair !== '')
    .map((pair) => {
      const equals = pair.indexOf('=');
      return equals === -1 ? [unquoteLatin1(pair), ''] : [unquoteLatin1(pair.slice(0, equals)), unquoteLatin1(pair.slice(equals + 1))];
    });
}

/** cgi.FieldStorage on a url-encoded body: UTF-8 with replacement, `&` only, `+` is a space. */
function formPairs(body: Buffer): Array<[string, string]> {
  const text = body.toString('utf8');
  return text
    .split('&')
    .filter((pair) => pair !== '')
    .map((pair) => {
      const equals = pair.indexOf('=');
      const [name, value] = equals === -1 ? [pair, ''] : [pair.slice(0, equals), pair.slice(equals + 1)];
      return [unquoteUtf8(name.replace(/\+/g, ' ')), unquoteUtf8(value.replace(/\+/g, ' '))];
    });
}

/** urllib.parse.unquote(s, encoding='latin1'): valid escapes become bytes, anything else stays. */
export function unquoteLatin1(text: string): string {
  return text.replace(/%([0-9a-fA-F]{2})/g, (_, hex: string) => String.fromCharCode(parseInt(hex, 16)));
}

function unquoteUtf8(text: string): string {
  return Buffer.from(unquoteLatin1(text), 'latin1').toString('utf8');
}

const UTF8 = new TextDecoder('utf-8', { fatal: true });

export function isUtf8(latin1: string): boolean {
  try {
    UTF8.decode(Buffer.from(latin1, 'latin1'));
    return true;
  } catch {
    return false;
  }
}

export function decodeUtf8(latin1: string): string {
  return Buffer.from(latin1, 'latin1').toString('utf8');
}

/** Query pairs spelled so that webob's parse gives them back unchanged. */
function spellQuery(pairs: ReadonlyArray<[string, string]>): string {
  const encode = (bytes: string) => encodePathBytes(bytes).replace(/%2E/g, '.');
  return pairs.map(([name, value]) => `${encode(name)}=${encode(value)}`).join('&');
}

/**
 * The version the negotiation filter reads from Accept, as it reads `str(req.accept)` (webob's tidied
 * header): `undefined` when the header does not start with the versioned media type, so the path
 * names the version. The tidied form keeps every range and every parameter but `q=1`, so a version
 * followed by anything is no version Glance knows.
 */
function acceptedVersion(accept: string | string[] | undefined): string | undefined {
  if (typeof accept !== 'string' || accept.startsWith(',')) return undefined;
  const ranges = accept.split(',').map((range) => range.trim()).filter((range) => range !== '');
  const [mediaType = '', ...params] = (ranges[0] ?? '').split(';').map((part) => part.trim());
  if (!mediaType.startsWith(VERSIONED_MEDIA_TYPE)) return undefined;
  const plain = ranges.length === 1 && params.every((param) => /^q=1(\.0{0,3})?$/i.test(param));
  return plain ? mediaType.slice(VERSIONED_MEDIA_TYPE.length) : `${mediaType.slice(VERSIONED_MEDIA_TYPE.length)};`;
}
