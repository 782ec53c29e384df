import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient } from '../harness/http';
import { startProxy, type RunningProxy } from '../harness/proxy';

/** Request ids, logs, absolute links and configuration errors, against a real Glance. */

const CLI = resolve(__dirname, '..', '..', 'dist', 'cli.js');
const VALID_ID = 'req-0f0e0d0c-0b0a-4909-8807-060504030201';
const SECRET = 'gAAAAABsecret-token-value-0123456789';

function logLines(proxy: RunningProxy): Array<Record<string, unknown>> {
  return proxy
    .logs()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
}

describe('request ids and logs', () => {
  let glance: RunningGlance;
  let proxy: RunningProxy;
  let client: HttpClient;

  beforeAll(async () => {
    glance = await startGlance();
    proxy = await startProxy({ upstream: glance.url });
    client = new HttpClient(proxy.url);
  });

  afterAll(async () => {
    client?.destroy();
    await proxy?.stop();
    await glance?.stop();
  });

  it('forwards a well-formed client request id, which Glance echoes and the access line carries', async () => {
    const res = await client.get('/v2/images', { 'X-OpenStack-Request-Id': VALID_ID });
    expect(res.status).toBe(200);
    expect(res.header('x-openstack-request-id')).toBe(VALID_ID);
    const line = await proxy.waitForLog(VALID_ID);
    expect(JSON.parse(line)).toMatchObject({ message: 'request', method: 'GET', path: '/v2/images', route: 'image-list', status: 200 });
  });

  it("drops a malformed client request id and logs Glance's own", async () => {
    const res = await client.get('/v2/images?limit=1', { 'X-OpenStack-Request-Id': 'not-an-id' });
    const glanceId = res.header('x-openstack-request-id')!;
    expect(glanceId).toMatch(/^req-[0-9a-f-]{36}$/);
    const line = JSON.parse(await proxy.waitForLog(glanceId));
    expect(line).toMatchObject({ path: '/v2/images?limit=1', request_id: glanceId });
    expect(proxy.logs()).not.toContain('not-an-id');
  });

  it('gives its own answers a request id and logs every line of that request with it', async () => {
    const res = await client.sendJson('POST', '/v2/images', { name: 'bad', hw_wrs_live_migration_timeout: '900' }, { Accept: 'application/json' });
    expect(res.status).toBe(400);
    const id = res.header('x-openstack-request-id')!;
    expect(id).toMatch(/^req-[0-9a-f-]{36}$/);
    await proxy.waitForLog(new RegExp(`"message":"request".*"request_id":"${id}"`));
    const lines = logLines(proxy).filter((l) => l.request_id === id);
    expect(lines.map((l) => l.message).sort()).toEqual(['request', 'request rejected before reaching Glance']);
  });

  it('never writes a token or a password to the log', async () => {
    await client.get('/v2/images', { 'X-Auth-Token': SECRET, 'X-Subject-Token': SECRET, Authorization: `Bearer ${SECRET}` });
    await client.sendJson('POST', '/v2/images', { name: 'x', hw_wrs_live_migration_timeout: 'nope' }, { 'X-Auth-Token': SECRET });
    await client.request({ method: 'PATCH', path: '/v2/images/00000000-0000-4000-8000-000000000000', headers: { 'Content-Type': 'application/json', 'X-Auth-Token': SECRET }, body: '[]' });
    await proxy.waitForLog('"status":415');
    expect(proxy.logs()).not.toContain(SECRET);
    expect(proxy.logs()).not.toMatch(/x-auth-token/i);
  });
});

describe('absolute links', () => {
  let glance: RunningGlance;
  let plain: RunningProxy;
  let published: RunningProxy;

  beforeAll(async () => {
    glance = await startGlance();
    plain = await startProxy({ upstream: glance.url });
    published = await startProxy({ upstream: glance.url, args: ['--public-url', 'https://images.example.com:8443'] });
  });

  afterAll(async () => {
    await plain?.stop();
    await published?.stop();
    await glance?.stop();
  });

  it("points Location at the proxy the client used (the client's Host reaches Glance)", async () => {
    const client = new HttpClient(plain.url);
    const res = await client.sendJson('POST', '/v2/images', { name: 'loc' });
    client.destroy();
    expect(res.status).toBe(201);
    expect(res.header('location')).toBe(`${plain.url}/v2/images/${res.json().id}`);
  });

  it('rewrites Location and the versions document to the configured public URL', async () => {
    const client = new HttpClient(published.url);
    const created = await client.sendJson('POST', '/v2/images', { name: 'pub' });
    expect(created.header('location')).toBe(`https://images.example.com:8443/v2/images/${created.json().id}`);
    const versions = await client.get('/versions');
    expect(versions.status).toBe(200);
    const hrefs = versions.json().versions.flatMap((v: { links: Array<{ href: string }> }) => v.links.map((l) => l.href));
    expect(hrefs.length).toBeGreaterThan(0);
    for (const href of hrefs) expect(href).toBe('https://images.example.com:8443/v2/');
    const root = await client.get('/');
    expect(root.status).toBe(300);
    expect(root.text()).toContain('https://images.example.com:8443/v2/');
    expect(root.text()).not.toContain('127.0.0.1');
    client.destroy();
  });
});

describe('configuration errors', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stx-proxy-config-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const serve = (...args: string[]) => spawnSync(process.execPath, [CLI, 'serve', ...args], { encoding: 'utf8', timeout: 20_000 });

  it('refuses an unknown key with one line naming it', async () => {
    const file = join(dir, 'unknown.yaml');
    await writeFile(file, 'upstream: http://127.0.0.1:1\ntimeouts:\n  clint_idle: 5\n');
    const result = serve('--config', file);
    expect(result.status).toBe(2);
    expect(result.stderr.trim().split('\n')).toEqual([`stx-glance-proxy: config: unknown key 'timeouts.clint_idle' in ${file}`]);
  });

  it('refuses a bad value with one line naming the key', async () => {
    const file = join(dir, 'bad.yaml');
    await writeFile(file, 'upstream: http://127.0.0.1:1\nupstream_pool:\n  max_sockets: many\n');
    const result = serve('--config', file);
    expect(result.status).toBe(2);
    expect(result.stderr.trim().split('\n')).toHaveLength(1);
    expect(result.stderr).toContain("'upstream_pool.max_sockets' must be integer");
  });

  it('lets the environment override the file and flags override both', async () => {
    const file = join(dir, 'layers.yaml');
    await writeFile(file, 'upstream: http://127.0.0.1:1\nlisten: 127.0.0.1:1\n');
    const result = spawnSync(process.execPath, [CLI, 'serve', '--config', file, '--listen', 'not a listen value'], {
      encoding: 'utf8',
      env: { ...process.env, STX_GLANCE_PROXY_LISTEN: '127.0.0.1:2' },
      timeout: 20_000,
    });
    expect(result.status).toBe(2);
    expect(result.stderr).toContain("'listen' must match pattern");
  });

  it('refuses to start without an upstream', () => {
    const result = serve();
    expect(result.status).toBe(2);
    expect(result.stderr).toMatch(/^stx-glance-proxy: config: no upstream Glance/);
  });
});
