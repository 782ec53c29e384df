import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SECOND_STORE } from '../../fixtures/glance-route-spellings';
import type { ImageKind } from './request-gate-cases';

/**
 * How the request-gate suite reads an image that Glance itself stores: what of it a request can
 * change (its summary), whether its StarlingX values are the stored forms the rules allow, and which
 * raw-cache trigger a change to it calls for. Pure functions over Glance's JSON.
 */

export type Image = Record<string, unknown> & { id: string; status: string };

interface TableProperty {
  readOnly?: boolean;
  enum?: string[];
  pattern?: string;
}

/** The one table of the extension properties (schemas/stx-image-properties.json), read as it is. */
const TABLE = JSON.parse(readFileSync(join(__dirname, '..', '..', '..', 'schemas', 'stx-image-properties.json'), 'utf8')) as {
  properties: Record<string, TableProperty>;
};

export const READ_ONLY_PROPERTIES = Object.keys(TABLE.properties).filter((name) => TABLE.properties[name].readOnly === true);
export const WRITABLE_PROPERTIES = Object.keys(TABLE.properties).filter((name) => TABLE.properties[name].readOnly !== true);
const RAW_CACHE_FIELDS = READ_ONLY_PROPERTIES.filter((name) => name.startsWith('cache_raw_'));

/** True when `value` is a stored form the table allows for the writable property `name`. */
export function isStoredForm(name: string, value: unknown): boolean {
  const rule = TABLE.properties[name];
  if (typeof value !== 'string') return false;
  if (rule.enum) return rule.enum.includes(value);
  return new RegExp(rule.pattern!).test(value);
}

/**
 * The value a writable property means, so that what Glance alone stored ("true", " 0400 ") compares
 * equal to what the proxy stores ("True", "400"). Anything else is kept as it is.
 */
export function meaning(name: string, value: unknown): unknown {
  const rule = TABLE.properties[name];
  if (typeof value !== 'string') return value;
  if (rule.enum) return rule.enum.find((allowed) => allowed.toLowerCase() === value.toLowerCase()) ?? value;
  return /^\s*[+-]?[0-9]+\s*$/.test(value) ? BigInt(value.trim()).toString() : value;
}

/**
 * Glance has accepted an import of the staged data: it names the import task at once, before the
 * task moves the image to importing and then active in the background.
 */
function importStarted(image: Image): boolean {
  return image.status === 'importing' || image.status === 'active' || typeof image.os_glance_import_task === 'string';
}

/** Fields that differ between two images however alike (ids, times, links) or that the suite adds. */
const INCIDENTAL = new Set(['id', 'created_at', 'updated_at', 'self', 'file', 'schema', 'direct_url', 'locations', 'owner']);
/** Data fields an asynchronous import fills in at its own pace. */
const IMPORT_FILLED = ['size', 'virtual_size', 'checksum', 'os_hash_algo', 'os_hash_value', 'stores'];

export type Summary = Record<string, unknown>;

/**
 * What a request can have changed on an image, comparable between two images of the same kind:
 * incidental fields dropped, extension values by meaning, lists sorted. An import finishes in the
 * background, so on an image that was staged "importing" and "active" are one state.
 */
export function summarize(image: Image, kind: ImageKind | 'created'): Summary {
  const summary: Summary = {};
  for (const key of Object.keys(image).sort()) {
    if (INCIDENTAL.has(key) || key.startsWith('stx_gate_') || key.startsWith('os_glance_')) continue;
    const value = image[key];
    if (WRITABLE_PROPERTIES.includes(key)) summary[key] = meaning(key, value);
    else if (key === 'stores' && typeof value === 'string') summary[key] = value.split(',').sort().join(',');
    else if (key === 'tags' && Array.isArray(value)) summary[key] = [...value].sort();
    else summary[key] = value;
  }
  if (kind === 'staged' && importStarted(image)) {
    summary.status = 'imported';
    for (const key of IMPORT_FILLED) delete summary[key];
  }
  if (kind === 'created') summary.id_in_lower_case = image.id === image.id.toLowerCase();
  return summary;
}

/** What is wrong with the StarlingX values Glance stores for an image, given the read-only values the suite set itself. */
export function valueProblems(image: Image, setByTheSuite: Readonly<Record<string, string>> = {}): string[] {
  const problems: string[] = [];
  for (const name of WRITABLE_PROPERTIES) {
    if (name in image && !isStoredForm(name, image[name])) problems.push(`${name}=${JSON.stringify(image[name])} is not a stored form the rules allow`);
  }
  for (const name of READ_ONLY_PROPERTIES) {
    if (name in image && image[name] !== setByTheSuite[name]) problems.push(`${name}=${JSON.stringify(image[name])} was written by a client`);
  }
  return problems;
}

export interface TriggerNeed {
  /** The job reason the change calls for; undefined: any reason. */
  reason?: 'upload' | 'import' | 'update' | 'delete';
  change: string;
}

const isTrue = (value: unknown): boolean => meaning('cache_raw', value) === 'True';
const storesOf = (image: Image): string[] => (typeof image.stores === 'string' ? image.stores.split(',') : []);

/**
 * The raw-cache job a change to an image calls for, read from the image as Glance stores it before
 * and after the request (undefined: none): the data changed, or cache_raw was turned on or off.
 */
export function triggerNeeded(kind: ImageKind, before: Image, after: Image | undefined): TriggerNeed | undefined {
  if (after === undefined) return { reason: 'delete', change: 'the image was deleted' };
  if (kind === 'queued' && after.status === 'active') return { reason: 'upload', change: 'the image got data' };
  if (kind === 'staged' && importStarted(after)) return { reason: 'import', change: 'the staged data is being imported' };
  if (kind === 'two-store' && !storesOf(after).includes(SECOND_STORE)) return { change: `the data was deleted from store ${SECOND_STORE}` };
  if (after.status === 'active' && isTrue(after.cache_raw) && !isTrue(before.cache_raw)) return { reason: 'update', change: 'cache_raw was turned on' };
  const hadRawCache = RAW_CACHE_FIELDS.some((field) => field in before);
  if (hadRawCache && isTrue(before.cache_raw) && !isTrue(after.cache_raw)) return { reason: 'update', change: 'cache_raw was turned off' };
  return undefined;
}
