import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import winston from 'winston';
import { createRawCopyTarget, FileRawCopyTarget, RbdRawCopyTarget } from '../../src/rawcache/targets';
import { assertImageId, fileNames, idsFromNames, rbdNames } from '../../src/rawcache/targets/names';
import { fsidInConf } from '../../src/rawcache/targets/rbd';
import { RawCacheError } from '../../src/rawcache/types';

const logger = winston.createLogger({ silent: true });
const ID = '6f1c4f0e-2a4b-4b55-8d0e-5b0c1d2e3f40';
const OTHER = 'A1B2C3D4-0000-4000-8000-00000000000F';

describe('raw copy names', () => {
  test('accepts Glance image ids (UUIDs, either case) and refuses anything else', () => {
    expect(() => assertImageId(ID)).not.toThrow();
    expect(() => assertImageId(OTHER)).not.toThrow();
    for (const bad of ['', '../x', `${ID}/..`, `${ID}:conf=/tmp/x`, `${ID}\n`, 'not-a-uuid']) {
      expect(() => assertImageId(bad)).toThrow(RawCacheError);
    }
  });

  test('lists each id once from copies and leftovers, ignoring everything else', () => {
    const files = [fileNames.copy(ID), fileNames.partial(ID, 'ab12'), fileNames.partial(OTHER, '1a2b3c4d-77-5e6f7a8b-c0ffee'), 'lost+found', `${ID}.raw.tmp`, `${ID}.src.abc`];
    expect(idsFromNames(files, fileNames.pattern)).toEqual([ID, OTHER]);
    const images = [ID, rbdNames.copy(ID), rbdNames.partial(OTHER, '1a2b3c4d-77-5e6f7a8b-c0ffee'), `${ID}_raw_partial`, `${ID}_raw_x`, 'volume-1'];
    expect(idsFromNames(images, rbdNames.pattern)).toEqual([ID, OTHER]);
  });
});

describe('createRawCopyTarget', () => {
  const base = { file_dir: '/var/lib/stx-glance-proxy/raw', rbd_pool: 'images', rbd_user: 'glance', ceph_conf: '/nonexistent/ceph.conf', reserve_bytes: 0, max_virtual_size_bytes: 1024 ** 4, rbd_source_pools: null, file_source_dirs: [] };

  test('makes a file target whose url is file://<dir>/<id>.raw', () => {
    const target = createRawCopyTarget({ ...base, kind: 'file' }, logger);
    expect(target).toBeInstanceOf(FileRawCopyTarget);
    expect(target.urlFor(ID)).toBe(`file:///var/lib/stx-glance-proxy/raw/${ID}.raw`);
    expect(() => target.urlFor('../../etc/passwd')).toThrow(RawCacheError);
  });

  test('makes an rbd target that refuses bad pool and user names from the config', () => {
    expect(createRawCopyTarget({ ...base, kind: 'rbd' }, logger)).toBeInstanceOf(RbdRawCopyTarget);
    expect(() => createRawCopyTarget({ ...base, kind: 'rbd', rbd_pool: 'images:conf=/x' }, logger)).toThrow(/not a valid pool name/);
    expect(() => createRawCopyTarget({ ...base, kind: 'rbd', rbd_user: 'client.glance admin' }, logger)).toThrow(/not a valid Ceph client name/);
  });
});

describe('the rbd target without a cluster', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stx-rbd-unit-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test("takes the fsid from ceph.conf to build StarlingX's url", async () => {
    const conf = join(dir, 'ceph.conf');
    await writeFile(conf, '[global]\n\tfsid = 840F5F02-1D5B-4A57-8E6C-1F4D2A9B7C30\nmon host = 127.0.0.1\n');
    expect(fsidInConf(conf)).toBe('840f5f02-1d5b-4a57-8e6c-1f4d2a9b7c30');
    const target = new RbdRawCopyTarget({ pool: 'images', user: 'glance', cephConf: conf }, logger);
    expect(target.urlFor(ID)).toBe(`rbd://840f5f02-1d5b-4a57-8e6c-1f4d2a9b7c30/images/${ID}_raw/snap`);
  });

  test('says so when the fsid is not known yet', () => {
    const target = new RbdRawCopyTarget({ pool: 'images', user: 'glance', cephConf: join(dir, 'missing.conf') }, logger);
    expect(() => target.urlFor(ID)).toThrow(/fsid is not known yet/);
  });

  test("escapes ':' and '\\' of the conf path in qemu's rbd: spec", () => {
    const target = new RbdRawCopyTarget({ pool: 'images', user: 'glance', cephConf: '/etc/ce:ph\\x/ceph.conf' }, logger);
    expect(target.qemuSpec(`${ID}_raw_partial`)).toBe(`rbd:images/${ID}_raw_partial:id=glance:conf=/etc/ce\\:ph\\\\x/ceph.conf`);
  });
});
