import type { IncomingMessage, ServerResponse } from 'node:http';
import { pythonJson } from './python-json';
import { requestIdOf } from './request-id';

/**
 * Error bodies in the exact shape Glance's WebOb exceptions produce, so that clients which parse
 * Glance errors (glanceclient reads the HTML, openstacksdk the JSON or HTML) show ours the same way.
 * The format follows the request's Accept header as webob.exc.WSGIHTTPException.generate_response does,
 * except where no preference is stated (see renderReadableError).
 */

export type ErrorFlavor = 'html' | 'json' | 'plain';

const TITLES: Record<number, string> = {
  400: 'Bad Request',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  413: 'Request Entity Too Large',
  415: 'Unsupported Media Type',
  431: 'Request Header Fields Too Large',
  500: 'Internal Server Error',
  502: 'Bad Gateway',
  503: 'Service Unavailable',
  504: 'Gateway Timeout',
};

/** WebOb's default explanations for the statuses the proxy emits on its own. */
export const DEFAULT_EXPLANATIONS: Record<number, string> = {
  502: 'Bad gateway.',
  503: 'The server is currently unavailable. Please try again at a later time.',
  504: 'The gateway has timed out.',
};

export interface MediaRange { type: string; subtype: string; q: number }

function parseAccept(header: string): MediaRange[] {
  const ranges: MediaRange[] = [];
  for (const part of header.split(',')) {
    const [mediaType, ...params] = part.trim().split(';');
    const [type, subtype] = mediaType.trim().toLowerCase().split('/');
    if (!type || !subtype) continue;
    let q = 1;
    for (const param of params) {
      const [k, v] = param.trim().split('=');
      if (k?.trim().toLowerCase() === 'q') q = Number(v);
    }
    if (Number.isFinite(q)) ranges.push({ type, subtype, q });
  }
  return ranges;
}

/**
 * WebOb's quality of `offer` under `ranges`: that of the most specific range matching it (the exact
 * type, then the type with any subtype, then any type); -1 when none matches.
 */
export function qualityOf(offer: string, ranges: readonly MediaRange[]): number {
  const [type, subtype] = offer.split('/');
  let best = -1;
  let bestSpecificity = -1;
  for (const r of ranges) {
    const specificity = r.type === type && r.subtype === subtype ? 2 : r.type === type && r.subtype === '*' ? 1 : r.type === '*' && r.subtype === '*' ? 0 : -1;
    if (specificity > bestSpecificity) {
      bestSpecificity = specificity;
      best = r.q;
    }
  }
  return best;
}

/**
 * Which body Glance would send for this Accept header. Measured on Glance 25: a request without
 * Accept, or with an empty one, gets plain text; "any type" (curl, glanceclient) gets HTML.
 */
export function errorFlavor(accept: string | undefined): ErrorFlavor {
  if (accept === undefined) return 'plain';
  const ranges = parseAccept(accept);
  const offers: Array<[ErrorFlavor, string]> = [['html', 'text/html'], ['json', 'application/json']];
  let chosen: ErrorFlavor = 'plain';
  let chosenQ = 0;
  for (const [flavor, offer] of offers) {
    const q = qualityOf(offer, ranges);
    if (q > chosenQ) {
      chosen = flavor;
      chosenQ = q;
    }
  }
  return chosen;
}

function htmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#x27;');
}

function stripTags(s: string): string {
  return s.replace(/\n/g, ' ').replace(/\r/g, '').replace(/<br.*?>/gis, '\n').replace(/<!--.*?-->/gs, '').replace(/<[^<]*?>/gs, '');
}

export interface GlanceErrorBody { contentType: string; body: string }

/** Renders `explanation` (and an optional `detail`) as webob.exc.HTTPException would for `status`. */
export function renderGlanceError(status: number, explanation: string, flavor: ErrorFlavor, detail = ''): GlanceErrorBody {
  const title = TITLES[status] ?? 'Error';
  const statusLine = `${status} ${title}`;
  // HTTPUnsupportedMediaType has its own body template in WebOb; every other status shares the default one.
  const template = status === 415
    ? (escape: (s: string) => string) => `${escape(explanation)}\n<br /><br />\n${escape(detail)}`
    : (escape: (s: string) => string) => `${escape(explanation)}<br /><br />\n${escape(detail)}\n\n`;
  switch (flavor) {
    case 'json':
      return {
        contentType: 'application/json',
        body: pythonJson({ message: template((s) => s), code: statusLine, title }),
      };
    case 'plain':
      return { contentType: 'text/plain; charset=UTF-8', body: `${statusLine}\n\n${stripTags(template((s) => s))}` };
    default:
      return {
        contentType: 'text/html; charset=UTF-8',
        body: `<html>\n <head>\n  <title>${statusLine}</title>\n </head>\n <body>\n  <h1>${statusLine}</h1>\n  ${template(htmlEscape)}\n </body>\n</html>`,
      };
  }
}

/**
 * The body of an error the proxy itself produces for a client that stated no preference (no Accept,
 * or an empty one). Glance would send plain text, which openstacksdk (and so the `openstack` CLI,
 * Nova's and Cinder's SDK-based code) cannot read: it shows only the reason phrase. openstacksdk
 * sends its image updates (PATCH) with an empty Accept, so a StarlingX refusal of `openstack image
 * set` would reach the user as a bare "Bad Request". JSON with the message under one object is read
 * by openstacksdk (a `message` in any top-level object) and by python-glanceclient (a `message` in
 * every top-level value, which webob's flat JSON form would break).
 */
export function renderReadableError(status: number, explanation: string, detail = ''): GlanceErrorBody {
  const title = TITLES[status] ?? 'Error';
  const message = detail ? `${explanation}\n\n${detail}` : explanation;
  return { contentType: 'application/json', body: pythonJson({ error: { message, code: status, title } }) };
}

/** True when the client asked for no media type at all: no Accept header, or an empty one. */
export function statesNoPreference(accept: string | undefined): boolean {
  return accept === undefined || accept.trim() === '';
}

export interface SendErrorOptions { detail?: string; headers?: Record<string, string> }

/**
 * Answers a request with a Glance-style error, carrying the request id as Glance's own errors do,
 * unless the response has already started (then it is cut). The body follows the Accept header as
 * Glance's would, except that a client that states no preference gets JSON every OpenStack client
 * reads (renderReadableError) rather than Glance's plain text. Errors Glance itself sends pass
 * through as Glance wrote them; this is only for the proxy's own.
 */
export function sendGlanceError(
  req: IncomingMessage,
  res: ServerResponse,
  status: number,
  explanation: string,
  options: SendErrorOptions = {},
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const accept = req.headers.accept;
  const { contentType, body } = statesNoPreference(accept)
    ? renderReadableError(status, explanation, options.detail)
    : renderGlanceError(status, explanation, errorFlavor(accept), options.detail);
  const headers: Record<string, string> = {
    ...options.headers,
    'Content-Type': contentType,
    'Content-Length': String(Buffer.byteLength(body)),
  };
  headers['X-Openstack-Request-Id'] = requestIdOf(req);
  res.writeHead(status, headers);
  res.end(body);
}
