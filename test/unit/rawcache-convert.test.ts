import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { convertToRaw, qemuSourceSpec } from '../../src/rawcache/targets/convert';

/** qemu-img convert as the worker runs it, on real images made with qemu-img and qemu-io. */
describe('convertToRaw', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stx-convert-'));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it('never opens the backing file a qcow2 names, even one that passed no inspection (a file swapped after it)', async () => {
    const secret = join(dir, 'secret.raw');
    execFileSync('qemu-img', ['create', '-f', 'raw', secret, '1M']);
    execFileSync('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 1M', secret]);
    const overlay = join(dir, 'overlay.qcow2');
    execFileSync('qemu-img', ['create', '-f', 'qcow2', '-F', 'raw', '-b', secret, overlay, '1M']);
    const out = join(dir, 'overlay.raw');
    await convertToRaw({ path: overlay, format: 'qcow2', virtualSize: 1 << 20 }, out, new AbortController().signal);
    const copy = await readFile(out);
    expect(copy.length).toBe(1 << 20);
    expect(copy.includes(0x5a)).toBe(false);
  });

  it('converts a qcow2 without a backing file to the same bytes as a plain qemu-img convert', async () => {
    const image = join(dir, 'plain.qcow2');
    execFileSync('qemu-img', ['create', '-f', 'qcow2', image, '2M']);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x33 512k 64k', image]);
    const ours = join(dir, 'ours.raw');
    const theirs = join(dir, 'theirs.raw');
    await convertToRaw({ path: image, format: 'qcow2', virtualSize: 2 << 20 }, ours, new AbortController().signal);
    execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', image, theirs]);
    expect((await readFile(ours)).equals(await readFile(theirs))).toBe(true);
  });

  it('gives other formats and rbd: specs to qemu-img as they are', () => {
    expect(qemuSourceSpec({ path: '/w/x.vmdk', format: 'vmdk' })).toBe('/w/x.vmdk');
    expect(qemuSourceSpec({ path: 'rbd:images/x@snap:conf=/etc/ceph/ceph.conf', format: 'qcow2' })).toBe('rbd:images/x@snap:conf=/etc/ceph/ceph.conf');
  });
});
