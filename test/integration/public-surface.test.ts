import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient } from '../harness/http';
import { freePort } from '../harness/ports';
import { startProxy, type RunningProxy } from '../harness/proxy';

/**
 * What a client on the proxy's API port can reach and steer, against a real Glance that parses
 * proxy headers ([oslo_middleware] enable_proxy_headers_parsing, as behind a TLS terminator): only
 * the plain /healthcheck of the proxy's own endpoints, no forged origin in the links Glance builds,
 * and a connection that stays orderly when garbage follows a request.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface RawResponse {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/**
 * Writes `payload` on one connection and reads until the proxy closes it (or `timeoutMs` passes),
 * then splits what came back into HTTP/1.1 responses.
 */
function exchange(port: number, payload: string, timeoutMs = 15_000): Promise<{ responses: RawResponse[]; closedByProxy: boolean }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.write(payload));
    const chunks: Buffer[] = [];
    let closedByProxy = false;
    const timer = setTimeout(() => socket.destroy(), timeoutMs);
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.once('end', () => {
      closedByProxy = true;
      socket.end();
    });
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('close', () => {
      clearTimeout(timer);
      try {
        resolve({ responses: splitResponses(Buffer.concat(chunks).toString('latin1')), closedByProxy });
      } catch (err) {
        reject(err);
      }
    });
  });
}

function splitResponses(raw: string): RawResponse[] {
  const responses: RawResponse[] = [];
  let rest = raw;
  while (rest.length > 0) {
    const headEnd = rest.indexOf('\r\n\r\n');
    if (headEnd < 0) throw new Error(`not an HTTP response: ${JSON.stringify(rest.slice(0, 200))}`);
    const [statusLine, ...lines] = rest.slice(0, headEnd).split('\r\n');
    const status = Number(/^HTTP\/1\.[01] (\d{3}) /.exec(statusLine)?.[1]);
    if (!status) throw new Error(`not a status line: ${JSON.stringify(statusLine)}`);
    const headers: Record<string, string> = {};
    for (const line of lines) {
      const colon = line.indexOf(':');
      headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    rest = rest.slice(headEnd + 4);
    let body = '';
    if (headers['transfer-encoding']?.toLowerCase() === 'chunked') {
      for (;;) {
        const sizeEnd = rest.indexOf('\r\n');
        const size = parseInt(rest.slice(0, sizeEnd), 16);
        rest = rest.slice(sizeEnd + 2);
        if (size === 0) {
          rest = rest.slice(rest.indexOf('\r\n') + 2);
          break;
        }
        body += rest.slice(0, size);
        rest = rest.slice(size + 2);
      }
    } else {
      const length = Number(headers['content-length'] ?? 0);
      body = rest.slice(0, length);
      rest = rest.slice(length);
    }
    responses.push({ status, headers, body });
  }
  return responses;
}

describe('the public surface', () => {
  let dir: string;
  let glance: RunningGlance;
  let proxy: RunningProxy;
  let trusting: RunningProxy;
  let client: HttpClient;
  let ops: HttpClient;
  let disableFile: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stx-public-'));
    const glanceConf = join(dir, 'proxy-headers.conf');
    await writeFile(glanceConf, '[oslo_middleware]\nenable_proxy_headers_parsing = True\n');
    glance = await startGlance({ extraConf: glanceConf });
    disableFile = join(dir, 'disabled');
    const config = join(dir, 'proxy.yaml');
    await writeFile(
      config,
      [`health:\n  disable_by_file: ${disableFile}`, 'rawcache:', '  enabled: true', `  queue: { backend: sqlite, sqlite_path: ${join(dir, 'q.sqlite')} }`].join('\n'),
    );
    proxy = await startProxy({ upstream: glance.url, config });
    const trustingConfig = join(dir, 'trusting.yaml');
    await writeFile(trustingConfig, 'trusted_proxies: [127.0.0.0/8]\n');
    trusting = await startProxy({ upstream: glance.url, config: trustingConfig });
    client = new HttpClient(proxy.url);
    ops = new HttpClient(proxy.opsUrl!);
  });

  afterAll(async () => {
    client?.destroy();
    ops?.destroy();
    await proxy?.stop();
    await trusting?.stop();
    await glance?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  describe('metrics and health', () => {
    it('starts the ops listener apart from the API port and logs its address', async () => {
      expect(proxy.opsUrl).not.toBe(proxy.url);
      const line = JSON.parse(await proxy.waitForLog('"message":"listening"'));
      expect(`http://${line.ops}`).toBe(proxy.opsUrl);
    });

    it('does not serve /metrics on the API port: the client gets 404 or what Glance answers', async () => {
      const direct = await new HttpClient(glance.url).get('/metrics');
      const res = await client.get('/metrics');
      expect([404, direct.status]).toContain(res.status);
      expect(res.text()).not.toContain('stx_glance_proxy');
    });

    it('serves Prometheus metrics on the ops listener', async () => {
      await client.get('/v2/images');
      const res = await ops.get('/metrics');
      expect(res.status).toBe(200);
      expect(res.header('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
      expect(res.text()).toMatch(/^stx_glance_proxy_requests_total\{.*status="200"\} [1-9]/m);
    });

    it('answers GET /healthcheck on the API port with OK and no details, whatever the client asks for', async () => {
      const plain = await client.get('/healthcheck?detailed');
      expect(plain.status).toBe(200);
      expect(plain.header('content-type')).toBe('text/plain; charset=UTF-8');
      expect(plain.text()).toBe('OK');
      const json = await client.get('/healthcheck?detailed=true', { Accept: 'application/json' });
      expect(json.text()).toBe('{\n    "detailed": false,\n    "reasons": [\n        "OK"\n    ]\n}');
      const html = await client.get('/healthcheck', { Accept: 'text/html' });
      expect(html.text()).toContain('<TD>OK</TD>');
      for (const res of [plain, json, html]) expect(res.text()).not.toMatch(/glance|queue|disable_by_file|127\.0\.0\.1/i);
    });

    it('answers HEAD /healthcheck with 204 and no body, as oslo.middleware does', async () => {
      const res = await client.request({ method: 'HEAD', path: '/healthcheck' });
      expect(res.status).toBe(204);
      expect(res.body.length).toBe(0);
    });

    it('answers other methods as GET, as oslo.middleware looks at the path alone', async () => {
      const res = await client.request({ method: 'POST', path: '/healthcheck', body: 'ignored' });
      expect(res.status).toBe(200);
      expect(res.text()).toBe('OK');
    });

    it('drains at once: 503 DISABLED BY FILE (HEAD: no body) while the file exists', async () => {
      await writeFile(disableFile, '');
      try {
        const get = await client.get('/healthcheck');
        expect(get.status).toBe(503);
        expect(get.text()).toBe('DISABLED BY FILE');
        const head = await client.request({ method: 'HEAD', path: '/healthcheck' });
        expect(head.status).toBe(503);
        expect(head.body.length).toBe(0);
      } finally {
        await rm(disableFile);
      }
      expect((await client.get('/healthcheck')).status).toBe(200);
    });

    it('reports each check of Glance and the raw-cache queue on the ops listener only', async () => {
      // Past the 2 s cache of the ops checks, which the drain above may have filled.
      await sleep(2100);
      const detailed = await ops.get('/healthcheck?detailed', { Accept: 'application/json' });
      expect(detailed.status).toBe(200);
      expect(detailed.json().reasons.map((r: { class: string }) => r.class)).toEqual(['disable_by_file', 'glance', 'rawcache_queue']);
    });

    it('keeps the API port healthy when Glance is down, and says so on the ops listener', async () => {
      const orphan = await startProxy({ upstream: `http://127.0.0.1:${await freePort()}` });
      try {
        const pub = await new HttpClient(orphan.url).get('/healthcheck');
        expect(pub.status).toBe(200);
        expect(pub.text()).toBe('OK');
        const detailed = await new HttpClient(orphan.opsUrl!).get('/healthcheck');
        expect(detailed.status).toBe(503);
        expect(detailed.text()).toMatch(/^Glance unreachable: .*ECONNREFUSED/);
      } finally {
        await orphan.stop();
      }
    });
  });

  describe('forwarding headers', () => {
    /** The origins in the links Glance builds for this request's headers: Location of a new image, and the versions hrefs. */
    const linksVia = async (via: string, headers: Record<string, string>) => {
      const http = new HttpClient(via);
      try {
        const created = await http.sendJson('POST', '/v2/images', { name: 'forwarded', disk_format: 'raw', container_format: 'bare' }, headers);
        expect(created.status).toBe(201);
        const versions = await http.get('/versions', headers);
        const hrefs: string[] = versions.json().versions.flatMap((v: { links: Array<{ href: string }> }) => v.links.map((l) => l.href));
        return { location: created.header('location')!.replace(created.json().id, 'ID'), hrefs: [...new Set(hrefs)] };
      } finally {
        http.destroy();
      }
    };

    const FORGED: Array<[string, Record<string, string>]> = [
      ['X-Forwarded-Host and -Proto', { 'X-Forwarded-Host': 'evil.example', 'X-Forwarded-Proto': 'https' }],
      ['Forwarded', { Forwarded: 'for=192.0.2.1;proto=https;host=evil.example' }],
      ['X-Forwarded-Prefix', { 'X-Forwarded-Prefix': '/evil' }],
      ['X_Forwarded_Host spelled with underscores', { X_Forwarded_Host: 'evil.example' }],
    ];

    it.each(FORGED)('reaching Glance directly, %s steer its links (so the tests below mean something)', async (_name, headers) => {
      const { location, hrefs } = await linksVia(glance.url, headers);
      expect([location, ...hrefs].some((link) => link.includes('evil'))).toBe(true);
    });

    it.each(FORGED)('from an untrusted client, %s do not change the links Glance builds', async (_name, headers) => {
      expect(await linksVia(proxy.url, headers)).toEqual({ location: `${proxy.url}/v2/images/ID`, hrefs: [`${proxy.url}/v2/`] });
    });

    it('from a trusted proxy, X-Forwarded-Host and -Proto name the public origin', async () => {
      expect(await linksVia(trusting.url, { 'X-Forwarded-Host': 'images.example.com', 'X-Forwarded-Proto': 'https' })).toEqual({
        location: 'https://images.example.com/v2/images/ID',
        hrefs: ['https://images.example.com/v2/'],
      });
    });

    it('from a trusted proxy, Forwarded names the public origin', async () => {
      expect(await linksVia(trusting.url, { Forwarded: 'for=192.0.2.1;proto=https;host=images.example.com' })).toEqual({
        location: 'https://images.example.com/v2/images/ID',
        hrefs: ['https://images.example.com/v2/'],
      });
    });
  });

  describe('a connection on which garbage follows a request', () => {
    const host = () => `Host: 127.0.0.1:${proxy.port}\r\n`;

    it("answers the request with Glance's real answer, then 400, then closes", async () => {
      const { responses, closedByProxy } = await exchange(proxy.port, `GET /versions HTTP/1.1\r\n${host()}\r\ngarbage\r\n\r\n`);
      expect(responses.map((r) => r.status)).toEqual([200, 400]);
      expect(JSON.parse(responses[0].body).versions.length).toBeGreaterThan(0);
      expect(responses[1].headers.connection).toBe('close');
      expect(responses[1].headers['content-type']).toBe('text/plain; charset=UTF-8');
      expect(responses[1].body).toMatch(/^400 Bad Request\n\nThe server could not comply with the request/);
      expect(closedByProxy).toBe(true);
    });

    it('carries out a request with a body before the garbage, and answers it', async () => {
      const body = JSON.stringify({ name: 'before-garbage', disk_format: 'raw', container_format: 'bare' });
      const payload = `POST /v2/images HTTP/1.1\r\n${host()}Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}\x00\x01garbage`;
      const { responses, closedByProxy } = await exchange(proxy.port, payload);
      expect(responses.map((r) => r.status)).toEqual([201, 400]);
      const id = JSON.parse(responses[0].body).id;
      expect((await client.get(`/v2/images/${id}`)).json()).toMatchObject({ name: 'before-garbage' });
      expect(closedByProxy).toBe(true);
    });

    it('answers garbage alone with 400 and closes', async () => {
      const { responses, closedByProxy } = await exchange(proxy.port, 'garbage\r\n\r\n');
      expect(responses.map((r) => r.status)).toEqual([400]);
      expect(closedByProxy).toBe(true);
    });

    it('answers headers too large after a request with 431, after that request', async () => {
      const payload = `GET /versions HTTP/1.1\r\n${host()}\r\nGET /versions HTTP/1.1\r\n${host()}X-Large: ${'a'.repeat(70_000)}\r\n\r\n`;
      const { responses, closedByProxy } = await exchange(proxy.port, payload);
      expect(responses.map((r) => r.status)).toEqual([200, 431]);
      expect(closedByProxy).toBe(true);
    });
  });
});
