import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServiceAuth, type ServiceAuthLogger } from '../../src/auth/keystone';
import type { RunningGlance } from '../harness/glance';
import { HttpClient, fetchOnce, type HttpResponse } from '../harness/http';
import { runCli, type CliResult } from '../harness/openstack-cli';
import { startKeystoneCloud, type KeystoneCloud, type KeystoneUser, type RunningKeystone } from '../harness/keystone';
import type { RunningProxy } from '../harness/proxy';
import { runTag } from './support/stx-images';

/**
 * The proxy in front of a Glance that checks tokens against a real Keystone: client tokens reach
 * Glance untouched and the proxy decides nothing about identity; the worker's service identity
 * (src/auth/keystone.ts) authenticates by password or application credential and finds Glance in the
 * catalog; the openstack CLI logs in with a password and reaches the proxy through the catalog.
 */

interface LogLine {
  level: 'info' | 'warn';
  message: string;
  meta?: Record<string, unknown>;
}

/** A logger that keeps what createServiceAuth logs, to look for secrets in it. */
function recordingLogger(): ServiceAuthLogger & { lines: LogLine[]; text(): string } {
  const lines: LogLine[] = [];
  return {
    lines,
    info: (message, meta) => lines.push({ level: 'info', message, meta }),
    warn: (message, meta) => lines.push({ level: 'warn', message, meta }),
    text: () => JSON.stringify(lines),
  };
}

/** Runs the openstack CLI with only the given OS_* settings. */
const openstack = (env: Record<string, string>, args: string[]): Promise<CliResult> => runCli('/usr/bin/openstack', args, env);

/** What a client sees of an error answer: status, the headers that matter, and the body. */
function errorAsSeen(res: HttpResponse): { status: number; wwwAuthenticate: string | undefined; contentType: string | undefined; body: string } {
  return { status: res.status, wwwAuthenticate: res.header('www-authenticate'), contentType: res.header('content-type'), body: res.text() };
}

describe('the proxy in front of a Glance that checks tokens with Keystone', () => {
  let cloud: KeystoneCloud;
  let keystone: RunningKeystone;
  let glance: RunningGlance;
  let proxy: RunningProxy;
  let viaProxy: HttpClient;
  let direct: HttpClient;
  let member: KeystoneUser;
  let reader: KeystoneUser;
  /** The raw-cache worker's identity as an operator would create it. */
  let worker: KeystoneUser;
  let memberToken: string;
  const run = runTag();

  beforeAll(async () => {
    cloud = await startKeystoneCloud();
    ({ keystone, glance, worker } = cloud);
    proxy = cloud.proxy!;
    viaProxy = new HttpClient(proxy.url);
    direct = new HttpClient(glance.url);
    member = await keystone.createUser({ name: 'member', project: 'demo', roles: ['member'] });
    reader = await keystone.createUser({ name: 'reader', project: 'demo', roles: ['reader'] });
    memberToken = await keystone.issueToken(member);
  }, 120_000);

  afterAll(async () => {
    viaProxy?.destroy();
    direct?.destroy();
    await cloud?.stop();
  });

  describe('client tokens', () => {
    it('a member token creates an image through the proxy, owned by the member\'s project, and shows it', async () => {
      const created = await viaProxy.sendJson(
        'POST',
        '/v2/images',
        { name: 'member-image', disk_format: 'qcow2', container_format: 'bare', stx_test_run: run },
        { 'X-Auth-Token': memberToken, Accept: 'application/json' },
      );
      expect(created.status).toBe(201);
      const image = created.json();
      expect(image).toMatchObject({ name: 'member-image', owner: member.project.id, status: 'queued', visibility: 'shared' });

      const shown = await viaProxy.get(`/v2/images/${image.id}`, { 'X-Auth-Token': memberToken, Accept: 'application/json' });
      expect(shown.status).toBe(200);
      expect(shown.json()).toMatchObject({ id: image.id, owner: member.project.id, stx_test_run: run });
    });

    it('an invalid token gets Glance\'s own 401, WWW-Authenticate header included, unchanged', async () => {
      const headers = { 'X-Auth-Token': 'not-a-token', Accept: 'application/json' };
      const [fromProxy, fromGlance] = await Promise.all([viaProxy.get('/v2/images', headers), direct.get('/v2/images', headers)]);
      expect(fromGlance.status).toBe(401);
      expect(fromGlance.header('www-authenticate')).toBe(`Keystone uri="${keystone.authUrl}"`);
      expect(errorAsSeen(fromProxy)).toEqual(errorAsSeen(fromGlance));
    });

    it('a request without a token gets the same 401 as from Glance', async () => {
      const body = { name: 'anonymous', disk_format: 'raw', container_format: 'bare' };
      const [fromProxy, fromGlance] = await Promise.all([
        viaProxy.sendJson('POST', '/v2/images', body, { Accept: 'application/json' }),
        direct.sendJson('POST', '/v2/images', body, { Accept: 'application/json' }),
      ]);
      expect(fromGlance.status).toBe(401);
      expect(errorAsSeen(fromProxy)).toEqual(errorAsSeen(fromGlance));
    });

    it('grants nothing: a reader cannot create an image through the proxy, as Glance decides', async () => {
      const token = await keystone.issueToken(reader);
      const body = { name: 'reader-image', disk_format: 'raw', container_format: 'bare', stx_test_run: run };
      const headers = { 'X-Auth-Token': token, Accept: 'application/json' };
      const [fromProxy, fromGlance] = await Promise.all([
        viaProxy.sendJson('POST', '/v2/images', body, headers),
        direct.sendJson('POST', '/v2/images', body, headers),
      ]);
      expect(fromGlance.status).toBe(403);
      expect(errorAsSeen(fromProxy)).toEqual(errorAsSeen(fromGlance));

      const listed = await direct.get(`/v2/images?stx_test_run=${run}`, { 'X-Auth-Token': token, Accept: 'application/json' });
      expect(listed.status).toBe(200);
      expect(listed.json().images.map((image: { name: string }) => image.name)).toEqual(['member-image']);
    });
  });

  describe('the worker\'s service identity (createServiceAuth)', () => {
    it('gets a token with password authentication that Glance accepts, and logs names only', async () => {
      const logger = recordingLogger();
      const auth = createServiceAuth(keystone.serviceAuthConfig(worker), logger);
      const headers = await auth.authHeaders();
      expect(Object.keys(headers)).toEqual(['X-Auth-Token']);
      const listed = await direct.get('/v2/images', { ...headers, Accept: 'application/json' });
      expect(listed.status).toBe(200);

      expect(logger.lines).toEqual([
        {
          level: 'info',
          message: 'service identity authenticated with Keystone',
          meta: expect.objectContaining({ user: worker.name, user_domain: 'Default', project: 'service', project_domain: 'Default' }),
        },
      ]);
      expect(logger.text()).not.toContain(headers['X-Auth-Token']);
      expect(logger.text()).not.toContain(worker.password);
    });

    it('finds Glance in the catalog: the internal image endpoint, or another interface or region when configured', async () => {
      const logger = recordingLogger();
      const internal = createServiceAuth(keystone.serviceAuthConfig(worker), logger);
      expect(await internal.imageEndpoint()).toBe(glance.url);
      const publicOne = createServiceAuth(keystone.serviceAuthConfig(worker, { interface: 'public', region_name: 'RegionOne' }), logger);
      expect(await publicOne.imageEndpoint()).toBe(proxy.url);

      const elsewhere = createServiceAuth(keystone.serviceAuthConfig(worker, { region_name: 'RegionTwo' }), logger);
      expect(await elsewhere.imageEndpoint()).toBeUndefined();
      expect(await elsewhere.imageEndpoint()).toBeUndefined();
      expect(logger.lines.filter((line) => line.level === 'warn')).toEqual([
        { level: 'warn', message: 'no image endpoint in the service catalog', meta: { interface: 'internal', region: 'RegionTwo' } },
      ]);
    });

    it('keeps one token for concurrent callers and authenticates again after invalidate()', async () => {
      const logger = recordingLogger();
      const auth = createServiceAuth(keystone.serviceAuthConfig(worker), logger);
      const [a, b, endpoint, c] = await Promise.all([auth.authHeaders(), auth.authHeaders(), auth.imageEndpoint(), auth.authHeaders()]);
      expect(endpoint).toBe(glance.url);
      expect(b).toEqual(a);
      expect(c).toEqual(a);
      expect(await auth.authHeaders()).toEqual(a);
      expect(logger.lines).toHaveLength(1);

      auth.invalidate();
      const renewed = await auth.authHeaders();
      expect(renewed['X-Auth-Token']).not.toBe(a['X-Auth-Token']);
      expect(logger.lines).toHaveLength(2);
      expect((await direct.get('/v2/images', { ...renewed, Accept: 'application/json' })).status).toBe(200);
    });

    it('reads the catalog again with the new token after invalidate(), so a moved Glance is found', async () => {
      const auth = createServiceAuth(keystone.serviceAuthConfig(worker, { interface: 'admin' }), recordingLogger());
      expect(await auth.imageEndpoint()).toBe(glance.url);
      const moved = 'http://127.0.0.1:9/v2/';
      await keystone.setEndpoint('image', 'glance', 'admin', moved);
      try {
        expect(await auth.imageEndpoint()).toBe(glance.url);
        auth.invalidate();
        // The catalog's version suffix is not part of the base URL the worker's client gets.
        expect(await auth.imageEndpoint()).toBe('http://127.0.0.1:9');
      } finally {
        await keystone.setEndpoint('image', 'glance', 'admin', glance.url);
      }
    });

    it('renews the token shortly before it expires, not earlier', async () => {
      let offsetMs = 0;
      const auth = createServiceAuth(keystone.serviceAuthConfig(worker), recordingLogger(), { now: () => Date.now() + offsetMs });
      const first = await auth.authHeaders();
      // Keystone's tokens here live an hour; the margin is five minutes.
      offsetMs = 54 * 60_000;
      expect(await auth.authHeaders()).toEqual(first);
      offsetMs = 56 * 60_000;
      const renewed = await auth.authHeaders();
      expect(renewed['X-Auth-Token']).not.toBe(first['X-Auth-Token']);
      expect((await direct.get('/v2/images', { ...renewed, Accept: 'application/json' })).status).toBe(200);
    });

    it('gets a token with an application credential, scoped to the credential\'s project', async () => {
      const credential = await keystone.createApplicationCredential(worker);
      const logger = recordingLogger();
      const auth = createServiceAuth(keystone.serviceAuthConfig(credential), logger);
      const headers = await auth.authHeaders();
      expect((await direct.get('/v2/images', { ...headers, Accept: 'application/json' })).status).toBe(200);
      expect(await auth.imageEndpoint()).toBe(glance.url);
      expect(logger.lines[0].meta).toMatchObject({ user: worker.name, project: 'service' });
      expect(logger.text()).not.toContain(credential.secret);
      expect(logger.text()).not.toContain(headers['X-Auth-Token']);
    });

    it('refuses a wrong password with Keystone\'s 401 message, without repeating the password, and tries again next time', async () => {
      const auth = createServiceAuth(keystone.serviceAuthConfig(worker, { password: 'wrong-password-123' }), recordingLogger());
      const failure = auth.authHeaders();
      await expect(failure).rejects.toThrow(`Keystone refused the service credentials at ${keystone.authUrl}/auth/tokens: 401 The request you have made requires authentication.`);
      const message = await failure.catch((error: Error) => error.message);
      expect(message).not.toContain('wrong-password-123');
      // A later call tries again instead of keeping the failure.
      await expect(auth.authHeaders()).rejects.toThrow('401');
    });

    it('refuses a configuration that mixes a password and an application credential', () => {
      const config = { ...keystone.serviceAuthConfig(worker), application_credential_id: 'x', application_credential_secret: 'y' };
      expect(() => createServiceAuth(config, recordingLogger())).toThrow('not both');
    });

    it('takes auth_url without /v3 as Keystone\'s base URL', async () => {
      const auth = createServiceAuth(keystone.serviceAuthConfig(worker, { auth_url: keystone.url }), recordingLogger());
      expect(await auth.imageEndpoint()).toBe(glance.url);
    });
  });

  describe('the openstack CLI with password authentication, the proxy as the image endpoint', () => {
    let workDir: string;
    let imageFile: string;

    beforeAll(() => {
      workDir = mkdtempSync(join(tmpdir(), 'stx-keystone-cli-'));
      imageFile = join(workDir, 'x.qcow2');
      execFileSync('qemu-img', ['create', '-f', 'qcow2', imageFile, '16M'], { stdio: 'ignore' });
    });

    afterAll(() => {
      if (workDir) rmSync(workDir, { recursive: true, force: true });
    });

    it('image create --property cache_raw=True --file, then image show -f json shows store file and cache_raw True', async () => {
      const name = `osc-${run}`;
      const env = keystone.openstackEnv(member);
      const created = await openstack(env, [
        'image', 'create',
        '--property', 'cache_raw=True',
        '--property', `stx_test_run=${run}`,
        '--disk-format', 'qcow2',
        '--container-format', 'bare',
        '--file', imageFile,
        name,
      ]);
      expect(created).toMatchObject({ code: 0, stderr: '' });

      const shown = await openstack(env, ['image', 'show', name, '-f', 'json']);
      expect(shown).toMatchObject({ code: 0, stderr: '' });
      const image = JSON.parse(shown.stdout);
      expect(image).toMatchObject({ name, status: 'active', owner: member.project.id, disk_format: 'qcow2' });
      expect(image.properties).toMatchObject({ store: 'file', cache_raw: 'True', stx_test_run: run });

      // The CLI found the proxy in the catalog; Glance alone would not show `store`.
      await proxy.waitForLog(new RegExp(`"method":"PUT","path":"/v2/images/${image.id}/file"`));
      const inGlance = await fetchOnce(`${glance.url}/v2/images/${image.id}`, {
        headers: { 'X-Auth-Token': await keystone.issueToken(member), Accept: 'application/json' },
      });
      expect(inGlance.json()).toMatchObject({ cache_raw: 'True', stores: 'fs' });
      expect(inGlance.json()).not.toHaveProperty('store');
    });
  });
});
