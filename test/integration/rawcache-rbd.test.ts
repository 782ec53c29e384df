import { execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startCeph, writeGlanceRbdConf, type CephCluster } from '../harness/ceph';
import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient } from '../harness/http';
import { makeQcow2, rawSha256Of, sha256OfOutput } from '../harness/images';
import { freePort } from '../harness/ports';
import { isQemuImgConvertOf, processExists, waitForProcess } from '../harness/processes';
import { waitUntil } from '../harness/queue-contract';
import { imageSteps, writeRawCacheConfig, type Image } from '../harness/rawcache';
import { startProxy, startWorker, type RunningProxy } from '../harness/proxy';
import { PATCH_V21 } from './support/stx-images';
import { SPEC_CREATE_REQUEST, SPEC_LIST } from '../fixtures/spec-examples';

/**
 * The raw cache as StarlingX ran it: Glance keeps images in Ceph RBD (default backend `ceph`), the
 * proxy records triggers in the SQLite queue, and a `stx-glance-proxy worker` with the rbd target
 * reads each source straight from RBD and writes its RAW copy as `images/<id>_raw@snap`, protected.
 * The worker reaches Glance through a relay that refuses image data downloads, so a copy can only
 * be made from what the worker read out of Ceph itself.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const ISO_DATE = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/;
/** The virtual size of the spec's cirros image (its cache_raw_size, "41126400"). */
const CIRROS_VIRTUAL_BYTES = 41126400;

type Json = Record<string, any>;

/**
 * The spec's image with what belongs to one deployment replaced by ours: the id (in self, file and
 * the rbd URLs), the owner, the cluster fsid, the dates (any ISO-8601 time), and the size, checksum
 * and virtual_size of the data we uploaded. virtual_size is null in the spec because the Glance of
 * 2016 did not compute it; Glance 25 does, and the raw copy's size is exactly that.
 */
function specImageFor(spec: Json, actual: Json, fsid: string, data: { size: number; checksum: string; virtualSize: number }): Json {
  const replaceIds = (value: unknown): unknown =>
    typeof value === 'string'
      ? value.split(spec.id).join(actual.id).replace('840f16bc-3238-4adb-8700-6b9876c23462', fsid)
      : value;
  const expected: Json = {};
  for (const [key, value] of Object.entries(spec)) expected[key] = replaceIds(value);
  return {
    ...expected,
    owner: actual.owner,
    created_at: expect.stringMatching(ISO_DATE),
    updated_at: expect.stringMatching(ISO_DATE),
    size: data.size,
    checksum: data.checksum,
    virtual_size: data.virtualSize,
  };
}

/** The fields of `image` that `spec` has, so that Glance 25's additions (os_hash_*, stores, locations) do not count. */
function fieldsOf(image: Json, spec: Json): Json {
  return Object.fromEntries(Object.keys(spec).map((key) => [key, image[key]]));
}

function md5File(path: string): string {
  return createHash('md5').update(readFileSync(path)).digest('hex');
}

interface GlanceRelay {
  url: string;
  /** Every request the relay passed on or refused, as "METHOD /path". */
  seen: string[];
  /** The image data downloads it refused. */
  refused: string[];
  /** Images whose data downloads are passed on (those the worker must read through Glance). */
  allowDownloads: Set<string>;
  /** The Range headers of the requests passed on, by "METHOD /path". */
  ranges: Map<string, string>;
  close(): Promise<void>;
}

/**
 * Glance as the worker sees it: everything is relayed to the real Glance except `GET .../file`,
 * which gets a 403 unless the image is in `allowDownloads`. A worker that tried to read image data
 * through Glance's API would fail.
 */
async function startDownloadRefusingRelay(glanceUrl: string): Promise<GlanceRelay> {
  const upstream = new URL(glanceUrl);
  const seen: string[] = [];
  const refused: string[] = [];
  const allowDownloads = new Set<string>();
  const ranges = new Map<string, string>();
  const server: Server = createServer((req, res) => {
    const line = `${req.method} ${req.url}`;
    seen.push(line);
    if (req.headers.range !== undefined) ranges.set(line, req.headers.range);
    const download = /^\/v2\/images\/([^/?]+)\/file(\?|$)/.exec(req.url ?? '');
    if (req.method === 'GET' && download && !allowDownloads.has(download[1])) {
      refused.push(line);
      req.resume();
      res.writeHead(403, { 'Content-Type': 'text/plain' });
      res.end('403 Forbidden\n\nImage data downloads are refused to this client.');
      return;
    }
    const forwarded = httpRequest(
      { host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: { ...req.headers, host: upstream.host } },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    forwarded.once('error', (error) => res.destroy(error));
    req.pipe(forwarded);
  });
  const port = await freePort();
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    refused,
    allowDownloads,
    ranges,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

describe('raw cache with Glance on Ceph RBD and the rbd target', () => {
  let ceph: CephCluster;
  let glance: RunningGlance;
  let relay: GlanceRelay;
  let proxy: RunningProxy;
  let worker: RunningProxy;
  let dir: string;
  let client: HttpClient;

  beforeAll(async () => {
    ceph = await startCeph();
    glance = await startGlance({ store: 'rbd', extraConf: await writeGlanceRbdConf(ceph) });
    relay = await startDownloadRefusingRelay(glance.url);
    dir = await mkdtemp(join(tmpdir(), 'stx-rawcache-rbd-'));
    const configFile = writeRawCacheConfig(dir, {
      upstream: glance.url,
      // The worker's own way to Glance; the proxy keeps talking to Glance itself.
      rawcache: { glance_url: relay.url },
      target: { kind: 'rbd', rbd_pool: ceph.pool, rbd_user: ceph.user, ceph_conf: ceph.confPath },
    });
    proxy = await startProxy({ upstream: glance.url, config: configFile });
    worker = await startWorker({ config: configFile, opsPort: await freePort() });
    client = new HttpClient(proxy.url);
  }, 180_000);

  afterAll(async () => {
    client?.destroy();
    await worker?.stop();
    await proxy?.stop();
    await relay?.close();
    await glance?.stop();
    await ceph?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 120_000);

  const steps = () => imageSteps(client, () => worker.logs().slice(-3000));
  const create = (body: Json) => steps().create(body) as Promise<Json>;
  const upload = (id: string, file: string) => steps().upload(id, file);
  const show = (id: string) => steps().show(id) as Promise<Json>;
  const waitForImage = (id: string, done: (image: Json) => boolean, timeoutMs = 90_000, failOnError = true) =>
    steps().waitForImage(id, done as (image: Image) => boolean, timeoutMs, failOnError) as Promise<Json>;
  const poolImages = async (): Promise<string[]> => JSON.parse(await ceph.rbd(['ls', '--pool', ceph.pool, '--format', 'json']));
  const rbdNamesOf = async (id: string) => (await poolImages()).filter((name) => name.startsWith(id));
  const waitForPool = async (what: string, done: (names: string[]) => boolean, timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const names = await poolImages();
      if (done(names)) return names;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; pool ${ceph.pool} holds ${JSON.stringify(names)}\n${worker.logs().slice(-3000)}`);
      await sleep(100);
    }
  };
  const setCacheRaw = async (id: string, value: string) => {
    const res = await client.request({
      method: 'PATCH',
      path: `/v2/images/${id}`,
      headers: { 'Content-Type': PATCH_V21 },
      body: JSON.stringify([{ op: 'replace', path: '/cache_raw', value }]),
    });
    expect(res.status).toBe(200);
  };

  describe("the spec's list example", () => {
    let guest: Json;
    let cirros: Json;
    let cirrosFile: string;
    let guestFile: string;

    beforeAll(async () => {
      guestFile = join(dir, 'sample-guest.raw');
      writeFileSync(guestFile, Buffer.alloc(3 * 1024 * 1024, 0x42));
      guest = await create({ name: 'sample-guest', disk_format: 'raw', container_format: 'bare', visibility: 'public' });
      await upload(guest.id, guestFile);

      // The exact virtual size of the spec's cirros image, with some data to convert.
      cirrosFile = join(dir, 'cirros.qcow2');
      execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', cirrosFile, String(CIRROS_VIRTUAL_BYTES)]);
      execFileSync('qemu-io', ['-f', 'qcow2', '-c', 'write -q -P 0x5a 1M 12M', cirrosFile]);
      cirros = await create(SPEC_CREATE_REQUEST);
      await upload(cirros.id, cirrosFile);
      await waitForImage(cirros.id, (i) => i.cache_raw_status === 'Cached');
    }, 120_000);

    it("lists the cached cirros image and the plain raw one field by field as the spec's example does", async () => {
      const res = await client.get('/v2/images?sort_key=name&sort_dir=asc&limit=20');
      expect(res.status).toBe(200);
      const list = res.json();
      expect({ schema: list.schema, first: list.first }).toEqual({ schema: SPEC_LIST.schema, first: SPEC_LIST.first });
      expect(list.images.map((i: Json) => i.name).sort()).toEqual(['cirros', 'sample-guest']);

      const listedCirros = list.images.find((i: Json) => i.name === 'cirros');
      expect(listedCirros.id).toBe(cirros.id);
      const specCirros = SPEC_LIST.images[1];
      expect(fieldsOf(listedCirros, specCirros)).toEqual(
        specImageFor(specCirros, listedCirros, ceph.fsid, { size: readFileSync(cirrosFile).length, checksum: md5File(cirrosFile), virtualSize: CIRROS_VIRTUAL_BYTES }),
      );
      // Spelled out, the fields the raw cache is about:
      expect(listedCirros).toMatchObject({
        store: 'rbd',
        direct_url: `rbd://${ceph.fsid}/images/${cirros.id}/snap`,
        cache_raw_status: 'Cached',
        cache_raw_url: `rbd://${ceph.fsid}/images/${cirros.id}_raw/snap`,
        cache_raw_size: String(CIRROS_VIRTUAL_BYTES),
        virtual_size: CIRROS_VIRTUAL_BYTES,
      });
      expect(listedCirros.cache_raw_error).toBeUndefined();

      const listedGuest = list.images.find((i: Json) => i.name === 'sample-guest');
      expect(listedGuest.id).toBe(guest.id);
      const specGuest = SPEC_LIST.images[0];
      const guestSize = readFileSync(guestFile).length;
      expect(fieldsOf(listedGuest, specGuest)).toEqual(
        specImageFor(specGuest, listedGuest, ceph.fsid, { size: guestSize, checksum: md5File(guestFile), virtualSize: guestSize }),
      );
      // No cache_raw: no raw-cache field at all, as in the spec.
      expect(Object.keys(listedGuest).filter((k) => k.startsWith('cache_raw'))).toEqual([]);
    });

    it('shows the cirros image exactly as the list does', async () => {
      const listed = (await client.get('/v2/images?sort_key=name&sort_dir=asc&limit=20')).json().images.find((i: Json) => i.name === 'cirros');
      expect(await show(cirros.id)).toEqual(listed);
    });

    it('answered the create as the spec does, with the extension properties in canonical form', () => {
      expect(cirros).toMatchObject({ ...SPEC_CREATE_REQUEST, status: 'queued', size: null, virtual_size: null, checksum: null, min_ram: 0, min_disk: 0, protected: false, tags: [] });
      expect(cirros.store).toBeUndefined();
      expect(cirros.cache_raw_status).toBeUndefined();
    });

    it('keeps the copy as images/<id>_raw@snap, protected, holding exactly what qemu-img convert -O raw makes', async () => {
      const snapshots = JSON.parse(await ceph.rbd(['snap', 'ls', '--format', 'json', `images/${cirros.id}_raw`]));
      expect(snapshots).toEqual([expect.objectContaining({ name: 'snap', protected: 'true', size: CIRROS_VIRTUAL_BYTES })]);
      expect(await sha256OfOutput('rbd', ['--conf', ceph.confPath, '--id', ceph.user, 'export', '--no-progress', `images/${cirros.id}_raw@snap`, '-'])).toBe(
        await rawSha256Of(dir, cirrosFile),
      );
      // Beside Glance's own image, which stays as Glance made it.
      expect(await rbdNamesOf(cirros.id)).toEqual(expect.arrayContaining([cirros.id, `${cirros.id}_raw`]));
      expect(await rbdNamesOf(cirros.id)).toHaveLength(2);
    });

    it('read the source straight from RBD: the worker never downloaded image data through Glance', () => {
      expect(relay.refused).toEqual([]);
      // It did talk to Glance through the relay: it read the image and recorded its state there.
      expect(relay.seen).toEqual(expect.arrayContaining([`GET /v2/images/${cirros.id}`, `PATCH /v2/images/${cirros.id}`]));
      const converting = worker.logs().split('\n').filter((l) => l.includes('"message":"converting to RAW"') && l.includes(cirros.id));
      expect(converting).toHaveLength(1);
    });
  });

  it('removes <id>_raw when cache_raw is turned off, and keeps the image', async () => {
    const source = makeQcow2(dir, 'off.qcow2', 32, 4, 0x21);
    const { id } = await create({ name: 'off', container_format: 'bare', disk_format: 'qcow2', cache_raw: 'True' });
    await upload(id, source);
    await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
    expect(await rbdNamesOf(id)).toContain(`${id}_raw`);

    await setCacheRaw(id, 'False');
    const image = await waitForImage(id, (i) => i.cache_raw_status === undefined && i.cache_raw_url === undefined && i.cache_raw_size === undefined);
    expect(image).toMatchObject({ cache_raw: 'False', status: 'active', store: 'rbd' });
    expect(await rbdNamesOf(id)).toEqual([id]);
  });

  it('removes <id>_raw when the image is deleted through the proxy', async () => {
    const source = makeQcow2(dir, 'deleted.qcow2', 32, 4, 0x22);
    const { id } = await create({ name: 'deleted', container_format: 'bare', disk_format: 'qcow2', cache_raw: 'True' });
    await upload(id, source);
    await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
    expect(await rbdNamesOf(id)).toEqual(expect.arrayContaining([id, `${id}_raw`]));

    expect((await client.delete(`/v2/images/${id}`)).status).toBe(204);
    await waitForPool(`no ${id}* in the pool`, (names) => !names.some((n) => n.startsWith(id)));
  });

  const workFilesOf = (id: string) => {
    try {
      return readdirSync(join(dir, 'work')).filter((name) => name.startsWith(id));
    } catch {
      return [];
    }
  };
  const workerSaid = (id: string, message: string) =>
    worker.logs().split('\n').some((l) => l.includes(`"image_id":"${id}"`) && l.includes(`"message":"${message}"`));

  it('cancels the conversion when the image is deleted while the worker reads it from RBD, leaving nothing', async () => {
    const source = makeQcow2(dir, 'early.qcow2', 256, 128, 0x34);
    const { id } = await create({ name: 'gone-while-read', container_format: 'bare', disk_format: 'qcow2', cache_raw: 'True' });
    await upload(id, source);
    // Held while it exports the source: no partial copy yet, and only the worker's cancel ends it.
    const reader = await waitForProcess((argv) => argv[0].endsWith('rbd') && argv.includes('export') && argv.some((a) => a.includes(id)), 60_000, `rbd export of ${id}`);
    process.kill(reader, 'SIGSTOP');
    // qemu-img converts from the snapshot meanwhile: at most a partial copy, never the final one.
    expect((await rbdNamesOf(id)).filter((name) => name !== id && !name.startsWith(`${id}_raw_partial-`))).toEqual([]);
    expect((await client.delete(`/v2/images/${id}`)).status).toBe(204);

    await worker.waitForLog(new RegExp(`^(?=.*"image_id":"${id}")(?=.*"message":"conversion cancelled")(?=.*"why":"image-gone")`), 30_000);
    // Killed by the worker's cancel (it stays stopped otherwise): gone once the kernel has ended it.
    await waitUntil(() => !processExists(reader), 10_000, `rbd export (pid ${reader}) to end`);
    await waitForPool(`no ${id}* in the pool`, (names) => !names.some((n) => n.startsWith(id)));
    await worker.waitForLog(new RegExp(`^(?=.*"image_id":"${id}")(?=.*"message":"image is gone; its raw copy is removed")`));
    await waitUntil(() => workFilesOf(id).length === 0, 10_000, `no work file of ${id}`);
    expect(await rbdNamesOf(id)).toEqual([]);
    expect(workerSaid(id, 'raw copy written')).toBe(false);
    expect((await client.get(`/v2/images/${id}`)).status).toBe(404);
  }, 240_000);

  it('leaves nothing in the pool when the image is deleted while its copy is being written', async () => {
    const source = makeQcow2(dir, 'mid.qcow2', 256, 128, 0x33);
    const { id } = await create({ name: 'gone-while-written', container_format: 'bare', disk_format: 'qcow2', cache_raw: 'True' });
    await upload(id, source);
    // Held while it writes the copy: a stopped qemu-img cannot finish it, only the worker's cancel ends it.
    const convert = await waitForProcess(isQemuImgConvertOf(id), 90_000, `qemu-img convert of ${id}`);
    process.kill(convert, 'SIGSTOP');
    expect((await client.delete(`/v2/images/${id}`)).status).toBe(204);

    await worker.waitForLog(new RegExp(`^(?=.*"image_id":"${id}")(?=.*"message":"conversion cancelled")(?=.*"why":"image-gone")`), 30_000);
    expect(processExists(convert)).toBe(false);
    await waitForPool(`no ${id}* in the pool`, (names) => !names.some((n) => n.startsWith(id)), 90_000);
    await worker.waitForLog(new RegExp(`^(?=.*"image_id":"${id}")(?=.*"message":"image is gone; its raw copy is removed")`));
    await waitUntil(() => workFilesOf(id).length === 0, 10_000, `no work file of ${id}`);
    expect(await rbdNamesOf(id)).toEqual([]);
    expect(workerSaid(id, 'raw copy written')).toBe(false);
    expect(workerSaid(id, 'raw copy cached')).toBe(false);
    expect((await client.get(`/v2/images/${id}`)).status).toBe(404);
  }, 240_000);

  describe('trust: where image data is read from, what a raw image records, what removal spares', () => {
    /** Not the test cluster's fsid: a location naming it is on some other Ceph cluster. */
    const OTHER_FSID = '0c1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5';
    let glanceDirect: HttpClient;

    beforeAll(() => {
      glanceDirect = new HttpClient(glance.url);
    });
    afterAll(() => glanceDirect?.destroy());

    /**
     * An image whose only location is `rbd://<fsid>/images/<data>/snap`, where <data> is an image
     * uploaded here with `file`, and with that image's checksum and os_hash as validation data. Glance
     * reads such a location from its own cluster whatever fsid it names (glance_store ignores it).
     */
    const imageAtLocation = async (name: string, diskFormat: string, file: string, fsid: string): Promise<string> => {
      const data = await create({ name: `${name}-data`, disk_format: diskFormat });
      await upload(data.id, file);
      const uploaded = await show(data.id);
      const image = await create({ name, disk_format: diskFormat });
      const location = {
        url: `rbd://${fsid}/${ceph.pool}/${data.id}/snap`,
        metadata: { store: 'ceph' },
        validation_data: { checksum: uploaded.checksum, os_hash_algo: uploaded.os_hash_algo, os_hash_value: uploaded.os_hash_value },
      };
      const res = await glanceDirect.request({
        method: 'PATCH',
        path: `/v2/images/${image.id}`,
        headers: { 'Content-Type': PATCH_V21 },
        body: JSON.stringify([{ op: 'add', path: '/locations/-', value: location }]),
      });
      expect({ status: res.status, body: res.status === 200 ? '' : res.text() }).toEqual({ status: 200, body: '' });
      return image.id;
    };
    const askForCopy = async (id: string) => {
      const res = await client.request({
        method: 'PATCH',
        path: `/v2/images/${id}`,
        headers: { 'Content-Type': PATCH_V21 },
        body: JSON.stringify([{ op: 'add', path: '/cache_raw', value: 'True' }]),
      });
      expect(res.status).toBe(200);
    };
    const downloadsOf = (id: string) => relay.seen.filter((line) => line.startsWith(`GET /v2/images/${id}/file`));
    const workerLines = (id: string, message: string) => worker.logs().split('\n').filter((l) => l.includes(`"image_id":"${id}"`) && l.includes(`"message":"${message}"`));

    it("converts a qcow2 in place from Glance's snapshot (rbd: source), hashing it beside the convert: no download, no work file", async () => {
      const file = makeQcow2(dir, 'in-place.qcow2', 32, 4, 0x51);
      const { id } = await create({ name: 'in-place', disk_format: 'qcow2', cache_raw: 'True' });
      await upload(id, file);
      const image = await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
      expect(image.cache_raw_url).toBe(`rbd://${ceph.fsid}/${ceph.pool}/${id}_raw/snap`);
      expect(workerLines(id, 'reading the image data from RBD in place')[0]).toMatch(/"converted_in_place":true/);
      expect(downloadsOf(id)).toEqual([]);
      expect(workerSaid(id, 'downloading the image data')).toBe(false);
      expect(workFilesOf(id)).toEqual([]);
      expect(await sha256OfOutput('rbd', ['--conf', ceph.confPath, '--id', ceph.user, 'export', '--no-progress', `${ceph.pool}/${id}_raw@snap`, '-'])).toBe(await rawSha256Of(dir, file));
    });

    it('does not cache an image whose RBD snapshot was changed after the upload: the in-place convert leaves no copy and no leftover', async () => {
      const file = makeQcow2(dir, 'tampered.qcow2', 32, 4, 0x52);
      // No cache_raw yet: nothing reads the image before it is changed.
      const { id } = await create({ name: 'tampered', disk_format: 'qcow2' });
      await upload(id, file);
      const size = readFileSync(file).length;
      // The last 4 KiB of the qcow2 are guest data: the image stays a valid qcow2, with other bytes
      // than those Glance hashed. Glance's snapshot is replaced by one of the changed image.
      const snap = `${ceph.pool}/${id}@snap`;
      await ceph.rbd(['snap', 'unprotect', snap]);
      await ceph.rbd(['snap', 'rm', '--no-progress', snap]);
      execFileSync('qemu-io', ['-f', 'raw', '-c', `write -q -P 0x99 ${size - 4096} 4096`, `rbd:${ceph.pool}/${id}:id=${ceph.user}:conf=${ceph.confPath}`]);
      await ceph.rbd(['snap', 'create', '--no-progress', snap]);
      await ceph.rbd(['snap', 'protect', snap]);
      expect(await sha256OfOutput('rbd', ['--conf', ceph.confPath, '--id', ceph.user, 'export', '--no-progress', snap, '-'])).not.toBe(createHash('sha256').update(readFileSync(file)).digest('hex'));

      await askForCopy(id);
      const refused = await waitForImage(id, (i) => i.cache_raw_status === 'Error', 120_000, false);
      expect(refused.cache_raw_error).toMatch(/^The RAW copy failed 2 times; last error: image \S+: the data read does not match its os_hash_value \(sha512\)/);
      expect(refused.cache_raw_url).toBeUndefined();
      // Read in place both times (qemu-img converted from the snapshot), and never committed.
      expect(workerLines(id, 'reading the image data from RBD in place').every((l) => l.includes('"converted_in_place":true'))).toBe(true);
      expect(workerLines(id, 'reading the image data from RBD in place')).toHaveLength(2);
      expect(workerSaid(id, 'raw copy written')).toBe(false);
      expect(downloadsOf(id)).toEqual([]);
      // No copy, no partial, no work file: only Glance's own image.
      expect(await rbdNamesOf(id)).toEqual([id]);
      expect(workFilesOf(id)).toEqual([]);
    }, 240_000);

    it('reads a location on another Ceph cluster (another fsid) through Glance, never in place', async () => {
      const file = makeQcow2(dir, 'elsewhere.qcow2', 32, 4, 0x41);
      const id = await imageAtLocation('elsewhere', 'qcow2', file, OTHER_FSID);
      relay.allowDownloads.add(id);
      await askForCopy(id);
      const image = await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
      expect(image.cache_raw_url).toBe(`rbd://${ceph.fsid}/${ceph.pool}/${id}_raw/snap`);
      expect(downloadsOf(id)).toHaveLength(1);
      expect(workerLines(id, "reading the image data through Glance's API")[0]).toMatch(/another Ceph cluster than the one the worker's target talks to/);
      expect(workerLines(id, 'reading the image data from RBD in place')).toEqual([]);
      expect(await sha256OfOutput('rbd', ['--conf', ceph.confPath, '--id', ceph.user, 'export', '--no-progress', `${ceph.pool}/${id}_raw@snap`, '-'])).toBe(await rawSha256Of(dir, file));
    });

    it('records a raw image on the RBD store as Cached with its size and no cache_raw_url, reading its header in place', async () => {
      const file = join(dir, 'raw-here.raw');
      writeFileSync(file, Buffer.alloc(2 * 1024 * 1024, 0x43));
      const { id } = await create({ name: 'raw-here', disk_format: 'raw', cache_raw: 'True' });
      await upload(id, file);
      const image = await waitForImage(id, (i) => i.cache_raw_status === 'Cached', 30_000);
      expect(image.cache_raw_size).toBe(String(2 * 1024 * 1024));
      expect(image.cache_raw_url).toBeUndefined();
      expect(downloadsOf(id)).toEqual([]);
      expect(workerLines(id, 'reading the image data from RBD in place')).toHaveLength(1);
      expect(await rbdNamesOf(id)).toEqual([id]);
    });

    it("reads the header of a raw image through Glance's rbd store without a Range request, which that store refuses", async () => {
      const file = join(dir, 'raw-elsewhere.raw');
      writeFileSync(file, Buffer.alloc(2 * 1024 * 1024, 0x44));
      const id = await imageAtLocation('raw-elsewhere', 'raw', file, OTHER_FSID);
      relay.allowDownloads.add(id);
      await askForCopy(id);
      const image = await waitForImage(id, (i) => i.cache_raw_status === 'Cached', 30_000);
      expect(image).toMatchObject({ cache_raw_size: String(2 * 1024 * 1024) });
      expect(image.cache_raw_url).toBeUndefined();
      expect(downloadsOf(id)).toHaveLength(1);
      expect(downloadsOf(id).filter((line) => relay.ranges.has(line))).toEqual([]);
    });

    it('leaves a raw copy that a client has open alone (no blocklisting), says so after max_attempts, and removes it once the client is gone', async () => {
      const { id } = await create({ name: 'watched', container_format: 'bare', disk_format: 'qcow2', cache_raw: 'True' });
      await upload(id, makeQcow2(dir, 'watched.qcow2', 16, 2, 0x45));
      await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
      const spec = `${ceph.pool}/${id}_raw`;
      const watchersOf = async () => (JSON.parse(await ceph.rbd(['status', '--format', 'json', spec])) as { watchers: Array<{ address: string }> }).watchers;
      // A live client: `rbd watch` holds a watch on the copy until its stdin closes.
      const watch = spawn('rbd', ['--conf', ceph.confPath, '--id', ceph.user, 'watch', spec], { stdio: ['pipe', 'ignore', 'ignore'] });
      const exited = new Promise((resolve) => watch.once('exit', resolve));
      try {
        for (let deadline = Date.now() + 30_000; (await watchersOf()).length === 0; await sleep(100)) {
          if (Date.now() > deadline || watch.exitCode !== null) throw new Error(`rbd watch ${spec} did not register a watch`);
        }
        await setCacheRaw(id, 'False');
        await worker.waitForLog(new RegExp(`^(?=.*"image":"${spec}")(?=.*"message":"not removing an RBD image that a client has open; will retry")`), 30_000);
        // Retried like any failure, then recorded: the owner and operators see why the copy stays.
        const refused = await waitForImage(id, (i) => i.cache_raw_status === 'Error', 60_000, false);
        expect(refused.cache_raw_error).toMatch(/^The RAW copy failed 2 times; last error: the RBD image \S+_raw is open by a client \(watchers: /);
        // The copy is intact: nothing was unprotected, purged or cut off.
        expect(JSON.parse(await ceph.rbd(['snap', 'ls', '--format', 'json', spec]))).toEqual([expect.objectContaining({ name: 'snap', protected: 'true' })]);
        const [client] = await watchersOf();
        expect(await ceph.admin(['osd', 'blocklist', 'ls'])).not.toContain(client.address);
      } finally {
        // Closing its stdin ends `rbd watch`, which unwatches; SIGKILL only if it did not (its watch then times out).
        watch.stdin.end();
        const timer = setTimeout(() => watch.exitCode === null && process.kill(watch.pid!, 'SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      // Turning cache_raw off once more (or the sweep, or `cache retry`) queues the removal again.
      await setCacheRaw(id, 'False');
      await waitForImage(id, (i) => i.cache_raw_status === undefined && i.cache_raw_url === undefined, 60_000, false);
      expect(await rbdNamesOf(id)).toEqual([id]);
    });
  });

  it('made every copy of this suite from what it read out of Ceph: no image data download through Glance, but those of locations on another cluster', () => {
    expect(relay.refused).toEqual([]);
    const downloaded = relay.seen.filter((line) => /^GET \/v2\/images\/[^/]+\/file/.test(line));
    expect(downloaded.filter((line) => ![...relay.allowDownloads].some((id) => line.includes(id)))).toEqual([]);
    expect(worker.logs().split('\n').filter((l) => l.includes('"message":"converting to RAW"')).length).toBeGreaterThanOrEqual(5);
  });
});
