import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { closeSync, createReadStream, existsSync, mkdirSync, openSync, readdirSync, readFileSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient } from '../harness/http';
import { makeQcow2, makeQcow2WithBackingFile, rawSha256Of, sha256File } from '../harness/images';
import { freePort } from '../harness/ports';
import { isQemuImgConvertOf, processExists, waitForProcess } from '../harness/processes';
import { waitUntil } from '../harness/queue-contract';
import { imageSteps, writeRawCacheConfig, type Image } from '../harness/rawcache';
import { startProxy, startWorker, type RunningProxy } from '../harness/proxy';

/**
 * The raw cache end to end on one host: real Glance (file store), the proxy recording triggers in
 * the SQLite queue, `stx-glance-proxy worker` processes converting with the real qemu-img into a
 * directory of RAW copies.
 */

const CLI = join(__dirname, '..', '..', 'dist', 'cli.js');
/** stx_glance_proxy_rawcache_conversions_total{outcome} in a /metrics text (0 before the first). */
const conversionsCounted = (metrics: string, outcome: string): number =>
  Number(new RegExp(`^stx_glance_proxy_rawcache_conversions_total\\{outcome="${outcome}"\\} (\\d+)$`, 'm').exec(metrics)?.[1] ?? 0);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Waits for a condition (the test's own timeout bounds it). */
const until = async (condition: () => boolean) => {
  while (!condition()) await sleep(20);
};

describe('raw cache with the file store and the SQLite queue', () => {
  let glance: RunningGlance;
  let proxy: RunningProxy;
  let dir: string;
  let rawDir: string;
  let configFile: string;
  let opsPort: number;
  let client: HttpClient;
  let direct: HttpClient;
  const workers: RunningProxy[] = [];

  const startAWorker = async () => {
    const worker = await startWorker({ config: configFile, opsPort });
    workers.push(worker);
    return worker;
  };
  const stopWorkers = async () => {
    while (workers.length) await workers.pop()!.stop();
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stx-rawcache-file-'));
    // Glance's default: direct_url hidden from every reader. Locations stay visible (the dev Glance's
    // show_multiple_locations), as to the admin a worker runs as where policy shows them only to admins.
    writeFileSync(join(dir, 'glance-defaults.conf'), '[DEFAULT]\nshow_image_direct_url = False\n');
    glance = await startGlance({ extraConf: join(dir, 'glance-defaults.conf') });
    rawDir = join(dir, 'raw');
    opsPort = await freePort();
    configFile = writeRawCacheConfig(dir, { upstream: glance.url, extra: { metrics: { worker_listen: `127.0.0.1:${opsPort}` } } });
    proxy = await startProxy({ upstream: glance.url, config: configFile });
    client = new HttpClient(proxy.url);
    direct = new HttpClient(glance.url);
  }, 60_000);

  afterAll(async () => {
    client?.destroy();
    direct?.destroy();
    await stopWorkers();
    await proxy?.stop();
    await glance?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const steps = () => imageSteps(client, () => workers.map((w) => w.logs().slice(-2000)).join('\n'));
  const create = async (props: Record<string, unknown>, via = client) => (await imageSteps(via).create(props)).id as string;
  const upload = (id: string, file: string, via = client) => imageSteps(via).upload(id, file);
  const show = (id: string) => steps().show(id);
  const waitForImage = (id: string, done: (image: Image) => boolean, timeoutMs?: number, failOnError?: boolean) =>
    steps().waitForImage(id, done, timeoutMs, failOnError);
  const copyPath = (id: string) => join(rawDir, `${id}.raw`);
  const leftovers = () => {
    try {
      return readdirSync(rawDir).filter((n) => n.includes('.partial-'));
    } catch {
      return [];
    }
  };

  it('shows Queued right after the upload, then Cached with a RAW copy equal to qemu-img convert once a worker runs', async () => {
    const source = makeQcow2(dir, 'cirros.qcow2', 64, 8);
    const id = await create({ name: 'cirros', cache_raw: 'true', hw_wrs_live_migration_timeout: '400' });
    await upload(id, source);
    const queued = await show(id);
    expect(queued).toMatchObject({ status: 'active', cache_raw: 'True', cache_raw_status: 'Queued', cache_raw_size: '-', store: 'file' });
    expect(queued.cache_raw_url).toBeUndefined();

    await startAWorker();
    const cached = await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
    expect(cached).toMatchObject({ cache_raw_url: `file://${copyPath(id)}`, cache_raw_size: String(64 * 1024 * 1024), store: 'file' });
    expect(cached.cache_raw_error).toBeUndefined();
    expect(await sha256File(copyPath(id))).toBe(await rawSha256Of(dir, source));
    // The worker recorded the state in Glance itself, with its own identity.
    expect((await direct.get(`/v2/images/${id}`)).json()).toMatchObject({ cache_raw_status: 'Cached', cache_raw_url: `file://${copyPath(id)}` });
  });

  it('makes the copy when cache_raw is patched to True on an active image', async () => {
    const id = await create({ name: 'later' });
    await upload(id, makeQcow2(dir, 'later.qcow2', 32, 2));
    expect((await show(id)).cache_raw_status).toBeUndefined();
    const patched = await client.request({
      method: 'PATCH',
      path: `/v2/images/${id}`,
      headers: { 'Content-Type': 'application/openstack-images-v2.1-json-patch' },
      body: JSON.stringify([{ op: 'add', path: '/cache_raw', value: true }]),
    });
    expect(patched.status).toBe(200);
    await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
    expect(statSync(copyPath(id)).size).toBe(32 * 1024 * 1024);
  });

  it('makes the copy of an imported image once the asynchronous import finishes', async () => {
    const id = await create({ name: 'imported', cache_raw: 'True' });
    const stage = await client.request({ method: 'PUT', path: `/v2/images/${id}/stage`, headers: { 'Content-Type': 'application/octet-stream' }, body: createReadStream(makeQcow2(dir, 'imp.qcow2', 32, 2)) });
    expect(stage.status).toBe(204);
    const imported = await client.sendJson('POST', `/v2/images/${id}/import`, { method: { name: 'glance-direct' } });
    expect(imported.status).toBe(202);
    await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
    expect(statSync(copyPath(id)).isFile()).toBe(true);
  });

  it('records an image already in RAW as Cached with its size, without a copy and without revealing its location', async () => {
    const id = await create({ name: 'raw', disk_format: 'raw', cache_raw: 'True' });
    writeFileSync(join(dir, 'disk.raw'), Buffer.alloc(1024 * 1024, 7));
    await upload(id, join(dir, 'disk.raw'));
    const image = await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
    expect(image.direct_url).toBeUndefined();
    expect(image.cache_raw_url).toBeUndefined();
    expect(image.cache_raw_size).toBe(String(1024 * 1024));
    // Nothing in the raw-cache fields names where the data lives (Glance's own locations show it to whom its policy allows).
    expect(Object.keys(image).filter((key) => key.startsWith('cache_raw')).sort()).toEqual(['cache_raw', 'cache_raw_size', 'cache_raw_status']);
    expect(() => statSync(copyPath(id))).toThrow();

    // A location an earlier version recorded as the cache_raw_url is taken back by the sweep.
    const leak = await direct.request({
      method: 'PATCH',
      path: `/v2/images/${id}`,
      headers: { 'Content-Type': 'application/openstack-images-v2.1-json-patch' },
      body: JSON.stringify([{ op: 'add', path: '/cache_raw_url', value: `file://${glance.storeDir}${id}` }]),
    });
    expect(leak.status).toBe(200);
    const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'reconcile', '--config', configFile, '--json']);
    expect(JSON.parse(stdout).requeued).toContain(id);
    const repaired = await waitForImage(id, (i) => i.cache_raw_url === undefined);
    expect(repaired).toMatchObject({ cache_raw_status: 'Cached', cache_raw_size: String(1024 * 1024) });
  });

  it('removes the copy and the fields when cache_raw is turned off', async () => {
    const id = await create({ name: 'off', cache_raw: 'True' });
    await upload(id, makeQcow2(dir, 'off.qcow2', 16, 1));
    await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
    const patched = await client.request({
      method: 'PATCH',
      path: `/v2/images/${id}`,
      headers: { 'Content-Type': 'application/openstack-images-v2.1-json-patch' },
      body: JSON.stringify([{ op: 'replace', path: '/cache_raw', value: 'False' }]),
    });
    expect(patched.status).toBe(200);
    const image = await waitForImage(id, (i) => i.cache_raw_status === undefined && i.cache_raw_url === undefined);
    expect(image.cache_raw).toBe('False');
    expect(() => statSync(copyPath(id))).toThrow();
  });

  it('removes the copy when the image is deleted', async () => {
    const id = await create({ name: 'deleted', cache_raw: 'True' });
    await upload(id, makeQcow2(dir, 'del.qcow2', 16, 1));
    await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
    expect(statSync(copyPath(id)).isFile()).toBe(true);
    expect((await client.delete(`/v2/images/${id}`)).status).toBe(204);
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline && readdirSync(rawDir).some((n) => n.startsWith(id))) await sleep(200);
    expect(readdirSync(rawDir).filter((n) => n.startsWith(id))).toEqual([]);
  });

  describe('verification of the data against what Glance recorded', () => {
    const cli = async (...args: string[]) => JSON.parse((await promisify(execFile)(process.execPath, [CLI, ...args, '--config', configFile, '--json'])).stdout);
    const setCacheRaw = async (id: string) => {
      const res = await client.request({
        method: 'PATCH',
        path: `/v2/images/${id}`,
        headers: { 'Content-Type': 'application/openstack-images-v2.1-json-patch' },
        body: JSON.stringify([{ op: 'add', path: '/cache_raw', value: 'True' }]),
      });
      expect(res.status).toBe(200);
    };
    /**
     * Rewrites the hash Glance recorded for an image in Glance's own database: the record of an image
     * uploaded before Glance Rocky (no multihash), or of a Glance hashing with an algorithm the worker lacks.
     */
    const setGlanceHash = (id: string, algo: string | null, value: string | null) =>
      promisify(execFile)('/usr/bin/python3', [
        '-c',
        'import sqlite3, sys\nwith sqlite3.connect(sys.argv[1]) as db:\n    db.execute("UPDATE images SET os_hash_algo = ?, os_hash_value = ? WHERE id = ?", (sys.argv[2] or None, sys.argv[3] or None, sys.argv[4]))',
        join(glance.workDir, 'glance.sqlite'),
        algo ?? '',
        value ?? '',
        id,
      ]);
    const workerLines = (id: string, message: string) =>
      workers.flatMap((w) => w.logs().split('\n')).filter((l) => l.includes(`"image_id":"${id}"`) && l.includes(`"message":"${message}`));

    beforeAll(async () => {
      if (workers.length === 0) await startAWorker();
    });

    it('proves the data against the md5 checksum only when Glance recorded no os_hash_value, and says so in the log and in cache show', async () => {
      const id = await create({ name: 'md5-only' });
      await upload(id, makeQcow2(dir, 'md5-only.qcow2', 16, 1, 0x61));
      await setGlanceHash(id, null, null);
      expect((await direct.get(`/v2/images/${id}`)).json()).toMatchObject({ os_hash_algo: null, os_hash_value: null, checksum: expect.stringMatching(/^[0-9a-f]{32}$/) });
      await setCacheRaw(id);
      await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
      expect(workerLines(id, 'verifying the image data against its md5 checksum only')).toHaveLength(1);
      expect(await cli('cache', 'show', id)).toMatchObject({ cache_raw_status: 'Cached', verification: 'checksum (md5) only: Glance recorded no os_hash_value' });

      const sha512 = await create({ name: 'sha512', cache_raw: 'True' });
      await upload(sha512, makeQcow2(dir, 'sha512.qcow2', 16, 1, 0x62));
      await waitForImage(sha512, (i) => i.cache_raw_status === 'Cached');
      expect(workerLines(sha512, 'verifying the image data against its md5 checksum only')).toEqual([]);
      expect(await cli('cache', 'show', sha512)).toMatchObject({ verification: 'os_hash_value (sha512)' });
    });

    it('refuses, without reading it, an image whose os_hash_algo the worker cannot compute, instead of stepping down to md5', async () => {
      const id = await create({ name: 'whirlpool' });
      await upload(id, makeQcow2(dir, 'whirlpool.qcow2', 16, 1, 0x63));
      await setGlanceHash(id, 'whirlpool', 'ab'.repeat(64));
      await setCacheRaw(id);
      const image = await waitForImage(id, (i) => i.cache_raw_status === 'Error', 60_000, false);
      expect(image.cache_raw_error).toMatch(/os_hash_algo whirlpool, which this worker cannot compute .*refused rather than checked against a weaker hash/);
      expect(workerLines(id, "reading the image data through Glance's API")).toEqual([]);
      expect(readdirSync(rawDir).filter((n) => n.startsWith(id))).toEqual([]);
    });

    it('refuses data that no longer matches its os_hash_value (damaged in the store), after max_attempts, leaving nothing', async () => {
      const id = await create({ name: 'damaged' });
      await upload(id, makeQcow2(dir, 'damaged.qcow2', 16, 1, 0x64));
      const stored = join(glance.storeDir, id);
      const bytes = readFileSync(stored);
      bytes[bytes.length - 1] ^= 0xff;
      writeFileSync(stored, bytes);
      await setCacheRaw(id);
      const image = await waitForImage(id, (i) => i.cache_raw_status === 'Error', 60_000, false);
      expect(image.cache_raw_error).toMatch(/^The RAW copy failed 2 times; last error: image \S+: the data read does not match its os_hash_value \(sha512\)/);
      expect(readdirSync(rawDir).filter((n) => n.startsWith(id))).toEqual([]);
      expect(readdirSync(join(dir, 'work')).filter((n) => n.startsWith(id))).toEqual([]);
    });
  });

  it.each([
    ['a corrupt qcow2', () => {
      const path = join(dir, 'corrupt.qcow2');
      const good = makeQcow2(dir, 'corrupt-src.qcow2', 16, 1);
      writeFileSync(path, Buffer.concat([require('node:fs').readFileSync(good).subarray(0, 1024), Buffer.alloc(4096, 0xff)]));
      return { path, disk_format: 'qcow2' };
    }, /qcow2|corrupt|read/i],
    ['a qcow2 with a backing file', () => ({ path: makeQcow2WithBackingFile(dir, 'backed.qcow2'), disk_format: 'qcow2' }), /backing file/i],
    ['qcow2 data declared as vmdk', () => ({ path: makeQcow2(dir, 'liar.qcow2', 16, 1), disk_format: 'vmdk' }), /qcow2/],
    ['qcow2 data declared as raw (never converted, still looked at)', () => ({ path: makeQcow2(dir, 'liar-raw.qcow2', 16, 1), disk_format: 'raw' }), /^The image data is qcow2, not raw as its disk_format says/],
  ])('ends %s in Error with a message a person can act on, and no copy', async (_what, make, message) => {
    const { path, disk_format } = make();
    const id = await create({ name: 'bad', disk_format, cache_raw: 'True' });
    await upload(id, path);
    const image = await waitForImage(id, (i) => i.cache_raw_status === 'Error');
    expect(image.cache_raw_error).toMatch(message);
    expect(image.cache_raw_url).toBeUndefined();
    expect(readdirSync(rawDir).filter((n) => n.startsWith(id))).toEqual([]);
  });

  it('lets an operator list, show and retry raw-cache images from the command line', async () => {
    const cli = async (...args: string[]) => JSON.parse((await promisify(execFile)(process.execPath, [CLI, ...args, '--config', configFile, '--json'])).stdout);
    const errors: Array<{ id: string; cache_raw_status: string; cache_raw_error: string }> = await cli('cache', 'list', '--status', 'Error');
    expect(errors.length).toBeGreaterThanOrEqual(4);
    for (const e of errors) expect(e).toMatchObject({ cache_raw_status: 'Error', cache_raw_error: expect.any(String) });
    const everything: Array<{ id: string; cache_raw_status: string }> = await cli('cache', 'list');
    expect(everything.some((e) => e.cache_raw_status === 'Cached')).toBe(true);

    const cachedId = everything.find((e) => e.cache_raw_status === 'Cached' && existsSync(copyPath(e.id)))!.id;
    expect(await cli('cache', 'show', cachedId)).toMatchObject({ id: cachedId, cache_raw_status: 'Cached', copy_present: true, copy_url: `file://${copyPath(cachedId)}` });

    // One the worker converts again (Caching, then Error): a raw one is only looked at, and its record stays as it was.
    const failed = errors.find((e) => (e as { disk_format?: string }).disk_format !== 'raw')!.id;
    const before = (await direct.get(`/v2/images/${failed}`)).json().updated_at;
    await sleep(1100);
    expect(await cli('cache', 'retry', failed)).toEqual({ id: failed, queued: true });
    const again = await waitForImage(failed, (i) => i.updated_at !== before && i.cache_raw_status === 'Error', 60_000, false);
    expect(again.cache_raw_error).toBe(errors.find((e) => e.id === failed)!.cache_raw_error);
  });

  it('stops a conversion whose job another worker took over: its partial goes and nothing is recorded', async () => {
    await stopWorkers();
    const id = await create({ name: 'fenced', cache_raw: 'True' });
    await upload(id, makeQcow2(dir, 'fenced.qcow2', 1024, 256));
    const queue = new Database(join(dir, 'queue.sqlite'));
    try {
      const worker = await startAWorker();
      // Converting: its partial copy is there.
      await until(() => leftovers().some((name) => name.startsWith(id)));
      // Its lease ran out (a stalled process) and another worker, alive and renewing, claimed the job.
      queue.prepare("UPDATE jobs SET lease_owner = 'another-host:1:0:1', lease_until = @until WHERE image_id = @id").run({ id, until: Date.now() + 3_600_000 });
      await until(() => worker.logs().includes('job taken away mid-way'));
      await until(() => !leftovers().some((name) => name.startsWith(id)));
      expect(existsSync(copyPath(id))).toBe(false);
      expect((await direct.get(`/v2/images/${id}`)).json()).toMatchObject({ cache_raw_status: 'Caching', cache_raw_size: '-' });
      // That other worker died in turn: its lease runs out, and this worker finishes the job.
      queue.prepare('UPDATE jobs SET lease_until = 0 WHERE image_id = @id').run({ id });
      await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
      expect(statSync(copyPath(id)).size).toBe(1024 * 1024 * 1024);
    } finally {
      queue.close();
    }
  });

  it('finds, with the sweep, an image whose trigger was never recorded (uploaded around the proxy)', async () => {
    // The state a proxy killed between Glance's 204 and its own answer leaves: data in Glance, no job.
    const id = await create({ name: 'around', cache_raw: 'True' }, direct);
    await upload(id, makeQcow2(dir, 'around.qcow2', 16, 1), direct);
    await sleep(1500);
    expect((await direct.get(`/v2/images/${id}`)).json().cache_raw_status).toBeUndefined();
    const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'reconcile', '--config', configFile, '--json']);
    expect(JSON.parse(stdout).requeued).toContain(id);
    await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
  });

  it('survives a worker killed mid-conversion: the job comes back and ends Cached, with no partial copy left', async () => {
    await stopWorkers();
    const source = makeQcow2(dir, 'big.qcow2', 256, 128);
    const id = await create({ name: 'big', cache_raw: 'True' });
    await upload(id, source);
    const worker = await startAWorker();
    // Held mid-way, so that the kill finds it converting; the kill of the worker's group ends it.
    process.kill(await waitForProcess(isQemuImgConvertOf(id), 60_000, `qemu-img convert of ${id}`), 'SIGSTOP');
    worker.kill('SIGKILL');
    await worker.exited;
    workers.splice(workers.indexOf(worker), 1);
    await worker.stop();
    expect((await show(id)).cache_raw_status).toBe('Caching');

    await startAWorker();
    const image = await waitForImage(id, (i) => i.cache_raw_status === 'Cached', 120_000);
    expect(image.cache_raw_size).toBe(String(256 * 1024 * 1024));
    expect(leftovers()).toEqual([]);
    expect(readdirSync(join(dir, 'work')).filter((n) => n.startsWith(id))).toEqual([]);
    expect(await sha256File(copyPath(id))).toBe(await rawSha256Of(dir, source));
  }, 180_000);

  it('on SIGTERM a worker finishes the conversion it holds within its grace, then exits 0', async () => {
    await stopWorkers();
    const id = await create({ name: 'finish-then-stop', cache_raw: 'True' });
    await upload(id, makeQcow2(dir, 'finish.qcow2', 256, 128, 0x44));
    const worker = await startAWorker();
    // Held mid-way until the worker has taken the SIGTERM: the conversion is still running then.
    const convert = await waitForProcess(isQemuImgConvertOf(id), 60_000, `qemu-img convert of ${id}`);
    process.kill(convert, 'SIGSTOP');
    worker.kill('SIGTERM');
    await worker.waitForLog('stopping: no new jobs, running conversions may finish');
    process.kill(convert, 'SIGCONT');
    expect(await worker.exited).toEqual({ code: 0, signal: null });
    expect((await show(id)).cache_raw_status).toBe('Cached');
    workers.splice(workers.indexOf(worker), 1);
    await worker.stop();
  }, 120_000);

  it('on SIGTERM with a grace too short for the conversion, a worker hands the job back and another finishes it', async () => {
    await stopWorkers();
    const shortGrace = join(dir, 'short-grace.json');
    writeFileSync(shortGrace, JSON.stringify({ ...JSON.parse(readFileSync(configFile, 'utf8')), timeouts: { shutdown_grace: 0 } }));
    const id = await create({ name: 'handed-back', cache_raw: 'True' });
    await upload(id, makeQcow2(dir, 'handback.qcow2', 256, 128, 0x55));
    const impatient = await startWorker({ config: shortGrace, opsPort: await freePort() });
    // Held mid-way: the SIGTERM surely finds the conversion running, and its cancel ends qemu-img.
    process.kill(await waitForProcess(isQemuImgConvertOf(id), 60_000, `qemu-img convert of ${id}`), 'SIGSTOP');
    impatient.kill('SIGTERM');
    expect(await impatient.exited).toEqual({ code: 0, signal: null });
    expect(impatient.logs()).toContain('worker stopping: conversion handed back');
    await impatient.stop();
    expect(leftovers()).toEqual([]);

    await startAWorker();
    await waitForImage(id, (i) => i.cache_raw_status === 'Cached', 120_000);
    expect(leftovers()).toEqual([]);
  }, 180_000);

  it('cancels a conversion when its image is deleted, leaving no copy', async () => {
    await stopWorkers();
    const id = await create({ name: 'gone-mid-way', cache_raw: 'True' });
    await upload(id, makeQcow2(dir, 'mid.qcow2', 256, 128, 0x33));
    const worker = await startAWorker();
    const cancelledBefore = conversionsCounted(await (await fetch(`${worker.url}/metrics`)).text(), 'cancelled');
    // Held mid-way: a stopped qemu-img cannot finish the copy, so only the worker's cancel ends it.
    const convert = await waitForProcess(isQemuImgConvertOf(id), 60_000, `qemu-img convert of ${id}`);
    process.kill(convert, 'SIGSTOP');
    try {
      expect((await client.delete(`/v2/images/${id}`)).status).toBe(204);
      const cancelled = JSON.parse(await worker.waitForLog(new RegExp(`^(?=.*"message":"conversion cancelled")(?=.*"image_id":"${id}")`), 30_000));
      expect(cancelled.why).toBe('image-gone');
      expect(processExists(convert)).toBe(false);
    } finally {
      if (processExists(convert)) process.kill(convert, 'SIGCONT');
    }
    expect(conversionsCounted(await (await fetch(`${worker.url}/metrics`)).text(), 'cancelled')).toBe(cancelledBefore + 1);
    await worker.waitForLog(new RegExp(`^(?=.*"message":"image is gone; its raw copy is removed")(?=.*"image_id":"${id}")`));
    expect(worker.logs().split('\n').filter((l) => l.includes(id) && /raw copy (written|cached)/.test(l))).toEqual([]);
    expect(readdirSync(rawDir).filter((n) => n.startsWith(id))).toEqual([]);
    // The cancelled run removes its source file once the job is settled, after that log line.
    await waitUntil(() => !readdirSync(join(dir, 'work')).some((n) => n.startsWith(id)), 10_000, `no work file of ${id}`);
  }, 90_000);

  it("shows a conversion's progress while it runs (cache show, the worker's gauge), none once Cached; show --watch follows it to Cached", async () => {
    await stopWorkers();
    const id = await create({ name: 'progress', cache_raw: 'True' });
    await upload(id, makeQcow2(dir, 'progress.qcow2', 256, 128, 0x55));
    const worker = await startAWorker();
    const cacheShow = async () => JSON.parse((await promisify(execFile)(process.execPath, [CLI, 'cache', 'show', id, '--config', configFile, '--json'])).stdout);
    const gauge = (metrics: string) => new RegExp(`^stx_glance_proxy_worker_conversion_progress_ratio\\{image_id="${id}"\\} ([0-9.e+-]+)$`, 'm').exec(metrics)?.[1];
    // Held mid-way: the progress seen is the one of a conversion surely in flight.
    const convert = await waitForProcess(isQemuImgConvertOf(id), 60_000, `qemu-img convert of ${id}`);
    process.kill(convert, 'SIGSTOP');
    let watchOutput = '';
    let watch: ReturnType<typeof spawn> | undefined;
    try {
      const held = await cacheShow();
      expect(held.cache_raw_status).toBe('Caching');
      expect(held.progress.percent).toBeGreaterThanOrEqual(0);
      expect(held.progress.percent).toBeLessThan(100);
      const ratio = gauge(await (await fetch(`${worker.url}/metrics`)).text());
      expect(ratio).toBeDefined();
      expect(Number(ratio)).toBeCloseTo(held.progress.percent / 100, 6);
      const inFlight = (await (await fetch(`${worker.url}/progress`)).json()) as { conversions: Array<{ image_id: string }> };
      expect(inFlight.conversions.map((c) => c.image_id)).toEqual([id]);

      // Not a terminal: plain lines, the first one once the watch has seen the conversion.
      watch = spawn(process.execPath, [CLI, 'cache', 'show', id, '--watch', '--config', configFile], { stdio: ['ignore', 'pipe', 'inherit'] });
      watch.stdout!.on('data', (chunk: Buffer) => (watchOutput += chunk.toString()));
      await until(() => /^Caching \d+\.\d%/m.test(watchOutput));
    } finally {
      process.kill(convert, 'SIGCONT');
    }
    const [code] = (await once(watch!, 'exit')) as [number | null];
    expect(code).toBe(0);
    const lines = watchOutput.trim().split('\n');
    expect(lines[lines.length - 1]).toBe(`Cached (${256 * 1024 * 1024} bytes)`);
    expect(lines.slice(0, -1).every((l) => /^Caching \d+\.\d%/.test(l))).toBe(true);
    expect((await show(id)).cache_raw_status).toBe('Cached');

    // Ended: no gauge for the image (its label is gone) and no progress shown.
    expect(gauge(await (await fetch(`${worker.url}/metrics`)).text())).toBeUndefined();
    expect((await cacheShow()).progress).toBeNull();
    const { stdout: listed } = await promisify(execFile)(process.execPath, [CLI, 'cache', 'list', '--config', configFile, '--json']);
    expect(JSON.parse(listed).find((e: { id: string }) => e.id === id).progress).toBeNull();
  }, 180_000);

  it('converts two images at once in two workers of concurrency 1, each once', async () => {
    await stopWorkers();
    const single = join(dir, 'concurrency-1.json');
    const config = JSON.parse(readFileSync(configFile, 'utf8'));
    writeFileSync(single, JSON.stringify({ ...config, rawcache: { ...config.rawcache, worker: { ...config.rawcache.worker, concurrency: 1 } } }));
    const pair = [await startWorker({ config: single, opsPort: await freePort() }), await startWorker({ config: single, opsPort: await freePort() })];
    workers.push(...pair);
    const a = await create({ name: 'at-once-a', cache_raw: 'True' });
    await upload(a, makeQcow2(dir, 'at-once-a.qcow2', 256, 128, 0x71));
    // The first conversion is held mid-way: its worker's only slot stays taken.
    const convertA = await waitForProcess(isQemuImgConvertOf(a), 60_000, `qemu-img convert of ${a}`);
    process.kill(convertA, 'SIGSTOP');
    const b = await create({ name: 'at-once-b', cache_raw: 'True' });
    try {
      await upload(b, makeQcow2(dir, 'at-once-b.qcow2', 256, 128, 0x72));
      // Only the other worker can take this job: both conversions are alive at once.
      const convertB = await waitForProcess(isQemuImgConvertOf(b), 60_000, `qemu-img convert of ${b}`);
      expect(processExists(convertA)).toBe(true);
      expect(processExists(convertB)).toBe(true);
    } finally {
      process.kill(convertA, 'SIGCONT');
    }
    for (const id of [a, b]) await waitForImage(id, (i) => i.cache_raw_status === 'Cached', 120_000);
    const conversionsBy = (w: RunningProxy) =>
      w.logs().split('\n').filter((l) => l.includes('"message":"converting to RAW"')).map((l) => JSON.parse(l).image_id as string);
    expect(pair.map(conversionsBy).map((ids) => ids.sort())).toEqual(expect.arrayContaining([[a], [b]]));
  }, 180_000);

  it('never converts one image in two workers at once, and converts each once', async () => {
    await stopWorkers();
    await startAWorker();
    workers.push(await startWorker({ config: configFile, opsPort: await freePort() }));
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const id = await create({ name: `pair-${i}`, cache_raw: 'True' });
      await upload(id, makeQcow2(dir, `pair-${i}.qcow2`, 64, 16, i + 1));
      ids.push(id);
    }
    for (const id of ids) await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
    const conversions = workers
      .flatMap((w) => w.logs().split('\n'))
      .filter((l) => l.includes('"message":"converting to RAW"'))
      .map((l) => JSON.parse(l).image_id);
    for (const id of ids) expect(conversions.filter((c) => c === id)).toHaveLength(1);
  }, 120_000);

  describe("with Glance's file store shared with the worker (rawcache.target.file_source_dirs)", () => {
    let inPlaceConfig: string;
    let inPlace: RunningProxy;
    const workFiles = (id: string) => {
      try {
        return readdirSync(join(dir, 'work')).filter((n) => n.startsWith(id));
      } catch {
        return [];
      }
    };
    const said = (id: string, message: string) => inPlace.logs().split('\n').filter((l) => l.includes(`"image_id":"${id}"`) && l.includes(`"message":"${message}"`));

    beforeAll(async () => {
      await stopWorkers();
      // The same queue, copies and work dir as the suite's workers; only the store is read in place.
      const own = join(dir, 'in-place');
      mkdirSync(own, { recursive: true });
      inPlaceConfig = writeRawCacheConfig(own, {
        upstream: glance.url,
        queue: { sqlite_path: join(dir, 'queue.sqlite') },
        target: { file_dir: rawDir, file_source_dirs: [glance.storeDir] },
        worker: { work_dir: join(dir, 'work') },
        rawcache: { trigger: { spool_dir: join(dir, 'spool') } },
      });
      inPlace = await startWorker({ config: inPlaceConfig, opsPort: await freePort() });
    }, 60_000);
    afterAll(async () => {
      await inPlace?.stop();
    });

    it("converts Glance's own file in place, hashing it beside the convert: Cached with the same copy, no download", async () => {
      const source = makeQcow2(dir, 'shared.qcow2', 64, 8, 0x61);
      const id = await create({ name: 'shared', cache_raw: 'True' });
      await upload(id, source);
      const cached = await waitForImage(id, (i) => i.cache_raw_status === 'Cached');
      expect(cached).toMatchObject({ cache_raw_url: `file://${copyPath(id)}`, cache_raw_size: String(64 * 1024 * 1024) });
      expect(await sha256File(copyPath(id))).toBe(await rawSha256Of(dir, source));
      expect(said(id, "reading the image data in place from Glance's file store")).toHaveLength(1);
      expect(said(id, "reading the image data in place from Glance's file store")[0]).toContain(join(glance.storeDir, id));
      expect(said(id, "reading the image data through Glance's API")).toEqual([]);
      expect(workFiles(id)).toEqual([]);
      expect(leftovers().filter((n) => n.startsWith(id))).toEqual([]);
    });

    it("does not cache an image whose file in Glance's store was changed after the upload: no copy, no partial, no work file", async () => {
      const source = makeQcow2(dir, 'changed.qcow2', 64, 8, 0x62);
      const id = await create({ name: 'changed' });
      await upload(id, source);
      // The last 4 KiB of the qcow2 are guest data: still a valid qcow2, with other bytes than Glance hashed.
      const stored = join(glance.storeDir, id);
      const size = statSync(stored).size;
      const handle = openSync(stored, 'r+');
      try {
        writeSync(handle, Buffer.alloc(4096, 0x99), 0, 4096, size - 4096);
      } finally {
        closeSync(handle);
      }
      const patched = await client.request({
        method: 'PATCH',
        path: `/v2/images/${id}`,
        headers: { 'Content-Type': 'application/openstack-images-v2.1-json-patch' },
        body: JSON.stringify([{ op: 'add', path: '/cache_raw', value: 'True' }]),
      });
      expect(patched.status).toBe(200);
      const refused = await waitForImage(id, (i) => i.cache_raw_status === 'Error', 60_000, false);
      expect(refused.cache_raw_error).toMatch(/^The RAW copy failed 2 times; last error: image \S+: the data read does not match its os_hash_value \(sha512\)/);
      expect(refused.cache_raw_url).toBeUndefined();
      expect(said(id, "reading the image data in place from Glance's file store")).toHaveLength(2);
      expect(said(id, 'raw copy written')).toEqual([]);
      expect(existsSync(copyPath(id))).toBe(false);
      expect(leftovers().filter((n) => n.startsWith(id))).toEqual([]);
      expect(workFiles(id)).toEqual([]);
    });
  });
});
