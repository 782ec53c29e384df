import Database from 'better-sqlite3';
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient } from '../harness/http';
import { makeQcow2 } from '../harness/images';
import { freePort } from '../harness/ports';
import { writeRawCacheConfig } from '../harness/rawcache';
import { startProxy, startWorker, type RunningProxy } from '../harness/proxy';

/**
 * The proxy killed between Glance's 204 and its own answer: the trigger was never recorded, the
 * client never heard back, and the image sits in Glance with data and cache_raw True. The sweep
 * must find it and the worker make its copy.
 */

const CLI = join(__dirname, '..', '..', 'dist', 'cli.js');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('proxy killed before it could record the trigger', () => {
  let glance: RunningGlance;
  let proxy: RunningProxy;
  let worker: RunningProxy | undefined;
  let dir: string;
  let configFile: string;
  let queueFile: string;
  let opsPort: number;

  beforeAll(async () => {
    glance = await startGlance();
    dir = await mkdtemp(join(tmpdir(), 'stx-rawcache-crash-'));
    queueFile = join(dir, 'queue.sqlite');
    opsPort = await freePort();
    // The proxy waits for the locked queue until SQLite gives up (5 s), not the default 2 s, before
    // it spools the trigger and answers: the window in which this test kills it.
    configFile = writeRawCacheConfig(dir, {
      upstream: glance.url,
      rawcache: { trigger: { spool_dir: join(dir, 'spool'), queue_wait_seconds: 30 } },
      extra: { metrics: { worker_listen: `127.0.0.1:${opsPort}` } },
    });
    proxy = await startProxy({ upstream: glance.url, config: configFile });
  });

  afterAll(async () => {
    await worker?.stop();
    await proxy?.stop();
    await glance?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('leaves an image the sweep finds and the worker caches', async () => {
    const client = new HttpClient(proxy.url);
    const id = (await client.sendJson('POST', '/v2/images', { name: 'crash', disk_format: 'qcow2', container_format: 'bare', cache_raw: 'True' })).json().id;
    client.destroy();

    // Hold the queue's write lock, so the proxy is stuck recording the trigger after Glance's 204.
    const holder = new Database(queueFile, { timeout: 1000 });
    holder.exec('BEGIN IMMEDIATE');
    const answer = new Promise<string>((resolve) => {
      const req = http.request(`${proxy.url}/v2/images/${id}/file`, { method: 'PUT', agent: false, headers: { 'Content-Type': 'application/octet-stream' } }, (res) => {
        res.resume();
        resolve(`status ${res.statusCode}`);
      });
      req.once('error', (err) => resolve(`error ${(err as NodeJS.ErrnoException).code}`));
      createReadStream(makeQcow2(dir, 'crash.qcow2', 32, 2)).pipe(req);
    });
    const glanceDirect = new HttpClient(glance.url);
    const deadline = Date.now() + 20_000;
    while ((await glanceDirect.get(`/v2/images/${id}`)).json().status !== 'active' && Date.now() < deadline) await sleep(50);
    expect((await glanceDirect.get(`/v2/images/${id}`)).json().status).toBe('active');

    proxy.kill('SIGKILL');
    await proxy.exited;
    expect(await answer).toMatch(/^error/);
    holder.exec('ROLLBACK');
    holder.close();

    // No job was recorded: a worker alone does nothing for this image.
    worker = await startWorker({ config: configFile, opsPort });
    await sleep(2000);
    expect((await glanceDirect.get(`/v2/images/${id}`)).json().cache_raw_status).toBeUndefined();

    const { stdout } = await promisify(execFile)(process.execPath, [CLI, 'reconcile', '--config', configFile, '--json']);
    expect(JSON.parse(stdout).requeued).toEqual([id]);
    const until = Date.now() + 60_000;
    let image = (await glanceDirect.get(`/v2/images/${id}`)).json();
    while (image.cache_raw_status !== 'Cached' && Date.now() < until) {
      await sleep(250);
      image = (await glanceDirect.get(`/v2/images/${id}`)).json();
    }
    expect(image).toMatchObject({ cache_raw_status: 'Cached', cache_raw_url: `file://${join(dir, 'raw', `${id}.raw`)}` });
    glanceDirect.destroy();
  }, 120_000);
});
