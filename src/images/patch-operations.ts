/**
 * Glance's reading of an image PATCH (glance/api/v2/images.py, RequestDeserializer.update), step by step
 * and with its messages, so that the proxy finds the property each operation really changes (Glance
 * strips and unescapes pointer tokens, and drops every leading "/") and, when it must answer itself,
 * answers as Glance would.
 */
import { lastMember, type JsonNode } from './glance-json';
import { pythonStrip } from './python-int';
import { pythonStr } from './python-repr';

export type PatchDialect = 'json-patch-v2.0' | 'json-patch-v2.1';

const MEDIA_TYPES: Readonly<Record<string, PatchDialect>> = {
  'application/openstack-images-v2.0-json-patch': 'json-patch-v2.0',
  'application/openstack-images-v2.1-json-patch': 'json-patch-v2.1',
};

/** Glance's Accept-Patch header value: its media types, sorted, joined by ", ". */
export const ACCEPT_PATCH = Object.keys(MEDIA_TYPES).sort().join(', ');

/**
 * Media types compare case-insensitively and may carry parameters (`; charset=UTF-8`). Glance (webob)
 * compares the text before ";" exactly, so a request spelled otherwise passes here and still gets
 * Glance's own 415.
 */
export function patchDialect(contentType: string | undefined): PatchDialect | undefined {
  const mediaType = (contentType ?? '').split(';', 1)[0]?.trim().toLowerCase() ?? '';
  return Object.hasOwn(MEDIA_TYPES, mediaType) ? MEDIA_TYPES[mediaType] : undefined;
}

const OPERATIONS = ['add', 'remove', 'replace'] as const;
export type OperationName = (typeof OPERATIONS)[number];

export interface PatchOperation {
  readonly op: OperationName;
  /** The decoded pointer tokens, e.g. ["cache_raw"]. */
  readonly path: readonly string[];
  /** The new value; absent for remove. */
  readonly value: JsonNode | undefined;
}

/**
 * `glanceFails`: Glance itself would not answer this refusal but fail with a 500 (a pointer that is not a
 * string reaches `pointer.startswith('/')`, an AttributeError); the message is the 400 it means to give.
 */
export type ReadOperation = { ok: true; operation: PatchOperation } | { ok: false; message: string; glanceFails: boolean };

class Refused extends Error {
  constructor(
    message: string,
    readonly glanceFails = false,
  ) {
    super(message);
  }
}

const AVAILABLE = OPERATIONS.join(', ');

/** Glance's result for one operation object: the change it makes, or the 400 message it answers. */
export function readOperation(raw: JsonNode, dialect: PatchDialect): ReadOperation {
  try {
    if (raw.kind !== 'object') throw new Refused('Operations must be JSON objects.');
    const { op, pointer } = dialect === 'json-patch-v2.1' ? operationV21(raw) : operationV20(raw);
    const path = decodePointer(pointer);
    refuseBannedTokens(path);
    const root = path[0] ?? '';
    // Only locations may be reached two levels down (`_path_depth_limits`).
    const depth = root === 'locations' && op !== 'replace' ? 2 : 1;
    if (path.length !== depth) throw new Refused(invalidPointer(path));
    if (op === 'remove') return { ok: true, operation: { op, path, value: undefined } };
    const value = lastMember(raw, 'value');
    if (value === undefined) throw new Refused(`Operation "${op}" requires a member named "value".`);
    return { ok: true, operation: { op, path, value } };
  } catch (error) {
    if (error instanceof Refused) return { ok: false, message: error.message, glanceFails: error.glanceFails };
    throw error;
  }
}

/** Every pointer token an operation names under any spelling Glance accepts, valid or not. */
export function namedTokens(raw: JsonNode): string[] {
  if (raw.kind !== 'object') return [];
  return raw.members
    .filter((member) => member.key === 'path' || (OPERATIONS as readonly string[]).includes(member.key))
    .flatMap((member) => (member.value.kind === 'string' ? splitPointer(member.value.value) : []));
}

/** A token that would reach a JavaScript object's prototype if any code ever applied this path. */
export function isBannedToken(path: readonly string[], index: number): boolean {
  return path[index] === '__proto__' || (path[index] === 'prototype' && path[index - 1] === 'constructor');
}

function operationV21(raw: Extract<JsonNode, { kind: 'object' }>): { op: OperationName; pointer: JsonNode } {
  const op = lastMember(raw, 'op');
  if (op === undefined || op.kind === 'null') {
    throw new Refused(`Unable to find \`op\` in JSON Schema change. It must be one of the following: ${AVAILABLE}.`);
  }
  const name = op.kind === 'string' ? OPERATIONS.find((candidate) => candidate === op.value) : undefined;
  if (name === undefined) {
    throw new Refused(`Invalid operation: \`${pythonStr(op)}\`. It must be one of the following: ${AVAILABLE}.`);
  }
  const pointer = lastMember(raw, 'path');
  if (pointer === undefined) throw new Refused("Unable to find 'path' in JSON Schema change");
  return { op: name, pointer };
}

function operationV20(raw: Extract<JsonNode, { kind: 'object' }>): { op: OperationName; pointer: JsonNode } {
  const present = OPERATIONS.filter((name) => raw.members.some((member) => member.key === name));
  if (present.length > 1) {
    throw new Refused('Operation objects must contain only one member named "add", "remove", or "replace".');
  }
  const op = present[0];
  if (op === undefined) {
    throw new Refused('Operation objects must contain exactly one member named "add", "remove", or "replace".');
  }
  return { op, pointer: lastMember(raw, op) as JsonNode };
}

function decodePointer(node: JsonNode): string[] {
  if (node.kind !== 'string') throw new Refused(`Pointer \`${pythonStr(node)}\` does not start with "/".`, true);
  const pointer = node.value;
  if (!pointer.startsWith('/')) throw new Refused(`Pointer \`${pointer}\` does not start with "/".`);
  if (hasAdjacentSlashes(pointer.slice(1))) {
    throw new Refused(`Pointer \`${pointer}\` contains adjacent "/".`);
  }
  if (pointer.length > 1 && pointer.endsWith('/')) throw new Refused(`Pointer \`${pointer}\` end with "/".`);
  if (pythonStrip(pointer.slice(1)) === '/') throw new Refused(`Pointer \`${pointer}\` does not contains valid token.`);
  if (/~[^01]/u.test(pointer) || pointer.endsWith('~')) {
    throw new Refused(`Pointer \`${pointer}\` contains "~" not part of a recognized escape sequence.`);
  }
  return splitPointer(pointer);
}

/** Python's `re.search(r'/\s*?/', ...)`: two slashes with only (Unicode) whitespace between them. */
function hasAdjacentSlashes(text: string): boolean {
  const parts = text.split('/');
  return parts.slice(1, -1).some((between) => pythonStrip(between) === '');
}

function splitPointer(pointer: string): string[] {
  return pointer
    .replace(/^\/+/u, '')
    .split('/')
    .map((token) => pythonStrip(token.split('~1').join('/').split('~0').join('~')));
}

function refuseBannedTokens(path: readonly string[]): void {
  if (path.some((_, index) => isBannedToken(path, index))) throw new Refused(invalidPointer(path));
}

function invalidPointer(path: readonly string[]): string {
  return `Invalid JSON pointer for this resource: '/${path.join('/')}'`;
}
