import { RawCacheError } from '../types';

/**
 * Names of raw copies and of everything the worker writes on the way to one, computed from the
 * image id and, for files in flight, the attempt tag of the process writing them
 * (`<host>-<pid>-<process>-<random>`, see ../writer.ts). Every path and RBD name is built only
 * after the id has been proven a UUID (defense in depth: the id reaches a shell-free argv, a path
 * and an rbd:<pool>/<name> spec, where "../" or ":" would mean something).
 */

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const UUID_SOURCE = '[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}';
/** The attempt part of a name: a writer's tag, or the bare hex of names written before tags. */
const ATTEMPT_SOURCE = '[0-9a-z-]+';

export function isImageId(value: string): boolean {
  return UUID.test(value);
}

export function assertImageId(imageId: string): void {
  if (typeof imageId !== 'string' || !UUID.test(imageId)) {
    throw new RawCacheError(`'${String(imageId).slice(0, 80)}' is not an image id (a UUID): no raw copy is named after it`, true);
  }
}

/** file target: `<id>.raw`, and `<id>.raw.partial-<attempt>` while a write is in flight. */
export const fileNames = {
  copy: (imageId: string): string => `${imageId}.raw`,
  partial: (imageId: string, attempt: string): string => `${imageId}.raw.partial-${attempt}`,
  pattern: new RegExp(`^(${UUID_SOURCE})\\.raw(\\.partial-${ATTEMPT_SOURCE})?$`),
  /** A partial: groups 1 the image id, 2 the attempt. */
  partialPattern: new RegExp(`^(${UUID_SOURCE})\\.raw\\.partial-(${ATTEMPT_SOURCE})$`),
};

/**
 * rbd target: `<id>_raw` (StarlingX's name) and `<id>_raw_partial-<attempt>` while a write is in
 * flight (`<id>_raw_partial` alone: written by a version that named partials per image).
 */
export const rbdNames = {
  copy: (imageId: string): string => `${imageId}_raw`,
  partial: (imageId: string, attempt: string): string => `${imageId}_raw_partial-${attempt}`,
  pattern: new RegExp(`^(${UUID_SOURCE})_raw(_partial(-${ATTEMPT_SOURCE})?)?$`),
  /** A partial: groups 1 the image id, 2 the attempt (undefined for the per-image name). */
  partialPattern: new RegExp(`^(${UUID_SOURCE})_raw_partial(?:-(${ATTEMPT_SOURCE}))?$`),
};

/**
 * The worker's work dir: `<id>.src.<attempt>`, the verified download, and (rbd target, import write
 * mode) `<id>.raw-import.<attempt>`, the raw file `rbd import` reads.
 */
export const workNames = {
  source: (imageId: string, attempt: string): string => `${imageId}.src.${attempt}`,
  rawImport: (imageId: string, attempt: string): string => `${imageId}.raw-import.${attempt}`,
  /** Either: groups 1 the image id, 2 the attempt. */
  pattern: new RegExp(`^(${UUID_SOURCE})\\.(?:src|raw-import)\\.(${ATTEMPT_SOURCE})$`),
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
