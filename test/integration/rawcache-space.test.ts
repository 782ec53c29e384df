import { execFileSync } from 'node:child_process';
import { mkdirSync, readdirSync, statfsSync, statSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient } from '../harness/http';
import { makeCompressedQcow2, rawSha256Of, sha256File } from '../harness/images';
import { freePort } from '../harness/ports';
import { imageSteps, writeRawCacheConfig, type Image } from '../harness/rawcache';
import { startProxy, startWorker, type RunningProxy } from '../harness/proxy';

/**
 * Space limits of the raw cache, end to end: real Glance (file store), the proxy, one worker whose
 * file target is a 160 MiB tmpfs of its own. A copy that cannot fit, or whose disk is larger than
 * rawcache.target.max_virtual_size_bytes, is refused before anything is written to the target.
 */

const MiB = 1024 * 1024;
const TARGET_MIB = 160;
const RESERVE_MIB = 8;

describe('raw cache space limits on a small file target', () => {
  let glance: RunningGlance;
  let proxy: RunningProxy;
  let worker: RunningProxy;
  let dir: string;
  let rawDir: string;
  let mounted = false;
  let client: HttpClient;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stx-rawcache-space-'));
    rawDir = join(dir, 'raw');
    mkdirSync(rawDir);
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${TARGET_MIB}m`, 'tmpfs', rawDir]);
    mounted = true;
    glance = await startGlance();
    const configFile = writeRawCacheConfig(dir, { upstream: glance.url, target: { reserve_bytes: RESERVE_MIB * MiB } });
    proxy = await startProxy({ upstream: glance.url, config: configFile });
    worker = await startWorker({ config: configFile, opsPort: await freePort() });
    client = new HttpClient(proxy.url);
  }, 120_000);

  afterAll(async () => {
    client?.destroy();
    await worker?.stop();
    await proxy?.stop();
    await glance?.stop();
    if (mounted) execFileSync('umount', [rawDir]);
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  const steps = () => imageSteps(client, () => worker.logs().slice(-3000));
  /** Waits until the worker is done with the image: Cached or Error. */
  const settled = (id: string) => steps().waitForImage(id, (i: Image) => i.cache_raw_status === 'Cached' || i.cache_raw_status === 'Error', 50_000, false);
  const uploaded = async (name: string, file: string): Promise<string> => {
    const { id } = await steps().create({ name, cache_raw: 'True' });
    await steps().upload(id, file);
    return id as string;
  };
  /** The target directory's change time: any file created or removed in it moves it. */
  const targetChanged = () => statSync(rawDir, { bigint: true }).mtimeNs;
  const targetUsedBytes = () => {
    const stats = statfsSync(rawDir);
    return (stats.blocks - stats.bfree) * stats.bsize;
  };
  const conversionsOf = (id: string) =>
    worker.logs().split('\n').filter((line) => line.includes(`"image_id":"${id}"`) && line.includes('"message":"converting to RAW"')).length;

  it('refuses a compressed qcow2 whose guest data exceeds the target before writing, saying the sizes', async () => {
    const before = targetChanged();
    // 176 MiB of guest data in a file of under 1 MiB.
    const id = await uploaded('too-much-data', makeCompressedQcow2(dir, 'dense.qcow2', 256, 176));
    const image = await settled(id);
    expect(image.cache_raw_status).toBe('Error');
    expect(image.cache_raw_error).toMatch(
      new RegExp(
        `the raw copy directory ${rawDir} has ${TARGET_MIB}\\.0 MiB free; the raw copy needs 184\\.0 MiB: 176\\.0 MiB of guest data \\(in a 256\\.0 MiB disk\\) plus the ${RESERVE_MIB}\\.0 MiB kept free \\(rawcache\\.target\\.reserve_bytes\\)`,
      ),
    );
    expect(image.cache_raw_url).toBeUndefined();
    // Nothing was ever created in the target, not even a partial copy removed afterwards.
    expect(targetChanged()).toBe(before);
    expect(readdirSync(rawDir)).toEqual([]);
    expect(targetUsedBytes()).toBe(0);
  });

  it('refuses a qcow2 of 64 TiB virtual size for good, naming the size, the limit and its key, and writes nothing', async () => {
    const before = targetChanged();
    const source = join(dir, 'huge.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', source, '64T']);
    const id = await uploaded('too-big', source);
    const image = await settled(id);
    expect(image.cache_raw_status).toBe('Error');
    expect(image.cache_raw_error).toBe(
      "the image's virtual size is 64.0 TiB (70368744177664 bytes), above the 1.0 TiB (1099511627776 bytes) a raw copy may have " +
        '(rawcache.target.max_virtual_size_bytes): no raw copy is made; set cache_raw to False, or ask an operator to raise the limit',
    );
    expect(image.cache_raw_url).toBeUndefined();
    // Permanent: one attempt, no retry.
    expect(conversionsOf(id)).toBe(1);
    expect(targetChanged()).toBe(before);
    expect(readdirSync(rawDir)).toEqual([]);
  });

  it('still caches a compressed image that fits', async () => {
    const source = makeCompressedQcow2(dir, 'fits.qcow2', 32, 16, 0x21);
    const id = await uploaded('fits', source);
    const image = await settled(id);
    expect(image).toMatchObject({ cache_raw_status: 'Cached', cache_raw_url: `file://${rawDir}/${id}.raw`, cache_raw_size: String(32 * MiB) });
    expect(await sha256File(join(rawDir, `${id}.raw`))).toBe(await rawSha256Of(dir, source));
  });
});
