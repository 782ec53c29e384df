import { applyEdits, lastMember, parseGlanceJson, type JsonNode, type TextEdit } from './glance-json';
import { ACCEPT_PATCH, isBannedToken, namedTokens, patchDialect, readOperation, type PatchDialect } from './patch-operations';
import { canonicalEdit, normalizePropertyValue } from './property-values';
import { findRule, findWritableRule, isReadOnlyProperty } from './rules';

export interface InboundRejection {
  status: 400 | 403 | 415;
  /** Glance's explanation text; the HTTP layer renders it the way Glance renders errors. */
  message: string;
  headers?: Record<string, string>;
}

/**
 * The verdict on a decoded body: the edits that make it canonical (none: forward the client's bytes
 * untouched, so Glance gives its own answer, errors included), or the proxy's own refusal.
 */
export type InboundReview = { ok: true; edits: readonly TextEdit[] } | { ok: false; rejection: InboundRejection };

/** The same verdict on a body's text: `body` is what to forward to Glance, `changed` whether it was edited. */
export type InboundResult =
  | { ok: true; body: string; changed: boolean; edits: readonly TextEdit[] }
  | { ok: false; rejection: InboundRejection };

const readOnly = (name: string): InboundRejection => ({ status: 403, message: `Attribute '${name}' is read-only.` });
const unchanged: InboundReview = { ok: true, edits: [] };
const rejected = (rejection: InboundRejection): InboundReview => ({ ok: false, rejection });
const edited = (edits: readonly TextEdit[]): InboundReview => ({ ok: true, edits });

function onText(bodyText: string, review: InboundReview): InboundResult {
  if (!review.ok) return review;
  const changed = review.edits.length > 0;
  return { ok: true, body: changed ? applyEdits(bodyText, review.edits) : bodyText, changed, edits: review.edits };
}

/** Glance's image id pattern, matched as a whole (Python's `$` would also take a trailing newline). */
const IMAGE_ID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** POST /v2/images, on the body's text. */
export function normalizeCreateRequest(bodyText: string): InboundResult {
  return onText(bodyText, reviewCreateRequest(parseGlanceJson(bodyText)));
}

/** PATCH /v2/images/{id}, on the body's text. */
export function normalizePatchRequest(contentType: string | undefined, bodyText: string): InboundResult {
  return onText(bodyText, reviewPatchRequest(contentType, parseGlanceJson(bodyText)));
}

/**
 * POST /v2/images. Glance reads the body as JSON whatever its Content-Type, and so does this.
 * `document` is the body as Glance decodes it (undefined when it could not).
 */
export function reviewCreateRequest(document: JsonNode | undefined): InboundReview {
  if (document?.kind !== 'object') return unchanged;
  for (const { key } of document.members) {
    // Glance would store it as a property, and JavaScript code reading the image back could then set a prototype.
    if (key === '__proto__') return rejected({ status: 403, message: `Attribute '${key}' is reserved.` });
    // Glance refuses its own read-only attributes (403) before validating any value (400); so does this.
    if (isReadOnlyProperty(key)) return rejected(readOnly(key));
  }
  const edits: TextEdit[] = [];
  // Image ids are canonical (lower case) everywhere: MySQL matches them without regard to case, so two
  // spellings of one id would be one image there and two images on another database.
  const id = lastMember(document, 'id');
  if (id?.kind === 'string') {
    if (!IMAGE_ID.test(id.value)) return rejected({ status: 400, message: `The image id ${JSON.stringify(id.value)} is not a UUID.` });
    if (id.value !== id.value.toLowerCase()) edits.push({ start: id.start, end: id.end, text: JSON.stringify(id.value.toLowerCase()) });
  }
  for (const { key, value } of document.members) {
    const rule = findWritableRule(key);
    if (rule === undefined || lastMember(document, key) !== value) continue;
    const result = normalizePropertyValue(rule, value);
    if (!result.ok) return rejected({ status: 400, message: result.message });
    edits.push(...canonicalEdit(value, result.canonical));
  }
  return edited(edits);
}

/** PATCH /v2/images/{id} (JSON-patch media types v2.0 and v2.1), on the body as Glance decodes it. */
export function reviewPatchRequest(contentType: string | undefined, document: JsonNode | undefined): InboundReview {
  const dialect = patchDialect(contentType);
  if (dialect === undefined) {
    // Glance checks the media type before anything else. Without a Content-Type header, eventlet (Glance's
    // WSGI server) reports text/plain, the default of Python's email headers.
    const shown = contentType ?? 'text/plain';
    return rejected({
      status: 415,
      message: `The request media type ${shown} is not supported by this server.`,
      headers: { 'Accept-Patch': ACCEPT_PATCH },
    });
  }
  // Glance refuses a body it cannot read, or that is not an array, before applying anything.
  if (document?.kind !== 'array') return unchanged;
  const reviews = document.elements.map((raw) => reviewOperation(raw, dialect));
  // Glance stops at the first operation it refuses; answering the same way keeps a malformed operation
  // from hiding a later one that Glance might apply after all.
  const refusal = reviews.find((review) => review.rejection !== undefined);
  // An operation Glance would crash on gets the 400 Glance means to give, whatever the patch touches.
  if (refusal?.rejection !== undefined && refusal.glanceFails) return rejected(refusal.rejection);
  if (!reviews.some((review) => review.touchesExtension)) return unchanged;
  if (refusal?.rejection !== undefined) return rejected(refusal.rejection);
  return edited(reviews.flatMap((review) => review.edits));
}

interface OperationReview {
  touchesExtension: boolean;
  rejection?: InboundRejection;
  /** Glance would answer this operation with a 500 rather than refuse it. */
  glanceFails?: boolean;
  edits: TextEdit[];
}

function reviewOperation(raw: JsonNode, dialect: PatchDialect): OperationReview {
  const tokens = namedTokens(raw);
  const touchesExtension = tokens.some((token, index) => findRule(token) !== undefined || isBannedToken(tokens, index));
  const read = readOperation(raw, dialect);
  if (!read.ok) {
    return { touchesExtension, rejection: { status: 400, message: read.message }, glanceFails: read.glanceFails, edits: [] };
  }
  const { op, path, value } = read.operation;
  const name = path[0] ?? '';
  if (path.length !== 1) return { touchesExtension, edits: [] };
  if (isReadOnlyProperty(name)) return { touchesExtension, rejection: readOnly(name), edits: [] };
  const rule = findWritableRule(name);
  if (rule === undefined || op === 'remove' || value === undefined) return { touchesExtension, edits: [] };
  const result = normalizePropertyValue(rule, value);
  if (!result.ok) return { touchesExtension, rejection: { status: 400, message: result.message }, edits: [] };
  return { touchesExtension, edits: canonicalEdit(value, result.canonical) };
}

/**
 * POST /v2/images/{id}/import. Glance indexes `method` and `method.name` without checking their types
 * and answers 500 when they are not an object and a string; the proxy answers the 400 Glance means.
 */
export function checkImportRequest(document: JsonNode | undefined): InboundRejection | undefined {
  if (document?.kind !== 'object') return undefined;
  const method = lastMember(document, 'method');
  if (method === undefined) return undefined;
  if (method.kind !== 'object') return { status: 400, message: "Import request requires a 'method' object with a 'name' field." };
  const name = lastMember(method, 'name');
  if (name !== undefined && name.kind !== 'string') return { status: 400, message: "The import method's 'name' must be a string." };
  return undefined;
}
