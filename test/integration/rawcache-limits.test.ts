import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { startGlance, type RunningGlance } from '../harness/glance';
import { startGlanceRelay, type GlanceRelay } from '../harness/glance-relay';
import { HttpClient } from '../harness/http';
import { makeQcow2 } from '../harness/images';
import { freePort } from '../harness/ports';
import { imageSteps, writeRawCacheConfig } from '../harness/rawcache';
import { startProxy, startWorker, type RunningProxy } from '../harness/proxy';

/**
 * The worker's limits in time and its one retry policy, against real Glance (file store) and
 * qemu-img. The worker reaches Glance through a relay that injects what Glance itself never does:
 * a download that stops moving, an image data read that fails.
 */

const CLI = join(__dirname, '..', '..', 'dist', 'cli.js');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const until = async (condition: () => boolean | Promise<boolean>) => {
  while (!(await condition())) await sleep(20);
};

describe('raw-cache limits: stalls, deadlines, data that never comes, max_attempts for every failure', () => {
  let glance: RunningGlance;
  let relay: GlanceRelay;
  let proxy: RunningProxy;
  let worker: RunningProxy;
  let dir: string;
  let configFile: string;
  let client: HttpClient;

  beforeAll(async () => {
    glance = await startGlance();
    relay = await startGlanceRelay(glance.url);
    dir = await mkdtemp(join(tmpdir(), 'stx-rawcache-limits-'));
    configFile = writeRawCacheConfig(dir, {
      upstream: glance.url,
      rawcache: { glance_url: relay.url },
      worker: { max_attempts: 2, retry_base_seconds: 0.2, retry_max_seconds: 0.5, stall_timeout_seconds: 2, step_timeout_seconds: 120, data_wait_seconds: 2 },
    });
    proxy = await startProxy({ upstream: glance.url, config: configFile });
    client = new HttpClient(proxy.url);
    worker = await startWorker({ config: configFile, opsPort: await freePort() });
  }, 60_000);

  afterAll(async () => {
    client?.destroy();
    await worker?.stop();
    await proxy?.stop();
    await relay?.close();
    await glance?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  afterEach(() => {
    relay.fault = undefined;
  });

  const steps = () => imageSteps(client, () => worker.logs().slice(-3000));
  const jobsFor = (id: string): number => {
    const db = new Database(join(dir, 'queue.sqlite'), { readonly: true });
    try {
      return (db.prepare('SELECT count(*) AS n FROM jobs WHERE image_id = ?').get(id) as { n: number }).n;
    } finally {
      db.close();
    }
  };

  it('stops a download that makes no progress, retries it, and ends in Error naming the stall and its setting', async () => {
    const id = (await steps().create({ name: 'stalled', cache_raw: 'True' })).id as string;
    relay.fault = (req) => (req.method === 'GET' && req.url === `/v2/images/${id}/file` ? { stallAfterBytes: 64 * 1024 } : undefined);
    await steps().upload(id, makeQcow2(dir, 'stalled.qcow2', 64, 8));
    const image = await steps().waitForImage(id, (i) => i.cache_raw_status === 'Error', 120_000, false);
    expect(image.cache_raw_error).toMatch(/^The RAW copy failed 2 times; last error: downloading the image data made no progress for 2 s .*rawcache\.worker\.stall_timeout_seconds/);
    expect(relay.seen.filter((line) => line === `GET /v2/images/${id}/file`)).toHaveLength(2);
  });

  it('ends in Error after max_attempts when reading a raw image fails, instead of retrying forever', async () => {
    const id = (await steps().create({ name: 'raw-unreadable', disk_format: 'raw', cache_raw: 'True' })).id as string;
    relay.fault = (req) => (req.method === 'GET' && req.url === `/v2/images/${id}/file` ? { status: 500 } : undefined);
    writeFileSync(join(dir, 'disk.raw'), Buffer.alloc(1024 * 1024, 7));
    await steps().upload(id, join(dir, 'disk.raw'));
    const image = await steps().waitForImage(id, (i) => i.cache_raw_status === 'Error', 120_000, false);
    expect(image.cache_raw_error).toMatch(/^The RAW copy failed 2 times; last error: .*500/);
    await until(() => jobsFor(id) === 0);
  });

  it('ends a job whose image data never arrives after data_wait_seconds, and converts once the upload ends', async () => {
    const id = (await steps().create({ name: 'slow-upload', cache_raw: 'True' })).id as string;
    const body = new PassThrough();
    const uploaded = client.request({ method: 'PUT', path: `/v2/images/${id}/file`, headers: { 'Content-Type': 'application/octet-stream' }, body });
    const qcow2 = readFileSync(makeQcow2(dir, 'slow.qcow2', 32, 2));
    body.write(qcow2.subarray(0, 64 * 1024));
    await until(async () => (await steps().show(id)).status === 'saving');
    // An operator (or the sweep) queues it while the upload is still running.
    await promisify(execFile)(process.execPath, [CLI, 'cache', 'retry', id, '--config', configFile]);
    await until(() => worker.logs().includes('image data still not there'));
    await until(() => jobsFor(id) === 0);
    body.end(qcow2.subarray(64 * 1024));
    expect((await uploaded).status).toBe(204);
    await steps().waitForImage(id, (i) => i.cache_raw_status === 'Cached');
  });
});
