import http from 'node:http';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient } from '../harness/http';
import { freePort } from '../harness/ports';
import { startProxy, type RunningProxy } from '../harness/proxy';

/** Health, metrics, logs and shutdown, as an operator meets them, against a real Glance. */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('operations', () => {
  let glance: RunningGlance;
  let proxy: RunningProxy;
  let client: HttpClient;
  let ops: HttpClient;
  let dir: string;
  let disableFile: string;

  beforeAll(async () => {
    glance = await startGlance();
    dir = await mkdtemp(join(tmpdir(), 'stx-ops-'));
    disableFile = join(dir, 'disabled');
    const config = join(dir, 'proxy.yaml');
    await writeFile(
      config,
      [
        `health:\n  disable_by_file: ${disableFile}`,
        'rawcache:',
        '  enabled: true',
        `  queue: { backend: sqlite, sqlite_path: ${join(dir, 'q.sqlite')} }`,
        'timeouts:\n  shutdown_grace: 30',
      ].join('\n'),
    );
    proxy = await startProxy({ upstream: glance.url, config });
    client = new HttpClient(proxy.url);
    ops = new HttpClient(proxy.opsUrl!);
  });

  afterAll(async () => {
    client?.destroy();
    ops?.destroy();
    await proxy?.stop();
    await glance?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('answers /healthcheck OK on both listeners, and the checks of Glance and the queue on the ops listener', async () => {
    const text = await client.get('/healthcheck');
    expect(text.status).toBe(200);
    expect(text.text()).toBe('OK');
    const json = await client.get('/healthcheck', { Accept: 'application/json' });
    expect(json.json()).toEqual({ detailed: false, reasons: ['OK'] });
    expect((await ops.get('/healthcheck')).text()).toBe('OK');
    const detailed = await ops.get('/healthcheck?detailed', { Accept: 'application/json' });
    const classes = detailed.json().reasons.map((r: { class: string }) => r.class);
    expect(classes).toEqual(['disable_by_file', 'glance', 'rawcache_queue']);
  });

  it('drains: 503 DISABLED BY FILE while the file exists, OK again once it is gone', async () => {
    await writeFile(disableFile, '');
    // The ops listener's checks are cached for 2 s; the public answer looks at the file every time.
    await sleep(2100);
    for (const listener of [client, ops]) {
      const res = await listener.get('/healthcheck');
      expect(res.status).toBe(503);
      expect(res.text()).toBe('DISABLED BY FILE');
    }
    await rm(disableFile);
    await sleep(2100);
    expect((await client.get('/healthcheck')).status).toBe(200);
    expect((await ops.get('/healthcheck')).status).toBe(200);
  });

  it('exports Prometheus metrics on the ops listener: requests by route class and status, latency, bytes, queue depth', async () => {
    await client.get('/v2/images');
    await client.get('/v2/images/00000000-0000-4000-8000-000000000000');
    const res = await ops.get('/metrics');
    expect(res.status).toBe(200);
    expect(res.header('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = res.text();
    expect(text).toMatch(/stx_glance_proxy_requests_total\{route="image-list",method="GET",status="200"\} [1-9]/);
    expect(text).toMatch(/stx_glance_proxy_requests_total\{route="image-show",method="GET",status="404"\} [1-9]/);
    expect(text).toMatch(/stx_glance_proxy_request_duration_seconds_bucket\{le="\+Inf",route="image-list"\} [1-9]/);
    expect(text).toMatch(/stx_glance_proxy_bytes_total\{direction="out",route="image-list"\} [1-9]/);
    expect(text).toMatch(/stx_glance_proxy_rawcache_queue_depth 0/);
  });

  it('writes one JSON access line per request with method, route class, status, bytes, duration and request id', async () => {
    const res = await client.get('/v2/images?limit=3');
    const id = res.header('x-openstack-request-id')!;
    const line = JSON.parse(await proxy.waitForLog(new RegExp(`"message":"request".*"request_id":"${id}"`)));
    expect(line).toMatchObject({ level: 'info', method: 'GET', path: '/v2/images?limit=3', route: 'image-list', status: 200, completed: true });
    expect(line.bytes_out).toBeGreaterThan(0);
    expect(typeof line.duration_ms).toBe('number');
    expect(typeof line.timestamp).toBe('string');
  });
});

describe('shutdown', () => {
  let glance: RunningGlance;
  let dir: string;

  beforeAll(async () => {
    glance = await startGlance();
    dir = await mkdtemp(join(tmpdir(), 'stx-ops-stop-'));
  });

  afterAll(async () => {
    await glance?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('on SIGTERM stops accepting, lets an upload in flight finish, then exits 0', async () => {
    const config = join(dir, 'grace.yaml');
    await writeFile(config, 'timeouts:\n  shutdown_grace: 30\n');
    const proxy = await startProxy({ upstream: glance.url, config });
    const client = new HttpClient(proxy.url);
    const image = (await client.sendJson('POST', '/v2/images', { name: 'during-stop', disk_format: 'raw', container_format: 'bare' })).json();
    client.destroy();

    // 3 MiB in 12 chunks, one every 250 ms: the upload is still running when SIGTERM arrives.
    let sent = 0;
    const body = new Readable({
      read() {
        if (sent === 12) return void this.push(null);
        sent++;
        setTimeout(() => this.push(Buffer.alloc(256 * 1024, sent)), 250);
      },
    });
    const upload = new Promise<number>((resolve, reject) => {
      const req = http.request(`${proxy.url}/v2/images/${image.id}/file`, { method: 'PUT', agent: false, headers: { 'Content-Type': 'application/octet-stream' } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.once('error', reject);
      body.pipe(req);
    });
    await sleep(700);
    proxy.kill('SIGTERM');
    await proxy.waitForLog('stopping: no new connections');
    // Refused, or reset if it raced into the listen backlog as the socket closed: either way not served.
    await expect(new HttpClient(proxy.url).get('/versions')).rejects.toThrow(/ECONNREFUSED|ECONNRESET/);
    expect(await upload).toBe(204);
    expect(await proxy.exited).toEqual({ code: 0, signal: null });
    const stored = await new HttpClient(glance.url).get(`/v2/images/${image.id}`);
    expect(stored.json()).toMatchObject({ status: 'active', size: 3 * 1024 * 1024 });
    await proxy.stop();
  });

  it('cuts what is still running when the grace runs out, and still exits 0', async () => {
    const config = join(dir, 'short.yaml');
    await writeFile(config, 'timeouts:\n  shutdown_grace: 1\n');
    const proxy = await startProxy({ upstream: glance.url, config });
    const image = (await new HttpClient(proxy.url).sendJson('POST', '/v2/images', { name: 'cut', disk_format: 'raw', container_format: 'bare' })).json();
    const body = new Readable({ read() {} });
    body.push(Buffer.alloc(1024));
    const upload = new Promise<string>((resolve) => {
      const req = http.request(`${proxy.url}/v2/images/${image.id}/file`, { method: 'PUT', agent: false, headers: { 'Content-Type': 'application/octet-stream' } }, (res) => {
        res.resume();
        resolve(`status ${res.statusCode}`);
      });
      req.once('error', (e) => resolve(`error ${(e as NodeJS.ErrnoException).code}`));
      body.pipe(req);
    });
    await sleep(300);
    const started = Date.now();
    proxy.kill('SIGTERM');
    expect(await proxy.exited).toEqual({ code: 0, signal: null });
    expect(Date.now() - started).toBeLessThan(5000);
    expect(await upload).toMatch(/^error|status 5/);
    body.destroy();
    await proxy.stop();
  });
});

describe('health when Glance is down', () => {
  it('answers 503 naming Glance on the ops listener', async () => {
    const proxy = await startProxy({ upstream: `http://127.0.0.1:${await freePort()}` });
    const res = await new HttpClient(proxy.opsUrl!).get('/healthcheck');
    expect(res.status).toBe(503);
    expect(res.text()).toMatch(/^Glance unreachable: .*ECONNREFUSED/);
    await proxy.stop();
  });
});
