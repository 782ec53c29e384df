import { RawCacheError } from '../types';

/**
 * Names of raw copies, computed from the image id alone. Every path and RBD name is built only
 * after the id has been proven a UUID (defense in depth: the id reaches a shell-free argv, a path
 * and an rbd:<pool>/<name> spec, where "../" or ":" would mean something).
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const UUID_SOURCE = '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}';

export function isImageId(value: string): boolean {
  return UUID.test(value);
}

export function assertImageId(imageId: string): void {
  if (typeof imageId !== 'string' || !UUID.test(imageId)) {
    throw new RawCacheError(`'${String(imageId).slice(0, 80)}' is not an image id (a UUID): no raw copy is named after it`, true);
  }
}

/** file target: `<id>.raw`, and `<id>.raw.partial-<hex>` while a write is in flight. */
export const fileNames = {
  copy: (imageId: string): string => `${imageId}.raw`,
  partial: (imageId: string, random: string): string => `${imageId}.raw.partial-${random}`,
  pattern: new RegExp(`^(${UUID_SOURCE})\\.raw(\\.partial-[0-9a-f]+)?$`),
};

/** rbd target: `<id>_raw` (StarlingX's name) and `<id>_raw_partial` while a write is in flight. */
export const rbdNames = {
  copy: (imageId: string): string => `${imageId}_raw`,
  partial: (imageId: string): string => `${imageId}_raw_partial`,
  pattern: new RegExp(`^(${UUID_SOURCE})_raw(_partial)?$`),
};

/** Image ids named by a listing of copies, each once, in listing order. */
export function idsFromNames(names: Iterable<string>, pattern: RegExp): string[] {
  const ids = new Set<string>();
  for (const name of names) {
    const match = pattern.exec(name);
    if (match) ids.add(match[1]);
  }
  return [...ids];
}
