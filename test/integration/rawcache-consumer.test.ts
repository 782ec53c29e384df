import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { appendFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startCeph, writeGlanceRbdConf, type CephCluster } from '../harness/ceph';
import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient } from '../harness/http';
import { makeQcow2, rawSha256Of, sha256OfOutput } from '../harness/images';
import { freePort } from '../harness/ports';
import { imageSteps, writeRawCacheConfig, type Image } from '../harness/rawcache';
import { startProxy, startWorker, type RunningProxy } from '../harness/proxy';

/**
 * `stx-glance-proxy volume-from-image`, the consumer StarlingX's Cinder is: Glance keeps images in
 * Ceph RBD, a real worker makes `images/<id>_raw@snap`, and the command, running as Ceph's
 * `client.cinder` (write on `volumes`, read-only on `images`, as Cinder is deployed), clones that
 * snapshot into `volumes/<name>`. The clone's bytes are compared with `qemu-img convert -O raw` of
 * the uploaded qcow2.
 */

const CLI = resolve(__dirname, '..', '..', 'dist', 'cli.js');
const GiB = 1024 ** 3;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

describe('volume-from-image: a volume cloned from the RAW copy, as Cinder makes one', () => {
  let ceph: CephCluster;
  let glance: RunningGlance;
  let proxy: RunningProxy;
  let worker: RunningProxy;
  let dir: string;
  let configFile: string;
  let client: HttpClient;
  let direct: HttpClient;

  beforeAll(async () => {
    ceph = await startCeph();
    glance = await startGlance({ store: 'rbd', extraConf: await writeGlanceRbdConf(ceph) });
    dir = await mkdtemp(join(tmpdir(), 'stx-rawcache-consumer-'));
    configFile = writeRawCacheConfig(dir, {
      upstream: glance.url,
      target: { kind: 'rbd', rbd_pool: ceph.pool, rbd_user: ceph.user, ceph_conf: ceph.confPath },
    });
    // Cinder's pool and Ceph identity, with the rights a StarlingX deployment gives it.
    await ceph.admin(['osd', 'pool', 'create', 'volumes', '8', '8']);
    await ceph.admin(['osd', 'pool', 'application', 'enable', 'volumes', 'rbd']);
    await appendFile(
      ceph.keyringPath,
      await ceph.admin(['auth', 'get-or-create', 'client.cinder', 'mon', 'profile rbd', 'osd', `profile rbd pool=volumes, profile rbd-read-only pool=${ceph.pool}`, 'mgr', 'profile rbd pool=volumes']),
    );
    proxy = await startProxy({ upstream: glance.url, config: configFile });
    worker = await startWorker({ config: configFile, opsPort: await freePort() });
    client = new HttpClient(proxy.url);
    direct = new HttpClient(glance.url);
  }, 180_000);

  afterAll(async () => {
    client?.destroy();
    direct?.destroy();
    await worker?.stop();
    await proxy?.stop();
    await glance?.stop();
    await ceph?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 120_000);

  const steps = () => imageSteps(client, () => worker.logs().slice(-3000));
  const waitForCached = (id: string) => steps().waitForImage(id, (i) => i.cache_raw_status === 'Cached', 90_000);

  /** Runs the command as client.cinder; never throws, the exit code is part of what is checked. */
  const volumeFromImage = (imageId: string, name: string, ...flags: string[]): Promise<Run> =>
    new Promise((done) => {
      execFile(
        process.execPath,
        [CLI, 'volume-from-image', imageId, '--pool', 'volumes', '--name', name, '--config', configFile, '--ceph-user', 'cinder', ...flags],
        { timeout: 120_000 },
        (error, stdout, stderr) => done({ code: error ? ((error as { code?: number }).code ?? null) : 0, stdout, stderr }),
      );
    });
  const asCinder = (args: string[]) => ['--conf', ceph.confPath, '--id', 'cinder', ...args];
  const rbdInfo = async (spec: string) => JSON.parse(await runRbdAsCinder(['info', '--format', 'json', spec]));
  const volumes = async (): Promise<string[]> => JSON.parse(await runRbdAsCinder(['ls', '--pool', 'volumes', '--format', 'json']));
  const runRbdAsCinder = (args: string[]): Promise<string> =>
    new Promise((done, fail) => execFile('rbd', asCinder(args), { timeout: 30_000 }, (error, stdout, stderr) => (error ? fail(new Error(stderr)) : done(stdout))));
  const cloneSha256 = (spec: string) => sha256OfOutput('rbd', asCinder(['export', '--no-progress', spec, '-']));

  /** An active image made in Glance directly (no trigger, no worker), with raw-cache fields as given. */
  const directImage = async (fields: Record<string, string>): Promise<Image> => {
    const created = await direct.sendJson('POST', '/v2/images', { name: `direct-${randomUUID().slice(0, 8)}`, disk_format: 'qcow2', container_format: 'bare', ...fields });
    expect(created.status).toBe(201);
    const image = created.json();
    await imageSteps(direct).upload(image.id, makeQcow2(dir, `${image.id}.qcow2`, 16, 1));
    return image;
  };

  let cached: Image;
  let cachedFile: string;

  describe('with a cached image', () => {
    beforeAll(async () => {
      cachedFile = makeQcow2(dir, 'cached.qcow2', 64, 8, 0x3c);
      cached = await steps().create({ name: 'cached', cache_raw: 'True' });
      await steps().upload(cached.id, cachedFile);
      cached = await waitForCached(cached.id);
    }, 120_000);

    it('clones <id>_raw@snap into volumes/<name>, whose bytes are qemu-img convert -O raw of the qcow2', async () => {
      const run = await volumeFromImage(cached.id, 'volume-exact', '--json');
      expect(run).toMatchObject({ code: 0, stderr: '' });
      expect(JSON.parse(run.stdout)).toEqual({
        image: cached.id,
        volume: 'volumes/volume-exact',
        method: 'clone',
        parent: `${ceph.pool}/${cached.id}_raw@snap`,
        sizeBytes: 64 * 1024 ** 2,
      });
      const info = await rbdInfo('volumes/volume-exact');
      expect(info).toMatchObject({ size: 64 * 1024 ** 2, parent: { pool: ceph.pool, image: `${cached.id}_raw`, snapshot: 'snap' } });
      expect(await cloneSha256('volumes/volume-exact')).toBe(await rawSha256Of(dir, cachedFile));
    });

    it('grows the clone to the requested size in GiB, as Cinder does for a larger volume', async () => {
      const run = await volumeFromImage(cached.id, 'volume-grown', '--size', '1');
      expect(run).toMatchObject({ code: 0, stdout: `volume volumes/volume-grown (${GiB} bytes) cloned from ${ceph.pool}/${cached.id}_raw@snap\n` });
      expect(await rbdInfo('volumes/volume-grown')).toMatchObject({ size: GiB, parent: { pool: ceph.pool, image: `${cached.id}_raw`, snapshot: 'snap' } });
    });

    it('refuses an existing destination and leaves it as it was', async () => {
      const before = await cloneSha256('volumes/volume-exact');
      const run = await volumeFromImage(cached.id, 'volume-exact');
      expect(run).toEqual({ code: 1, stdout: '', stderr: 'stx-glance-proxy: the destination volumes/volume-exact already exists: refused (choose another name or remove it)\n' });
      expect(await cloneSha256('volumes/volume-exact')).toBe(before);
    });

    it('refuses a raw copy in a pool that is not allowed', async () => {
      const run = await volumeFromImage(cached.id, 'volume-pool', '--image-pools', 'golden,other');
      expect(run).toEqual({
        code: 1,
        stdout: '',
        stderr: `stx-glance-proxy: image ${cached.id}'s raw copy is in pool ${ceph.pool}, which is not an allowed image pool (golden, other)\n`,
      });
      expect(await volumes()).not.toContain('volume-pool');
    });

    it('refuses a volume smaller than the image', async () => {
      const small = await steps().create({ name: 'large', cache_raw: 'True' });
      await steps().upload(small.id, makeQcow2(dir, 'large.qcow2', 1100, 1));
      await waitForCached(small.id);
      const run = await volumeFromImage(small.id, 'volume-small', '--size', '1');
      expect(run.code).toBe(1);
      expect(run.stderr).toBe(`stx-glance-proxy: image ${small.id} is 1.1 GiB (${1100 * 1024 ** 2} bytes): it does not fit in a volume of 1.0 GiB\n`);
      expect(await volumes()).not.toContain('volume-small');
    });
  });

  describe('refusals', () => {
    it('refuses an image that has no raw cache, and --fallback downloads, converts and imports it instead', async () => {
      const plainFile = makeQcow2(dir, 'plain.qcow2', 48, 5, 0x71);
      const plain = await steps().create({ name: 'plain' });
      await steps().upload(plain.id, plainFile);

      const refused = await volumeFromImage(plain.id, 'volume-plain');
      expect(refused).toEqual({ code: 1, stdout: '', stderr: `stx-glance-proxy: image ${plain.id} is not cached: it has no raw cache (cache_raw is not set)\n` });
      expect(await volumes()).not.toContain('volume-plain');

      const imported = await volumeFromImage(plain.id, 'volume-plain', '--fallback', '--json');
      expect(imported.code).toBe(0);
      expect(JSON.parse(imported.stdout)).toEqual({
        image: plain.id,
        volume: 'volumes/volume-plain',
        method: 'import',
        sizeBytes: 48 * 1024 ** 2,
        why: `image ${plain.id} is not cached: it has no raw cache (cache_raw is not set)`,
      });
      expect((await rbdInfo('volumes/volume-plain')).parent).toBeUndefined();
      expect(await cloneSha256('volumes/volume-plain')).toBe(await rawSha256Of(dir, plainFile));
    });

    it('refuses an image whose raw cache is not Cached, with its status', async () => {
      const image = await directImage({ cache_raw: 'True', cache_raw_status: 'Error', cache_raw_error: 'The RAW copy failed 2 times' });
      const run = await volumeFromImage(image.id, 'volume-error');
      expect(run).toEqual({ code: 1, stdout: '', stderr: `stx-glance-proxy: image ${image.id} is not cached: cache_raw_status is Error (The RAW copy failed 2 times)\n` });
    });

    it('refuses a file:// copy: no clone can be made from a file', async () => {
      const image = await directImage({ cache_raw: 'True', cache_raw_status: 'Cached', cache_raw_url: 'file:///var/lib/glance/raw/x.raw' });
      const run = await volumeFromImage(image.id, 'volume-file');
      expect(run).toEqual({
        code: 1,
        stdout: '',
        stderr: `stx-glance-proxy: image ${image.id} has its raw copy in a file (file:///var/lib/glance/raw/x.raw): no RBD clone can be made from a file copy\n`,
      });
    });

    it("refuses a raw copy on another cluster's fsid", async () => {
      const otherFsid = randomUUID();
      const id = randomUUID();
      const image = await directImage({ id, cache_raw: 'True', cache_raw_status: 'Cached', cache_raw_url: `rbd://${otherFsid}/${ceph.pool}/${id}_raw/snap` });
      const run = await volumeFromImage(image.id, 'volume-fsid');
      expect(run).toEqual({
        code: 1,
        stdout: '',
        stderr: `stx-glance-proxy: image ${id}'s raw copy is on another Ceph cluster (fsid ${otherFsid}) than this one (fsid ${ceph.fsid})\n`,
      });
      expect(await volumes()).not.toContain('volume-fsid');
    });

    it('refuses a raw copy whose snapshot is missing or not protected', async () => {
      const unprotected = randomUUID();
      await ceph.rbd(['create', '--size', '16M', `${ceph.pool}/${unprotected}_raw`]);
      await ceph.rbd(['snap', 'create', '--no-progress', `${ceph.pool}/${unprotected}_raw@snap`]);
      await directImage({ id: unprotected, cache_raw: 'True', cache_raw_status: 'Cached', cache_raw_url: `rbd://${ceph.fsid}/${ceph.pool}/${unprotected}_raw/snap` });
      expect(await volumeFromImage(unprotected, 'volume-unprotected')).toEqual({
        code: 1,
        stdout: '',
        stderr: `stx-glance-proxy: the snapshot ${ceph.pool}/${unprotected}_raw@snap is not protected: a clone needs a protected snapshot\n`,
      });

      const snapless = randomUUID();
      await ceph.rbd(['create', '--size', '16M', `${ceph.pool}/${snapless}_raw`]);
      await directImage({ id: snapless, cache_raw: 'True', cache_raw_status: 'Cached', cache_raw_url: `rbd://${ceph.fsid}/${ceph.pool}/${snapless}_raw/snap` });
      expect(await volumeFromImage(snapless, 'volume-snapless')).toEqual({
        code: 1,
        stdout: '',
        stderr: `stx-glance-proxy: the raw copy has no snapshot ${ceph.pool}/${snapless}_raw@snap: nothing to clone\n`,
      });
      expect(await volumes()).toEqual(expect.not.arrayContaining(['volume-unprotected', 'volume-snapless']));
    });

    it('says in one line that Glance did not answer', async () => {
      const port = await freePort();
      expect(await volumeFromImage(randomUUID(), 'volume-no-glance', '--upstream', `http://127.0.0.1:${port}`)).toEqual({
        code: 1,
        stdout: '',
        stderr: `stx-glance-proxy: Glance at http://127.0.0.1:${port} did not answer: connect ECONNREFUSED 127.0.0.1:${port}\n`,
      });
    });

    it('refuses an image Glance does not have', async () => {
      const id = randomUUID();
      expect(await volumeFromImage(id, 'volume-none')).toEqual({ code: 1, stdout: '', stderr: `stx-glance-proxy: no image ${id} in Glance\n` });
    });
  });

  describe('when the image is deleted while volumes are cloned from its copy', () => {
    it('keeps the copy and the clone intact (the worker cannot remove a parent with children), and removes the copy once the clones are gone', async () => {
      const file = makeQcow2(dir, 'parent.qcow2', 32, 4, 0x2b);
      const image = await steps().create({ name: 'parent', cache_raw: 'True' });
      await steps().upload(image.id, file);
      await waitForCached(image.id);
      expect((await volumeFromImage(image.id, 'volume-child')).code).toBe(0);
      const expected = await rawSha256Of(dir, file);

      expect((await client.delete(`/v2/images/${image.id}`)).status).toBe(204);
      // Every attempt meets the clone; after max_attempts the worker gives up (nothing to record: the image is gone).
      await worker.waitForLog(`the raw copy ${ceph.pool}/${image.id}_raw@snap has clones (volumes created from it)`, 60_000);
      await worker.waitForLog(new RegExp(`^(?=.*"image_id":"${image.id}")(?=.*"message":"the failure cannot be recorded on the image)`), 60_000);
      expect((await client.get(`/v2/images/${image.id}`)).status).toBe(404);
      expect(JSON.parse(await ceph.rbd(['snap', 'ls', '--format', 'json', `${ceph.pool}/${image.id}_raw`]))).toEqual([
        expect.objectContaining({ name: 'snap', protected: 'true' }),
      ]);
      expect(await cloneSha256('volumes/volume-child')).toBe(expected);

      // The volume goes (or is flattened); the next sweep finds the orphan copy and the worker removes it.
      await runRbdAsCinder(['rm', '--no-progress', 'volumes/volume-child']);
      const sweep = await new Promise<string>((done, fail) =>
        execFile(process.execPath, [CLI, 'reconcile', '--config', configFile, '--json'], (error, stdout) => (error ? fail(error) : done(stdout))),
      );
      expect(JSON.parse(sweep).orphans).toContain(image.id);
      await worker.waitForLog(new RegExp(`^(?=.*"image_id":"${image.id}")(?=.*"message":"image is gone; its raw copy is removed")`), 60_000);
      const left = JSON.parse(await ceph.rbd(['ls', '--pool', ceph.pool, '--format', 'json'])) as string[];
      expect(left.filter((name) => name.startsWith(image.id))).toEqual([]);
    }, 180_000);
  });
});
