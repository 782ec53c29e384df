import { assertRbdName, cloneSourceOf, volumeBytesOf, VolumeFromImageError } from '../../src/consumer/clone-source';
import type { CachedImage } from '../../src/rawcache/state';

const ID = '2d9c4c1e-8d3b-4a8f-9f55-0c6c2a5e7b11';
const FSID = '840f16bc-3238-4adb-8700-6b9876c23462';
const rules = { fsid: FSID, imagePools: ['images'] };
const cached = (fields: Partial<CachedImage> = {}): CachedImage => ({
  id: ID,
  status: 'active',
  disk_format: 'qcow2',
  cache_raw: 'True',
  cache_raw_status: 'Cached',
  cache_raw_url: `rbd://${FSID}/images/${ID}_raw/snap`,
  ...fields,
});
const refusal = (image: CachedImage, rulesUsed = rules): VolumeFromImageError => {
  try {
    cloneSourceOf(image, rulesUsed);
  } catch (error) {
    return error as VolumeFromImageError;
  }
  throw new Error('no refusal');
};

describe('cloneSourceOf', () => {
  it("names the protected snapshot of a Cached image's rbd:// copy", () => {
    expect(cloneSourceOf(cached(), rules)).toEqual({ fsid: FSID, pool: 'images', image: `${ID}_raw`, snap: 'snap' });
  });

  it('compares the fsid without regard to case', () => {
    expect(cloneSourceOf(cached({ cache_raw_url: `rbd://${FSID.toUpperCase()}/images/${ID}_raw/snap` }), rules).fsid).toBe(FSID);
  });

  it.each([
    [{ cache_raw_status: undefined, cache_raw: undefined }, `image ${ID} is not cached: it has no raw cache (cache_raw is not set)`, true],
    [{ cache_raw_status: 'Caching' }, `image ${ID} is not cached: cache_raw_status is Caching`, true],
    [{ cache_raw_status: 'Error', cache_raw_error: 'boom' }, `image ${ID} is not cached: cache_raw_status is Error (boom)`, true],
    [{ status: 'queued' }, `image ${ID} is queued, not active: it has no data to make a volume from`, false],
    [{ cache_raw_url: undefined, disk_format: 'raw' }, `image ${ID} is Cached without a cache_raw_url: its own data is raw (disk_format raw), there is no raw copy to clone`, true],
    [{ cache_raw_url: `file:///raw/${ID}.raw` }, `image ${ID} has its raw copy in a file (file:///raw/${ID}.raw): no RBD clone can be made from a file copy`, true],
    [{ cache_raw_url: `rbd://${FSID}/images/${ID}_raw` }, `image ${ID} has a cache_raw_url that is not rbd://<fsid>/<pool>/<image>/<snap>: rbd://${FSID}/images/${ID}_raw`, true],
    [{ cache_raw_url: `rbd://${FSID}/images/-x/snap` }, `image ${ID} has a cache_raw_url that is not rbd://<fsid>/<pool>/<image>/<snap>: rbd://${FSID}/images/-x/snap`, true],
    [{ cache_raw_url: `rbd://${FSID}/images/other_raw/snap` }, `image ${ID} has a cache_raw_url that names images/other_raw@snap, not its own raw copy ${ID}_raw@snap: refused`, false],
    [{ cache_raw_url: `rbd://${FSID}/images/${ID}_raw/other` }, `image ${ID} has a cache_raw_url that names images/${ID}_raw@other, not its own raw copy ${ID}_raw@snap: refused`, false],
    [{ cache_raw_url: `rbd://00000000-0000-4000-8000-000000000000/images/${ID}_raw/snap` }, `image ${ID}'s raw copy is on another Ceph cluster (fsid 00000000-0000-4000-8000-000000000000) than this one (fsid ${FSID})`, true],
    [{ cache_raw_url: `rbd://${FSID}/volumes/${ID}_raw/snap` }, `image ${ID}'s raw copy is in pool volumes, which is not an allowed image pool (images)`, true],
  ] as Array<[Partial<CachedImage>, string, boolean]>)('refuses %j', (fields, message, fallbackPossible) => {
    const error = refusal(cached(fields));
    expect(error).toBeInstanceOf(VolumeFromImageError);
    expect({ message: error.message, fallbackPossible: error.fallbackPossible }).toEqual({ message, fallbackPossible });
  });
});

describe('volumeBytesOf and assertRbdName', () => {
  it('reads --size as whole GiB', () => {
    expect(volumeBytesOf(undefined)).toBeUndefined();
    expect(volumeBytesOf('20')).toBe(20 * 1024 ** 3);
    for (const bad of ['0', '-1', '1.5', '1G', '', '99999999']) expect(() => volumeBytesOf(bad)).toThrow(`--size must be a whole number of GiB (1 or more), not '${bad}'`);
  });

  it('refuses names rbd would read as an option or a spec', () => {
    expect(() => assertRbdName('the volume name', 'volume-0b6f')).not.toThrow();
    for (const bad of ['-x', 'a/b', 'a@b', 'a b', '']) expect(() => assertRbdName('the volume name', bad)).toThrow(`the volume name '${bad}' is not a valid RBD name`);
  });
});
