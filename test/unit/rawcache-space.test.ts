import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { dataBytesOfMap, parseMeasure } from '../../src/rawcache/inspect';
import { RawCacheError } from '../../src/rawcache/types';

/** Outputs of the real commands (qemu-img 7.2), kept in test/fixtures/rawcache-space/. */
const fixture = (name: string): string => readFileSync(join(__dirname, '..', 'fixtures', 'rawcache-space', name), 'utf8');
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
