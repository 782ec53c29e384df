import { randomBytes, createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { startCeph, writeGlanceRbdConf, type CephCluster } from '../harness/ceph';
import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient } from '../harness/http';
import { fetchVerifiedSource, rbdExportReader } from '../../src/rawcache/source';
import { RawCacheError } from '../../src/rawcache/types';

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

describe('the single-node Ceph harness, and a Glance that stores images in it', () => {
  let ceph: CephCluster;
  let glance: RunningGlance;
  let client: HttpClient;
  let workDir: string;
  let startSeconds: number;
  const data = Buffer.concat([randomBytes(3 * 1024 * 1024), Buffer.from('an odd tail')]);
  let imageId: string;

  beforeAll(async () => {
    const started = Date.now();
    ceph = await startCeph();
    startSeconds = (Date.now() - started) / 1000;
    glance = await startGlance({ store: 'rbd', extraConf: await writeGlanceRbdConf(ceph) });
    client = new HttpClient(glance.url);
    workDir = await mkdtemp(join(tmpdir(), 'stx-rawcache-work-'));
  }, 120_000);

  afterAll(async () => {
    client?.destroy();
    await glance?.stop();
    await ceph?.stop();
    if (workDir) await rm(workDir, { recursive: true, force: true });
  });

  test('starts in seconds and answers client.glance with the fsid it was made with', async () => {
    expect(startSeconds).toBeLessThan(30);
    expect((await ceph.admin(['fsid'])).trim()).toBe(ceph.fsid);
    await ceph.rbd(['create', 'images/harness-probe', '--size', '16']);
    expect(JSON.parse(await ceph.rbd(['ls', '--pool', 'images', '--format', 'json']))).toContain('harness-probe');
    await ceph.rbd(['rm', '--no-progress', 'images/harness-probe']);
  });

  test('a Glance upload lands in the images pool with an rbd:// direct_url and store ceph', async () => {
    const created = await client.sendJson('POST', '/v2/images', { name: 'on-ceph', disk_format: 'raw', container_format: 'bare' });
    expect(created.status).toBe(201);
    imageId = created.json().id;
    const upload = await client.request({
      method: 'PUT',
      path: `/v2/images/${imageId}/file`,
      headers: { 'Content-Type': 'application/octet-stream' },
      body: data,
    });
    expect(upload.status).toBe(204);

    const image = (await client.get(`/v2/images/${imageId}`)).json();
    expect(image).toMatchObject({ status: 'active', size: data.length, stores: 'ceph' });
    expect(image.direct_url).toBe(`rbd://${ceph.fsid}/images/${imageId}/snap`);
    expect(JSON.parse(await ceph.rbd(['ls', '--pool', 'images', '--format', 'json']))).toContain(imageId);
  });

  test('rbdExportReader reads the uploaded bytes straight from Ceph', async () => {
    const exported = await readAll(rbdExportReader('images', imageId, 'snap', ceph.user, ceph.confPath));
    expect(exported.equals(data)).toBe(true);
  });

  test("fetchVerifiedSource over rbdExportReader proves the bytes against Glance's os_hash_value", async () => {
    const image = (await client.get(`/v2/images/${imageId}`)).json();
    expect(image.os_hash_algo).toBe('sha512');
    const source = await fetchVerifiedSource(
      { imageId, checksum: image.checksum, osHashAlgo: image.os_hash_algo, osHashValue: image.os_hash_value, size: image.size },
      (signal) => rbdExportReader('images', imageId, 'snap', ceph.user, ceph.confPath, signal),
      workDir,
      AbortSignal.timeout(60_000),
    );
    expect(source).toMatchObject({ bytes: data.length, verifiedBy: 'os_hash_value' });
    const copy = await readFile(source.path);
    expect(createHash('sha512').update(copy).digest('hex')).toBe(image.os_hash_value);
    await rm(source.path);
  });

  test('rbdExportReader fails with a permanent error naming a snapshot that does not exist', async () => {
    const error = await readAll(rbdExportReader('images', imageId, 'nosuchsnap', ceph.user, ceph.confPath)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RawCacheError);
    expect(error).toMatchObject({ permanent: true, message: expect.stringContaining(`images/${imageId}@nosuchsnap`) });
  });

  test('stop() ends every daemon and removes the cluster dir', async () => {
    await client.delete(`/v2/images/${imageId}`);
    await glance.stop();
    const { pids, dir } = ceph;
    expect(Object.keys(pids).sort()).toEqual(['mgr.x', 'mon.a', 'osd.0']);
    await ceph.stop();
    for (const pid of Object.values(pids)) expect(() => process.kill(pid, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
    expect(existsSync(dir)).toBe(false);
  });
});
