import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { HttpClient } from '../harness/http';
import { makeQcow2 } from '../harness/images';
import { PROPERTY_PROTECTIONS_FILE, startKeystoneCloud, type KeystoneCloud } from '../harness/keystone';
import { freePort } from '../harness/ports';
import { startWorker, type RunningProxy } from '../harness/proxy';

/**
 * A cloud as an operator runs it: real Keystone, Glance in keystone mode with the property
 * protections, the proxy registered as the public image endpoint, and a worker that logs in with an
 * application credential (its secret from the environment) and finds Glance in the catalog.
 */

const run = promisify(execFile);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('raw cache behind Keystone', () => {
  let cloud: KeystoneCloud;
  let worker: RunningProxy;
  let dir: string;
  let secret: string;
  let memberEnv: Record<string, string>;
  let memberPassword: string;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stx-keystone-rawcache-'));
    const configFile = join(dir, 'config.json');
    const opsPort = await freePort();
    cloud = await startKeystoneCloud({
      glanceConf: { propertyProtections: PROPERTY_PROTECTIONS_FILE },
      proxy: async ({ keystone, worker: identity }) => {
        const credential = await keystone.createApplicationCredential(identity);
        secret = credential.secret;
        const { application_credential_secret: _kept_out_of_the_file, ...serviceAuth } = keystone.serviceAuthConfig(credential, { glance_from_catalog: true });
        await writeFile(
          configFile,
          JSON.stringify({
            service_auth: serviceAuth,
            rawcache: {
              enabled: true,
              queue: { backend: 'sqlite', sqlite_path: join(dir, 'queue.sqlite') },
              target: { kind: 'file', file_dir: join(dir, 'raw') },
              worker: { work_dir: join(dir, 'work'), reconcile_interval_seconds: 0 },
            },
            metrics: { worker_listen: `127.0.0.1:${opsPort}` },
          }),
        );
        return { config: configFile, env: { STX_GLANCE_PROXY_SERVICE_APPLICATION_CREDENTIAL_SECRET: secret } };
      },
    });
    worker = await startWorker({ config: configFile, opsPort, env: { STX_GLANCE_PROXY_SERVICE_APPLICATION_CREDENTIAL_SECRET: secret } });
    const member = await cloud.keystone.createUser({ project: 'demo', roles: ['member', 'reader'] });
    memberPassword = member.password;
    memberEnv = { ...process.env, ...cloud.keystone.openstackEnv(member), HOME: dir } as Record<string, string>;
  }, 180_000);

  afterAll(async () => {
    await worker?.stop();
    await cloud?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const openstack = async (...args: string[]) => JSON.parse((await run('openstack', args, { env: memberEnv, timeout: 60_000 })).stdout);
  const field = (shown: Record<string, any>, name: string) => shown[name] ?? shown.properties?.[name];

  it('openstack image create with cache_raw=True through the catalog ends Cached, with store shown', async () => {
    const file = makeQcow2(dir, 'tenant.qcow2', 64, 4);
    const created = await openstack('image', 'create', '--property', 'cache_raw=True', '--disk-format', 'qcow2', '--container-format', 'bare', '--file', file, '-f', 'json', 'tenant-image');
    expect(field(created, 'cache_raw')).toBe('True');

    let shown = await openstack('image', 'show', 'tenant-image', '-f', 'json');
    expect(field(shown, 'store')).toBe('file');
    const deadline = Date.now() + 60_000;
    while (field(shown, 'cache_raw_status') !== 'Cached' && Date.now() < deadline) {
      await sleep(500);
      shown = await openstack('image', 'show', 'tenant-image', '-f', 'json');
    }
    expect(field(shown, 'cache_raw_status')).toBe('Cached');
    expect(field(shown, 'cache_raw_url')).toBe(`file://${join(dir, 'raw', `${shown.id}.raw`)}`);
    expect(field(shown, 'cache_raw_size')).toBe(String(64 * 1024 * 1024));
  });

  it('a tenant going around the proxy cannot forge the raw-cache fields in Glance', async () => {
    const token = (await run('openstack', ['token', 'issue', '-f', 'value', '-c', 'id'], { env: memberEnv })).stdout.trim();
    const glance = new HttpClient(cloud.glance.url);
    const image = (await glance.sendJson('POST', '/v2/images', { name: 'forger' }, { 'X-Auth-Token': token })).json();
    const forged = await glance.request({
      method: 'PATCH',
      path: `/v2/images/${image.id}`,
      headers: { 'X-Auth-Token': token, 'Content-Type': 'application/openstack-images-v2.1-json-patch' },
      body: JSON.stringify([{ op: 'add', path: '/cache_raw_url', value: 'rbd://x/images/victim_raw/snap' }]),
    });
    expect(forged.status).toBe(403);
    glance.destroy();
  });

  it('never writes a token, a password or the application credential secret to any log', async () => {
    const token = (await run('openstack', ['token', 'issue', '-f', 'value', '-c', 'id'], { env: memberEnv })).stdout.trim();
    await new HttpClient(cloud.proxy!.url).get('/v2/images', { 'X-Auth-Token': token });
    await sleep(300);
    for (const logs of [cloud.proxy!.logs(), worker.logs()]) {
      expect(logs).not.toContain(token);
      expect(logs).not.toContain(secret);
      expect(logs).not.toContain(memberPassword);
    }
  });
});
