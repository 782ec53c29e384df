import type { HttpResponse } from './http';

/**
 * Turns an HTTP exchange into a form that can be compared across two runs of the same scenario:
 * ids, dates, request ids and host:port pairs are masked, set-like fields sorted. Ids are
 * numbered in order of first appearance, so "the same image" stays the same placeholder.
 */
export interface NormalizedExchange {
  step: string;
  status: number;
  headers: Record<string, string>;
  body: unknown;
}

/** Headers whose value says nothing about transparency (or is compared elsewhere). */
const IGNORED_HEADERS = new Set(['date', 'connection', 'keep-alive', 'transfer-encoding']);
/** Headers whose presence matters but whose value is unstable in Glance itself. */
const PRESENCE_ONLY = new Set(['openstack-image-store-ids']);

const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;
const REQUEST_ID = /req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/g;
const TIMESTAMP = /\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?/g;
const HOST_PORT = /(127\.0\.0\.1|localhost):\d+/g;

export class Masker {
  private readonly ids = new Map<string, string>();
  constructor(private readonly runTag: string) {}

  text(value: string): string {
    return value
      .split(this.runTag)
      .join('<run>')
      .replace(REQUEST_ID, 'req-<id>')
      .replace(UUID, (id) => {
        if (!this.ids.has(id)) this.ids.set(id, `<uuid-${this.ids.size + 1}>`);
        return this.ids.get(id)!;
      })
      .replace(TIMESTAMP, '<time>')
      .replace(HOST_PORT, '<host>');
  }

  value(value: unknown, key?: string): unknown {
    if (typeof value === 'string') return this.text(value);
    if (Array.isArray(value)) {
      const items = value.map((v) => this.value(v));
      // Glance keeps tags in a set: their order is not part of the answer.
      return key === 'tags' ? [...items].sort() : items;
    }
    if (value !== null && typeof value === 'object') {
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(value).sort()) out[this.text(k)] = this.value((value as Record<string, unknown>)[k], k);
      return out;
    }
    return value;
  }
}

export function normalizeExchange(step: string, res: HttpResponse, masker: Masker): NormalizedExchange {
  const headers: Record<string, string> = {};
  const isJson = /^application\/json/i.test(res.header('content-type') ?? '');
  for (const [name, values] of Object.entries(res.headers)) {
    if (IGNORED_HEADERS.has(name)) continue;
    // A JSON body is compared parsed; its length follows from it.
    if (name === 'content-length' && isJson) continue;
    headers[name] = PRESENCE_ONLY.has(name) ? '<present>' : masker.text(values.join(', '));
  }
  let body: unknown = res.body.length === 0 ? '' : masker.text(res.text());
  if (isJson && res.body.length > 0) body = masker.value(res.json());
  else if (/octet-stream/i.test(res.header('content-type') ?? '')) body = `<${res.body.length} bytes>`;
  return { step, status: res.status, headers, body };
}
