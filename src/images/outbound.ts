import { pythonJson } from '../http/python-json';
import { pendingView, type CachedImage } from '../rawcache/state';
import { storeRule } from './rules';

export interface EnrichContext {
  /** Glance backend id (as listed in an image's `stores`) -> store type, e.g. { fs: 'file', ceph: 'rbd' }. */
  readonly storeTypes: Readonly<Record<string, string>>;
  /**
   * The raw cache records a job for every image whose data arrives: until a worker writes its first
   * state, such an image is shown `Queued` with size "-", as StarlingX showed it right after upload.
   */
  readonly rawCacheEnabled?: boolean;
}

type JsonObject = { readonly [key: string]: unknown };

function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * The image as Glance sent it, with `store` computed from where its data lives. StarlingX wrote `store`
 * once, at upload; computing it on every read also covers imported images and never trusts a value a
 * user stored. Every other field keeps Glance's order and value.
 */
export function enrichImage(image: unknown, ctx: EnrichContext): unknown {
  if (!isJsonObject(image)) return image;
  const store = derivedStore(image, ctx);
  // fromEntries defines keys as own data properties, so a "__proto__" property stays an ordinary key.
  const fields: Array<[string, unknown]> = Object.entries(image).filter(([key]) => key !== storeRule.name);
  const pending = ctx.rawCacheEnabled ? pendingView(image as unknown as CachedImage) : undefined;
  if (pending) fields.push(...Object.entries(pending));
  return Object.fromEntries(store === undefined ? fields : [...fields, [storeRule.name, store]]);
}

/**
 * The same answer as `enrichImage`, as bytes: when Glance's image has no `store` of its own, the
 * enriched image is Glance's with fields added at the end, so the added fields are written after
 * Glance's own bytes, which go on as they are (never parsed and written again). `raw` is the text
 * `image` was parsed from.
 */
export function enrichImageBytes(image: unknown, raw: Buffer, ctx: EnrichContext): unknown {
  if (!isJsonObject(image) || Object.hasOwn(image, storeRule.name)) return enrichImage(image, ctx);
  const added: Array<[string, unknown]> = [];
  const pending = ctx.rawCacheEnabled ? pendingView(image as unknown as CachedImage) : undefined;
  if (pending) added.push(...Object.entries(pending).filter(([key]) => !Object.hasOwn(image, key)));
  // A pending field Glance already has keeps Glance's position in enrichImage: not a plain addition.
  if (pending && added.length < Object.keys(pending).length) return enrichImage(image, ctx);
  const store = derivedStore(image, ctx);
  if (store !== undefined) added.push([storeRule.name, store]);
  if (added.length === 0) return raw;
  const close = raw.lastIndexOf(0x7d);
  let text = added.map(([key, value]) => `${pythonJson(key)}: ${pythonJson(value)}`).join(', ');
  if (Object.keys(image).length > 0) text = `, ${text}`;
  return Buffer.concat([raw.subarray(0, close), Buffer.from(text, 'utf8'), raw.subarray(close)]);
}

/** A list page (`{"images": [...], "first": ..., "next": ...}`) with each image enriched. */
export function enrichImageList(body: unknown, ctx: EnrichContext): unknown {
  if (!isJsonObject(body) || !Array.isArray(body.images)) return body;
  const images: unknown[] = body.images;
  return Object.fromEntries(
    Object.entries(body).map(([key, value]) => [key, key === 'images' ? images.map((image) => enrichImage(image, ctx)) : value]),
  );
}

/**
 * Sources, most precise first: the schemes of `locations[].url`, then of `direct_url` (both hidden unless
 * Glance shows them), then the backend ids in `stores` (multi-store Glance only). An image with no data
 * yet has none of them, and no `store`.
 */
function derivedStore(image: JsonObject, ctx: EnrichContext): string | undefined {
  const locations = Array.isArray(image.locations) ? (image.locations as unknown[]) : [];
  const locationUrls = locations.map((location) => (isJsonObject(location) ? location.url : undefined));
  const sources = [
    locationUrls.map(urlScheme),
    [urlScheme(image.direct_url)],
    typeof image.stores === 'string' ? image.stores.split(',').map((id) => backendType(id.trim(), ctx)) : [],
  ];
  for (const candidates of sources) {
    const types = knownTypes(candidates);
    if (types.length > 0) return types.join(storeRule.list.separator);
  }
  return undefined;
}

function urlScheme(url: unknown): string | undefined {
  if (typeof url !== 'string') return undefined;
  const colon = url.indexOf(':');
  return colon > 0 ? url.slice(0, colon).toLowerCase() : undefined;
}

function backendType(backendId: string, ctx: EnrichContext): string | undefined {
  return Object.hasOwn(ctx.storeTypes, backendId) ? ctx.storeTypes[backendId] : undefined;
}

/** The table's store types among `candidates`, each once, in the order first seen. */
function knownTypes(candidates: readonly (string | undefined)[]): string[] {
  const types: string[] = [];
  for (const candidate of candidates) {
    if (candidate !== undefined && storeRule.list.values.includes(candidate) && !types.includes(candidate)) {
      types.push(candidate);
    }
  }
  return types;
}
