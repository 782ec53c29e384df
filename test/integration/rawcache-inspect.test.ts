import { execFile, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { open, mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { inspectImage, measureRawCopy } from '../../src/rawcache/inspect';
import { RawCacheError } from '../../src/rawcache/types';

const run = promisify(execFile);
const MiB = 1024 * 1024;

describe('inspectImage with the real qemu-img', () => {
  let dir: string;
  const at = (name: string): string => join(dir, name);
  const qemuImg = (...args: string[]): Promise<unknown> => run('qemu-img', args);
  const never = (): AbortSignal => new AbortController().signal;

  async function refusal(path: string, diskFormat: string): Promise<RawCacheError> {
    const error = await inspectImage(path, diskFormat, never()).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(RawCacheError);
    return error as RawCacheError;
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stx-inspect-'));
    // 8 MiB of guest data with random content in the first 2 MiB, so the formats hold real clusters.
    await writeFile(at('disk.raw'), Buffer.concat([randomBytes(2 * MiB), Buffer.alloc(6 * MiB)]));
    await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', at('disk.raw'), at('disk.qcow2'));
    await qemuImg('convert', '-f', 'raw', '-O', 'vmdk', at('disk.raw'), at('disk.vmdk'));
    await qemuImg('convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', at('disk.raw'), at('stream.vmdk'));
    await qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=monolithicFlat', at('flat.vmdk'), '8M');
    await qemuImg('convert', '-f', 'raw', '-O', 'vpc', at('disk.raw'), at('dynamic.vhd'));
    await qemuImg('convert', '-f', 'raw', '-O', 'vpc', '-o', 'subformat=fixed', at('disk.raw'), at('fixed.vhd'));
    await qemuImg('convert', '-f', 'raw', '-O', 'vdi', at('disk.raw'), at('disk.vdi'));
    await qemuImg('convert', '-f', 'raw', '-O', 'vhdx', at('disk.raw'), at('disk.vhdx'));
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', at('disk.qcow2'), '-F', 'qcow2', at('child.qcow2'));
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', `data_file=${at('external.bin')}`, at('external.qcow2'), '8M');
  });

  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const accepted: Array<[string, string, string]> = [
    ['qcow2', 'disk.qcow2', 'qcow2'],
    ['raw', 'disk.raw', 'raw'],
    ['vmdk', 'disk.vmdk', 'vmdk'],
    ['vmdk', 'stream.vmdk', 'vmdk'],
    ['vhd', 'dynamic.vhd', 'vpc'],
    ['vhd', 'fixed.vhd', 'vpc'],
    ['vdi', 'disk.vdi', 'vdi'],
    ['vhdx', 'disk.vhdx', 'vhdx'],
    ['iso', 'disk.raw', 'raw'],
    ['ami', 'disk.raw', 'raw'],
  ];

  test.each(accepted)('accepts disk_format %s (%s) as qemu-img format %s with its virtual size', async (diskFormat, file, format) => {
    const inspection = await inspectImage(at(file), diskFormat, never());
    expect(inspection.format).toBe(format);
    expect(inspection.virtualSize).toBeGreaterThanOrEqual(8 * MiB);
    expect(inspection.virtualSize).toBeLessThan(9 * MiB);
  });

  test.each(accepted)('measures the RAW copy of disk_format %s (%s): the virtual size, holding at least the 2 MiB of data', async (diskFormat, file, format) => {
    const { virtualSize } = await inspectImage(at(file), diskFormat, never());
    const measure = await measureRawCopy(at(file), format, virtualSize, never());
    // What `qemu-img measure -O raw` calls required: the worker no longer runs it, so it is checked here.
    const required = JSON.parse(execFileSync('qemu-img', ['measure', '--output=json', '-f', format, '-O', 'raw', at(file)], { encoding: 'utf8' })).required;
    expect(measure.size).toBe(required);
    expect(measure.size).toBeGreaterThanOrEqual(8 * MiB);
    expect(measure.size).toBeLessThan(9 * MiB);
    expect(measure.dataBytes).toBeGreaterThanOrEqual(2 * MiB);
    expect(measure.dataBytes).toBeLessThanOrEqual(measure.size);
  });

  test('refuses a qcow2 with a backing file, naming it', async () => {
    const error = await refusal(at('child.qcow2'), 'qcow2');
    expect(error.permanent).toBe(true);
    expect(error.message).toMatch(/has a backing file \(.*disk\.qcow2\).*flatten/);
  });

  test('refuses a qcow2 whose data lives in an external data file', async () => {
    const error = await refusal(at('external.qcow2'), 'qcow2');
    expect(error.permanent).toBe(true);
    expect(error.message).toMatch(/external data file/);
  });

  test('refuses data declared raw that is really qcow2 (the classic format attack)', async () => {
    const error = await refusal(at('disk.qcow2'), 'raw');
    expect(error.permanent).toBe(true);
    expect(error.message).toMatch(/disk_format is raw but the data is a qcow2 image.*disk_format qcow2/);
  });

  test('refuses a backing-file qcow2 declared raw before qemu-img could open anything', async () => {
    expect((await refusal(at('child.qcow2'), 'raw')).message).toMatch(/backing file/);
  });

  test('refuses data declared qcow2 that is raw bytes, saying what to do', async () => {
    const error = await refusal(at('disk.raw'), 'qcow2');
    expect(error.permanent).toBe(true);
    expect(error.message).toMatch(/not a qcow2 image \(it reads as raw bytes\).*disk_format raw/);
  });

  test('refuses a qcow2 whose header is cut short', async () => {
    const path = at('truncated.qcow2');
    const head = Buffer.alloc(100);
    const handle = await open(at('disk.qcow2'), 'r');
    await handle.read(head, 0, 100, 0);
    await handle.close();
    await writeFile(path, head);
    const error = await refusal(path, 'qcow2');
    expect(error.permanent).toBe(true);
    expect(error.message).toMatch(/cannot be read as a qcow2 disk .*header too short/);
  });

  test('refuses a qcow2 whose metadata is corrupt (qemu-img check)', async () => {
    const path = at('corrupt.qcow2');
    await run('cp', [at('disk.qcow2'), path]);
    const handle = await open(path, 'r+');
    const header = Buffer.alloc(48);
    await handle.read(header, 0, 48, 0);
    const l1TableOffset = Number(header.readBigUInt64BE(40));
    await handle.write(Buffer.alloc(64, 0xff), 0, 64, l1TableOffset);
    await handle.close();
    const error = await refusal(path, 'qcow2');
    expect(error.permanent).toBe(true);
    expect(error.message).toMatch(/is corrupt \(qemu-img check found \d+ corruptions\)/);
  });

  test('refuses a qcow2 whose data is cut off after the header', async () => {
    const path = at('cut.qcow2');
    await run('cp', [at('disk.qcow2'), path]);
    await truncate(path, 4096);
    const error = await refusal(path, 'qcow2');
    expect(error.permanent).toBe(true);
  });

  test('refuses a VMDK descriptor, whose extents are other files', async () => {
    const error = await refusal(at('flat.vmdk'), 'vmdk');
    expect(error.permanent).toBe(true);
    expect(error.message).toMatch(/VMDK descriptor/);
  });

  test('refuses kernel and ramdisk images: they are not disks', async () => {
    expect((await refusal(at('disk.raw'), 'aki')).message).toMatch(/aki is a kernel image, not a disk/);
    expect((await refusal(at('disk.raw'), 'ari')).message).toMatch(/ari is a ramdisk image/);
  });

  test('a VMDK declared qcow2 is a mismatch naming the Glance format to use', async () => {
    expect((await refusal(at('disk.vmdk'), 'qcow2')).message).toMatch(/disk_format is qcow2 but the data is a vmdk image: upload it again with disk_format vmdk/);
  });

  test('an aborted signal stops the inspection with an AbortError', async () => {
    const controller = new AbortController();
    controller.abort();
    await expect(inspectImage(at('disk.qcow2'), 'qcow2', controller.signal)).rejects.toMatchObject({ name: 'AbortError' });
  });
});
