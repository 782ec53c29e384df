import { parseRbdLocation, type RbdLocation } from '../rawcache/source';
import type { CachedImage } from '../rawcache/state';
import { rbdNames } from '../rawcache/targets/names';
import { RAW_SNAPSHOT } from '../rawcache/targets/rbd';

/**
 * What a consumer (Cinder's "volume from image") may clone, decided from the image as Glance shows it
 * alone: a pure function, so every refusal is tested without Ceph. The Ceph-side checks (the
 * snapshot exists and is protected, the destination is free) come after, in volume-from-image.ts.
 */

/** A refusal an operator reads on one line. `fallbackPossible`: a download + convert + import can still make the volume. */
export class VolumeFromImageError extends Error {
  constructor(
    message: string,
    readonly fallbackPossible = false,
  ) {
    super(message);
    this.name = 'VolumeFromImageError';
  }
}

export interface CloneRules {
  /** The fsid of the cluster the consumer talks to (`ceph fsid`). */
  fsid: string;
  /** Pools a raw copy may be cloned from. */
  imagePools: readonly string[];
}

/** The protected snapshot a volume is cloned from. */
export type CloneSource = RbdLocation;

/**
 * The RBD snapshot named by the image's cache_raw_url, when the image is Cached, the URL has the shape
 * the raw cache writes (`rbd://<fsid>/<pool>/<id>_raw/snap`), names this cluster and an allowed pool.
 * Anything else is a VolumeFromImageError saying why.
 */
export function cloneSourceOf(image: CachedImage, rules: CloneRules): CloneSource {
  const id = image.id;
  if (image.status !== 'active') throw new VolumeFromImageError(`image ${id} is ${image.status}, not active: it has no data to make a volume from`);
  const status = image.cache_raw_status;
  if (status !== 'Cached') {
    const why =
      status === undefined
        ? `it has no raw cache (cache_raw is ${image.cache_raw ?? 'not set'})`
        : `cache_raw_status is ${status}${status === 'Error' && image.cache_raw_error ? ` (${image.cache_raw_error})` : ''}`;
    throw new VolumeFromImageError(`image ${id} is not cached: ${why}`, true);
  }
  const url = image.cache_raw_url;
  if (url === undefined || url === '') {
    throw new VolumeFromImageError(`image ${id} is Cached without a cache_raw_url: its own data is raw (disk_format ${image.disk_format ?? '?'}), there is no raw copy to clone`, true);
  }
  if (url.startsWith('file://')) {
    throw new VolumeFromImageError(`image ${id} has its raw copy in a file (${url}): no RBD clone can be made from a file copy`, true);
  }
  const location = parseRbdLocation(url);
  if (location === undefined) throw new VolumeFromImageError(`image ${id} has a cache_raw_url that is not rbd://<fsid>/<pool>/<image>/<snap>: ${url}`, true);
  if (location.image !== rbdNames.copy(id) || location.snap !== RAW_SNAPSHOT) {
    throw new VolumeFromImageError(`image ${id} has a cache_raw_url that names ${location.pool}/${location.image}@${location.snap}, not its own raw copy ${rbdNames.copy(id)}@${RAW_SNAPSHOT}: refused`);
  }
  if (location.fsid !== rules.fsid.toLowerCase()) {
    throw new VolumeFromImageError(`image ${id}'s raw copy is on another Ceph cluster (fsid ${location.fsid}) than this one (fsid ${rules.fsid})`, true);
  }
  if (!rules.imagePools.includes(location.pool)) {
    throw new VolumeFromImageError(`image ${id}'s raw copy is in pool ${location.pool}, which is not an allowed image pool (${rules.imagePools.join(', ') || 'none'})`, true);
  }
  return location;
}

/** `--size` in GiB (Cinder's unit) as bytes; undefined when absent. */
export function volumeBytesOf(sizeGiB: string | undefined): number | undefined {
  if (sizeGiB === undefined) return undefined;
  if (!/^[1-9][0-9]{0,6}$/.test(sizeGiB)) throw new VolumeFromImageError(`--size must be a whole number of GiB (1 or more), not '${sizeGiB}'`);
  return Number(sizeGiB) * 1024 ** 3;
}

/** An RBD pool or image name that `rbd` cannot read as an option or a spec separator. */
export function assertRbdName(what: string, name: string): void {
  if (!/^[A-Za-z0-9_.][A-Za-z0-9_.-]*$/.test(name)) throw new VolumeFromImageError(`${what} '${name}' is not a valid RBD name (letters, digits, '_', '.', '-')`);
}
