import { assessQemuInfo, qemuFormatFor, refuseByHeader, sniffHeader } from '../../src/rawcache/inspect';
import { RawCacheError } from '../../src/rawcache/types';

function qcow2Header(options: { version?: number; backing?: string; incompatible?: bigint; crypt?: number } = {}): Buffer {
  const head = Buffer.alloc(4096);
  head.writeUInt32BE(0x514649fb, 0);
  head.writeUInt32BE(options.version ?? 3, 4);
  if (options.backing !== undefined) {
    head.writeBigUInt64BE(1024n, 8);
    head.writeUInt32BE(options.backing.length, 16);
    head.write(options.backing, 1024, 'latin1');
  }
  head.writeUInt32BE(options.crypt ?? 0, 32);
  head.writeBigUInt64BE(options.incompatible ?? 0n, 72);
  return head;
}

function refusedWith(action: () => unknown): RawCacheError {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(RawCacheError);
    expect((error as RawCacheError).permanent).toBe(true);
    return error as RawCacheError;
  }
  throw new Error('expected a refusal');
}

describe('qemuFormatFor (Glance disk_format -> qemu-img format)', () => {
  test.each([
    ['qcow2', 'qcow2'],
    ['raw', 'raw'],
    ['vmdk', 'vmdk'],
    ['vdi', 'vdi'],
    ['vhd', 'vpc'],
    ['vhdx', 'vhdx'],
    ['iso', 'raw'],
    ['ploop', 'parallels'],
    ['ami', 'raw'],
  ])('%s is %s', (diskFormat, qemu) => {
    expect(qemuFormatFor(diskFormat)).toBe(qemu);
  });

  test('refuses aki and ari (not disks) and formats it does not know', () => {
    expect(refusedWith(() => qemuFormatFor('aki')).message).toMatch(/kernel image, not a disk.*set cache_raw to False/);
    expect(refusedWith(() => qemuFormatFor('ari')).message).toMatch(/ramdisk/);
    expect(refusedWith(() => qemuFormatFor('gpt')).message).toMatch(/'gpt' cannot be converted/);
  });
});

describe('sniffHeader and refuseByHeader (no qemu-img involved)', () => {
  test('reads a plain qcow2 v3 header', () => {
    expect(sniffHeader(qcow2Header())).toEqual({ kind: 'qcow2', version: 3, backingFile: null, externalDataFile: false, encrypted: false });
    expect(() => refuseByHeader(sniffHeader(qcow2Header()))).not.toThrow();
  });

  test('finds and names a backing file', () => {
    const finding = sniffHeader(qcow2Header({ backing: '/etc/shadow' }));
    expect(finding).toMatchObject({ backingFile: '/etc/shadow' });
    expect(refusedWith(() => refuseByHeader(finding)).message).toMatch(/backing file \(\/etc\/shadow\)/);
  });

  test('keeps control characters of a hostile backing name out of the message', () => {
    const finding = sniffHeader(qcow2Header({ backing: 'a\nb\x1b[31m' }));
    expect(refusedWith(() => refuseByHeader(finding)).message).toContain('(a?b?[31m)');
  });

  test('finds the external data file feature bit', () => {
    const finding = sniffHeader(qcow2Header({ incompatible: 1n << 2n }));
    expect(finding).toMatchObject({ externalDataFile: true });
    expect(refusedWith(() => refuseByHeader(finding)).message).toMatch(/external data file/);
  });

  test('ignores the incompatible-features field of a version 2 header (it has none)', () => {
    expect(sniffHeader(qcow2Header({ version: 2, incompatible: 1n << 2n }))).toMatchObject({ externalDataFile: false });
  });

  test('finds qcow2 encryption', () => {
    expect(refusedWith(() => refuseByHeader(sniffHeader(qcow2Header({ crypt: 2 })))).message).toMatch(/encrypted/);
  });

  test('recognizes a VMDK descriptor file and refuses it', () => {
    const descriptor = Buffer.from('# Disk DescriptorFile\nversion=1\ncreateType="monolithicFlat"\nRW 16384 FLAT "/etc/passwd" 0\n');
    expect(sniffHeader(descriptor)).toEqual({ kind: 'vmdk-descriptor' });
    expect(refusedWith(() => refuseByHeader(sniffHeader(descriptor))).message).toMatch(/VMDK descriptor/);
  });

  test('passes anything else on to qemu-img', () => {
    expect(sniffHeader(Buffer.alloc(0))).toEqual({ kind: 'other' });
    expect(sniffHeader(Buffer.from('KDMV'))).toEqual({ kind: 'other' });
  });
});

describe('assessQemuInfo (the second look, at what qemu-img reports)', () => {
  const path = '/work/img.src.1';
  const qcow2 = { format: 'qcow2', 'virtual-size': 1073741824, 'actual-size': 200704, 'format-specific': { type: 'qcow2', data: { compat: '1.1' } } };

  test('accepts a self-contained qcow2 and reports its sizes', () => {
    expect(assessQemuInfo(qcow2, 'qcow2', path)).toEqual({ format: 'qcow2', virtualSize: 1073741824, actualSize: 200704 });
  });

  test('refuses a backing file in any format (here qed)', () => {
    const info = { format: 'qed', 'virtual-size': 1, 'backing-filename': 'base.img' };
    // qed is not a Glance disk_format: a qed image declared anything is a mismatch first.
    expect(refusedWith(() => assessQemuInfo(info, 'qcow2', path)).message).toMatch(/data is a qed image/);
    expect(refusedWith(() => assessQemuInfo({ ...qcow2, 'backing-filename': 'base.img' }, 'qcow2', path)).message).toMatch(/backing file \(base\.img\)/);
  });

  test('refuses a data-file reported by qemu-img', () => {
    const info = { ...qcow2, 'format-specific': { type: 'qcow2', data: { 'data-file': '/dev/sda' } } };
    expect(refusedWith(() => assessQemuInfo(info, 'qcow2', path)).message).toMatch(/external data file \(\/dev\/sda\)/);
  });

  test('accepts a monolithicSparse VMDK whose one extent is the file itself', () => {
    const info = { format: 'vmdk', 'virtual-size': 8, 'format-specific': { type: 'vmdk', data: { 'create-type': 'monolithicSparse', extents: [{ filename: path }] } } };
    expect(assessQemuInfo(info, 'vmdk', path).format).toBe('vmdk');
  });

  test('refuses a VMDK of another create type or with a foreign extent', () => {
    const flat = { format: 'vmdk', 'virtual-size': 8, 'format-specific': { type: 'vmdk', data: { 'create-type': 'monolithicFlat', extents: [] } } };
    expect(refusedWith(() => assessQemuInfo(flat, 'vmdk', path)).message).toMatch(/create type monolithicFlat/);
    const foreign = { format: 'vmdk', 'virtual-size': 8, 'format-specific': { type: 'vmdk', data: { 'create-type': 'monolithicSparse', extents: [{ filename: '/etc/passwd' }] } } };
    expect(refusedWith(() => assessQemuInfo(foreign, 'vmdk', path)).message).toMatch(/another file as an extent \(\/etc\/passwd\)/);
  });

  test('refuses an empty image and a missing virtual size', () => {
    expect(refusedWith(() => assessQemuInfo({ format: 'raw', 'virtual-size': 0 }, 'raw', path)).message).toMatch(/empty/);
    expect(refusedWith(() => assessQemuInfo({ format: 'raw' }, 'raw', path)).message).toMatch(/no usable virtual size/);
  });

  test('refuses an encrypted image', () => {
    expect(refusedWith(() => assessQemuInfo({ ...qcow2, encrypted: true }, 'qcow2', path)).message).toMatch(/encrypted/);
  });
});
