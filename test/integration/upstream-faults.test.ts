import http from 'node:http';
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { startFakeUpstream, type FakeUpstream } from '../harness/fake-upstream';
import { HttpClient } from '../harness/http';
import { freePort } from '../harness/ports';
import { startProxy, type RunningProxy } from '../harness/proxy';

/**
 * Faults Glance cannot be made to produce on demand, injected by a stand-in upstream, with real
 * sockets between client, proxy and upstream.
 */

const MiB = 1024 * 1024;

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([promise, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} did not happen within ${ms} ms`)), ms))]);
}

/** Starts a raw request and resolves with the response head; the body is left to the test. */
function openRequest(url: string, options: http.RequestOptions, body?: Readable): { req: http.ClientRequest; response: Promise<http.IncomingMessage> } {
  const req = http.request(url, { agent: false, ...options });
  const response = new Promise<http.IncomingMessage>((resolve, reject) => {
    req.once('response', resolve);
    req.once('error', reject);
  });
  if (body) body.pipe(req);
  else req.end();
  return { req, response };
}

function zeros(total: number, chunk = MiB): Readable {
  let sent = 0;
  return new Readable({
    read() {
      if (sent >= total) return void this.push(null);
      const n = Math.min(chunk, total - sent);
      sent += n;
      this.push(Buffer.alloc(n));
    },
  });
}

describe('upstream faults', () => {
  let upstream: FakeUpstream;
  let proxy: RunningProxy;
  let client: HttpClient;
  let configDir: string;

  beforeAll(async () => {
    upstream = await startFakeUpstream();
    configDir = await mkdtemp(join(tmpdir(), 'stx-proxy-faults-'));
    const config = join(configDir, 'proxy.yaml');
    // Short timeouts so that silence can be tested in seconds.
    await writeFile(config, 'timeouts:\n  upstream_idle: 2\n  client_idle: 2\n');
    proxy = await startProxy({ upstream: upstream.url, config });
    client = new HttpClient(proxy.url);
  });

  afterAll(async () => {
    client?.destroy();
    await proxy?.stop();
    await upstream?.close();
    await rm(configDir, { recursive: true, force: true });
  });

  it('ends the client response when Glance dies mid-download, instead of leaving it waiting', async () => {
    upstream.handle((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(64 * MiB) });
      res.write(Buffer.alloc(MiB), () => setTimeout(() => res.socket?.destroy(), 50));
    });
    const { response } = openRequest(`${proxy.url}/v2/images/11111111-1111-1111-1111-111111111111/file`, {});
    const res = await response;
    expect(res.statusCode).toBe(200);
    let received = 0;
    const outcome = new Promise<string>((resolve) => {
      res.on('data', (c: Buffer) => (received += c.length));
      res.once('end', () => resolve('end'));
      res.once('aborted', () => resolve('aborted'));
      res.once('error', () => resolve('error'));
      res.once('close', () => resolve(res.complete ? 'end' : 'aborted'));
    });
    await expect(within(outcome, 5000, 'the client response ending')).resolves.not.toBe('end');
    expect(received).toBeLessThan(64 * MiB);
  });

  it('releases the upstream request at once when a client aborts a download', async () => {
    upstream.handle((_req, res) => {
      res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': String(1024 * MiB) });
      zeros(1024 * MiB).pipe(res);
    });
    const before = upstream.seen.length;
    const { req, response } = openRequest(`${proxy.url}/v2/images/22222222-2222-2222-2222-222222222222/file`, {});
    const res = await response;
    await new Promise<void>((resolve) => {
      let got = 0;
      res.on('data', (c: Buffer) => {
        got += c.length;
        if (got >= 4 * MiB) resolve();
      });
    });
    req.destroy();
    const seen = upstream.seen[before];
    await expect(within(seen.ended, 3000, 'the upstream download being released')).resolves.toBe('aborted');
  });

  it('releases the upstream request at once when a client aborts a chunked upload', async () => {
    upstream.handle((req, res) => {
      req.on('end', () => {
        res.writeHead(204);
        res.end();
      });
    });
    const before = upstream.seen.length;
    const body = new Readable({ read() {} });
    const { req, response } = openRequest(
      `${proxy.url}/v2/images/33333333-3333-3333-3333-333333333333/file`,
      { method: 'PUT', headers: { 'Content-Type': 'application/octet-stream', 'Transfer-Encoding': 'chunked' } },
      body,
    );
    response.catch(() => undefined);
    for (let i = 0; i < 8; i++) body.push(Buffer.alloc(MiB));
    await within(
      (async () => {
        while (upstream.seen.length <= before || upstream.seen[before].bytesReceived() < 4 * MiB) await new Promise((r) => setTimeout(r, 20));
      })(),
      5000,
      'the upload reaching the upstream',
    );
    req.destroy();
    await expect(within(upstream.seen[before].ended, 3000, 'the upstream upload being released')).resolves.toBe('aborted');
  });

  it('answers 504 in Glance style when Glance stays silent longer than upstream_idle', async () => {
    upstream.handle(() => undefined);
    const res = await client.get('/v2/images/44444444-4444-4444-4444-444444444444', { Accept: 'application/json' });
    expect(res.status).toBe(504);
    expect(res.header('content-type')).toBe('application/json');
    expect(res.json()).toEqual({
      message: 'The gateway has timed out.<br /><br />\nThe image service did not answer in time.\n\n',
      code: '504 Gateway Timeout',
      title: 'Gateway Timeout',
    });
  });

  it('answers 504 on a streamed route too (image data), when Glance stays silent longer than upstream_idle', async () => {
    upstream.handle(() => undefined);
    const res = await client.get('/v2/images/44444444-4444-4444-4444-444444444445/file', { Accept: 'application/json' });
    expect(res.status).toBe(504);
    expect(res.json()).toMatchObject({ code: '504 Gateway Timeout' });
  });

  it.each([
    ['a streamed route', '/v2/images/88888888-8888-8888-8888-888888888888/file'],
    ['an enriched route', '/v2/images/88888888-8888-8888-8888-888888888888'],
  ])('answers 502 on %s when Glance closes the connection without an answer', async (_kind, path) => {
    upstream.handle((req) => req.socket.destroy());
    const res = await client.get(path, { Accept: 'application/json' });
    expect(res.status).toBe(502);
    expect(res.json()).toMatchObject({ code: '502 Bad Gateway' });
  });

  it('forwards no hop-by-hop request header, and passes the answer headers in their case, order and number', async () => {
    upstream.handle((_req, res) => {
      res.writeHead(200, [
        'X-First', 'a',
        'Content-Type', 'application/octet-stream',
        'Proxy-Connection', 'keep-alive',
        'x-dup', '1',
        'X-Dup', '2',
        'Content-Length', '3',
      ]);
      res.end('abc');
    });
    const before = upstream.seen.length;
    const res = await client.get('/v2/images/99999999-9999-9999-9999-999999999999/file', {
      'Keep-Alive': 'timeout=99',
      'Proxy-Connection': 'keep-alive',
      TE: 'trailers',
      'X-Custom': 'kept',
    });
    expect(res.status).toBe(200);
    expect(res.text()).toBe('abc');
    const seen = upstream.seen[before]!.headers;
    expect(seen['x-custom']).toBe('kept');
    for (const name of ['keep-alive', 'proxy-connection', 'te']) expect(seen[name]).toBeUndefined();
    const own = new Set(['date', 'connection', 'keep-alive']);
    expect(res.rawHeaders.filter(([name]) => !own.has(name.toLowerCase()))).toEqual([
      ['X-First', 'a'],
      ['Content-Type', 'application/octet-stream'],
      ['x-dup', '1'],
      ['X-Dup', '2'],
      ['Content-Length', '3'],
    ]);
  });

  it('keeps a slow upload alive while bytes keep flowing, well past the idle timeout', async () => {
    upstream.handle((req, res) => {
      let n = 0;
      req.on('data', (c: Buffer) => (n += c.length));
      req.on('end', () => {
        res.writeHead(200, { 'Content-Type': 'application/json' });
        res.end(JSON.stringify({ received: n }));
      });
    });
    // One chunk every 0.5 s for 5 s: longer than both idle timeouts (2 s), never silent for that long.
    let sent = 0;
    const body = new Readable({
      read() {
        if (sent >= 10) return void setTimeout(() => this.push(null), 500);
        sent++;
        setTimeout(() => this.push(Buffer.alloc(1024)), 500);
      },
    });
    const res = await client.request({
      method: 'PUT',
      path: '/v2/images/55555555-5555-5555-5555-555555555555/file',
      headers: { 'Content-Type': 'application/octet-stream', 'Transfer-Encoding': 'chunked' },
      body,
    });
    expect(res.status).toBe(200);
    expect(res.json()).toEqual({ received: 10 * 1024 });
  });
});

describe('Glance unreachable', () => {
  let proxy: RunningProxy;
  let client: HttpClient;

  beforeAll(async () => {
    const nothingListens = await freePort();
    proxy = await startProxy({ upstream: `http://127.0.0.1:${nothingListens}` });
    client = new HttpClient(proxy.url);
  });

  afterAll(async () => {
    client?.destroy();
    await proxy?.stop();
  });

  it('answers 503 with a JSON body when the client accepts JSON', async () => {
    const res = await client.get('/v2/images', { Accept: 'application/json' });
    expect(res.status).toBe(503);
    expect(res.header('x-openstack-request-id')).toMatch(/^req-[0-9a-f-]{36}$/);
    expect(res.json()).toEqual({
      message: 'The server is currently unavailable. Please try again at a later time.<br /><br />\nThe image service could not be reached.\n\n',
      code: '503 Service Unavailable',
      title: 'Service Unavailable',
    });
  });

  it('answers 503 with an HTML body for Accept */*, plain text for text/plain, and JSON openstacksdk reads for an empty Accept', async () => {
    const html = await client.get('/v2/images/66666666-6666-6666-6666-666666666666/file', { Accept: '*/*' });
    expect(html.status).toBe(503);
    expect(html.header('content-type')).toBe('text/html; charset=UTF-8');
    expect(html.text()).toContain('<title>503 Service Unavailable</title>');
    const plain = await client.get('/versions', { Accept: 'text/plain' });
    expect(plain.status).toBe(503);
    expect(plain.header('content-type')).toBe('text/plain; charset=UTF-8');
    expect(plain.text()).toBe('503 Service Unavailable\n\nThe server is currently unavailable. Please try again at a later time.\n\n The image service could not be reached.  ');
    const none = await client.get('/versions', { Accept: '' });
    expect(none.status).toBe(503);
    expect(none.header('content-type')).toBe('application/json');
    expect(JSON.parse(none.text())).toEqual({
      error: { code: 503, title: 'Service Unavailable', message: 'The server is currently unavailable. Please try again at a later time.\n\nThe image service could not be reached.' },
    });
  });

  it('keeps serving after upstream failures (no crash)', async () => {
    for (let i = 0; i < 20; i++) await client.get('/v2/images');
    const res = await client.sendJson('POST', '/v2/images', { name: 'x' });
    expect(res.status).toBe(503);
    expect(proxy.logs()).not.toMatch(/Uncaught|UnhandledPromiseRejection|TypeError/);
  });
});
