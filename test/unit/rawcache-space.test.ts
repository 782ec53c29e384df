import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dataBytesOfMap, parseMeasure } from '../../src/rawcache/inspect';
import { DEFAULT_SPACE_LIMITS, ensureRoom, ensureWorkDirRoom, refuseOversized, spaceLimits } from '../../src/rawcache/targets/convert';
import { roomInPool } from '../../src/rawcache/targets/rbd';
import { RawCacheError } from '../../src/rawcache/types';

/** Outputs of the real commands (qemu-img 7.2, Ceph 16), kept in test/fixtures/rawcache-space/. */
const fixture = (name: string): string => readFileSync(join(__dirname, '..', 'fixtures', 'rawcache-space', name), 'utf8');
const json = (name: string): unknown => JSON.parse(fixture(name));
const MiB = 1024 * 1024;

describe('measuring a raw copy from qemu-img', () => {
  test('takes the copy size from measure and the guest data from map, for a compressed qcow2', () => {
    // 320 MiB of one byte pattern in a 512 MiB disk, stored compressed in a file of 0.7 MiB.
    expect(parseMeasure(fixture('qemu-img-measure-compressed.json'))).toBe(512 * MiB);
    expect(dataBytesOfMap(fixture('qemu-img-map-compressed.json'))).toBe(320 * MiB);
  });

  test('counts no data in a 64 TiB qcow2 that holds none', () => {
    expect(parseMeasure(fixture('qemu-img-measure-64t.json'))).toBe(64 * 1024 ** 4);
    expect(dataBytesOfMap(fixture('qemu-img-map-64t.json'))).toBe(0);
  });

  test('leaves out extents that read as zeroes even when allocated (qemu-img convert skips them)', () => {
    // preallocation=metadata: every extent has data; 4 MiB of them hold a pattern, the rest zeroes.
    expect(dataBytesOfMap(fixture('qemu-img-map-preallocated.json'))).toBe(4 * MiB);
  });

  test('refuses output it cannot use, as a retryable error', () => {
    for (const bad of ['', 'not json', '{}', '{"required": -1}', '{"required": "1"}']) {
      expect(() => parseMeasure(bad)).toThrow(RawCacheError);
    }
    for (const bad of ['{}', '[{"data": true}]', '[{"length": -5, "data": true}]', '[null]']) {
      expect(() => dataBytesOfMap(bad)).toThrow(RawCacheError);
    }
    expect(() => parseMeasure('')).toThrow(expect.objectContaining({ permanent: false }));
  });
});

describe("a Ceph pool's room", () => {
  test("is what the pool's byte quota leaves when that is less than MAX AVAIL", () => {
    // 100 MiB quota, 32 MiB stored, 7.6 GiB MAX AVAIL.
    const room = roomInPool(json('ceph-df-detail.json'), json('ceph-osd-pool-get-quota.json'), 'images');
    expect(room).toEqual({ free: 100 * MiB - 33554505, limitedBy: 'what its quota of 100.0 MiB leaves' });
  });

  test('is MAX AVAIL without a quota, or for a quota above it', () => {
    const df = json('ceph-df-detail.json');
    expect(roomInPool(df, json('ceph-osd-pool-get-quota-unset.json'), 'images')).toEqual({ free: 8126851584, limitedBy: 'MAX AVAIL in ceph df detail' });
    expect(roomInPool(df, { quota_max_bytes: 1024 ** 4 }, 'images')).toEqual({ free: 8126851584, limitedBy: 'MAX AVAIL in ceph df detail' });
  });

  test("falls back to the quota ceph df detail shows when get-quota gave nothing", () => {
    expect(roomInPool(json('ceph-df-detail.json'), undefined, 'images')).toEqual({ free: 100 * MiB - 33554505, limitedBy: 'what its quota of 100.0 MiB leaves' });
  });

  test('is none left when the pool stores more than its quota', () => {
    expect(roomInPool(json('ceph-df-detail.json'), { quota_max_bytes: MiB }, 'images')).toMatchObject({ free: 0 });
  });

  test('is unknown for a pool ceph df does not list', () => {
    expect(roomInPool(json('ceph-df-detail.json'), json('ceph-osd-pool-get-quota.json'), 'volumes')).toBeUndefined();
    expect(roomInPool({}, {}, 'images')).toBeUndefined();
    expect(roomInPool(null, null, 'images')).toBeUndefined();
  });
});

describe('space limits', () => {
  const measure = { size: 256 * MiB, dataBytes: 200 * MiB };

  test('refuses a copy whose guest data and the reserve do not fit, transiently, with the sizes', () => {
    const refusal = (() => {
      try {
        ensureRoom({ free: 160 * MiB }, measure, 8 * MiB, 'the raw copy directory /srv/raw');
      } catch (error) {
        return error;
      }
      return undefined;
    })();
    expect(refusal).toBeInstanceOf(RawCacheError);
    expect(refusal).toMatchObject({
      permanent: false,
      message:
        'the raw copy directory /srv/raw has 160.0 MiB free; the raw copy needs 208.0 MiB: 200.0 MiB of guest data (in a 256.0 MiB disk) plus the 8.0 MiB kept free (rawcache.target.reserve_bytes); will retry when space frees up',
    });
    expect(() => ensureRoom({ free: 208 * MiB }, measure, 8 * MiB, 'x')).not.toThrow();
    expect(() => ensureRoom(undefined, measure, 8 * MiB, 'x')).not.toThrow();
  });

  test('says what bounds the room when it is not disk space', () => {
    expect(() => ensureRoom({ free: MiB, limitedBy: 'what its quota of 64.0 MiB leaves' }, measure, 0, 'Ceph pool images')).toThrow(
      /^Ceph pool images has 1\.0 MiB free \(what its quota of 64\.0 MiB leaves\); the raw copy needs 200\.0 MiB/,
    );
  });

  test('refuses a temporary raw file the work dir cannot hold', () => {
    expect(() => ensureWorkDirRoom(300 * MiB, measure, '/work')).toThrow(
      'the work dir /work has 300.0 MiB free; the temporary raw file for rbd import needs 456.0 MiB: 200.0 MiB of guest data plus a 256.0 MiB margin; will retry when space frees up',
    );
    expect(() => ensureWorkDirRoom(456 * MiB, measure, '/work')).not.toThrow();
  });

  test('refuses for good a disk above the virtual size limit, naming the size, the limit and the key', () => {
    expect(() => refuseOversized(1024 ** 4, 1024 ** 4)).not.toThrow();
    let refusal: unknown;
    try {
      refuseOversized(64 * 1024 ** 4, 1024 ** 4);
    } catch (error) {
      refusal = error;
    }
    expect(refusal).toMatchObject({
      permanent: true,
      message:
        "the image's virtual size is 64.0 TiB (70368744177664 bytes), above the 1.0 TiB (1099511627776 bytes) a raw copy may have (rawcache.target.max_virtual_size_bytes): no raw copy is made; set cache_raw to False, or ask an operator to raise the limit",
    });
  });

  test("defaults to the configuration schema's defaults", () => {
    const schema = JSON.parse(readFileSync(join(__dirname, '..', '..', 'schemas', 'config.schema.json'), 'utf8'));
    const target = schema.properties.rawcache.properties.target.properties;
    expect(DEFAULT_SPACE_LIMITS).toEqual({ reserveBytes: target.reserve_bytes.default, maxVirtualSize: target.max_virtual_size_bytes.default });
    expect(spaceLimits({ reserveBytes: 0 })).toEqual({ reserveBytes: 0, maxVirtualSize: target.max_virtual_size_bytes.default });
  });
});
