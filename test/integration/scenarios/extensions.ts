import { propertyRules } from '../../../src/images/rules';
import type { NormalizedExchange } from '../../harness/normalize';

/**
 * Removes what the proxy adds on purpose, so the rest can be compared with Glance's own answer:
 * the derived `store` on image bodies and the extension properties in the image schemas. What
 * they contain is tested on its own.
 */
export function stripExtensions(exchange: NormalizedExchange): NormalizedExchange {
  if (exchange.step.startsWith('GET /v2/schemas/image')) return { ...exchange, body: stripSchema(exchange.body) };
  return { ...exchange, body: strip(exchange.body) };
}

function stripSchema(body: unknown): unknown {
  const schema = body as { properties?: Record<string, unknown>; name?: string };
  if (schema?.name === 'images') {
    const images = schema.properties?.images as { items?: unknown } | undefined;
    return { ...schema, properties: { ...schema.properties, images: { ...images, items: stripSchema(images?.items) } } };
  }
  const properties = { ...schema?.properties };
  for (const rule of propertyRules) delete properties[rule.name];
  return { ...schema, properties };
}

function isImage(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && (value as Record<string, unknown>).schema === '/v2/schemas/image';
}

function strip(body: unknown): unknown {
  if (isImage(body)) {
    const { store: _store, ...rest } = body;
    return rest;
  }
  if (body !== null && typeof body === 'object' && Array.isArray((body as Record<string, unknown>).images)) {
    return { ...(body as Record<string, unknown>), images: ((body as Record<string, unknown>).images as unknown[]).map(strip) };
  }
  return body;
}
