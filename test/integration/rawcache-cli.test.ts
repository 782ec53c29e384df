import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient } from '../harness/http';
import { makeQcow2, rawSha256Of, sha256File } from '../harness/images';
import { freePort } from '../harness/ports';
import { startProxy, startWorker, type RunningProxy } from '../harness/proxy';

/**
 * The raw cache as an operator meets it with Debian's `glance` (python-glanceclient 4.1) and
 * `openstack` (python-openstackclient 6.0) CLIs, through the proxy to a real Glance (file store,
 * dummy token), with the SQLite queue and a `stx-glance-proxy worker` making the copies.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs an OpenStack CLI with a fresh HOME: glanceclient caches Glance's image schema in
 * ~/.glanceclient and, from the second command on, dies on the cached `stores` property clashing with
 * its own --stores option (shared/research/real-glance-behaviour.md §7).
 */
function runCli(command: string, args: string[]): Promise<CliResult> {
  const home = mkdtempSync(join(tmpdir(), 'stx-cli-home-'));
  const env: NodeJS.ProcessEnv = { ...process.env, HOME: home };
  for (const name of Object.keys(env)) {
    if (name.startsWith('OS_') || name === 'PYTHONHOME' || name === 'PYTHONPATH') delete env[name];
  }
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.once('error', reject);
    child.once('close', (code) => {
      rmSync(home, { recursive: true, force: true });
      resolve({ code, stdout, stderr });
    });
  });
}

/** The rows of glanceclient's `| Property | Value |` table. */
function glanceTable(output: string): Record<string, string> {
  const rows: Record<string, string> = {};
  for (const line of output.split('\n')) {
    const match = /^\| (\S+)\s+\| (.*?)\s*\|$/.exec(line);
    if (match && match[1] !== 'Property') rows[match[1]] = match[2];
  }
  return rows;
}

describe('the raw cache through the glance and openstack CLIs', () => {
  let glance: RunningGlance;
  let proxy: RunningProxy;
  let worker: RunningProxy | undefined;
  let dir: string;
  let rawDir: string;
  let configFile: string;
  let qcow2File: string;
  let client: HttpClient;
  let glanceCreated: CliResult;
  let openstackCreated: CliResult;
  let glanceImageId: string;
  let openstackImageId: string;

  const glanceCli = (...args: string[]) => runCli('/usr/bin/glance', ['--os-image-url', proxy.url, '--os-auth-token', 'dummy', ...args]);
  const openstackCli = (...args: string[]) =>
    runCli('/usr/bin/openstack', ['--os-auth-type', 'admin_token', '--os-endpoint', `${proxy.url}/v2`, '--os-token', 'dummy', ...args]);
  const copyPath = (id: string) => join(rawDir, `${id}.raw`);
  const waitForCached = async (id: string, timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const image = (await client.get(`/v2/images/${id}`)).json();
      if (image.cache_raw_status === 'Cached') return image;
      if (image.cache_raw_status === 'Error' || Date.now() > deadline) throw new Error(`image ${id} is not Cached: ${JSON.stringify(image)}`);
      await sleep(200);
    }
  };

  beforeAll(async () => {
    glance = await startGlance();
    dir = mkdtempSync(join(tmpdir(), 'stx-rawcache-cli-'));
    rawDir = join(dir, 'raw');
    configFile = join(dir, 'config.json');
    writeFileSync(
      configFile,
      JSON.stringify({
        upstream: glance.url,
        rawcache: {
          enabled: true,
          queue: { backend: 'sqlite', sqlite_path: join(dir, 'queue.sqlite'), lease_seconds: 5 },
          target: { kind: 'file', file_dir: rawDir },
          worker: { concurrency: 2, work_dir: join(dir, 'work'), max_attempts: 2, retry_base_seconds: 0.5, retry_max_seconds: 2, reconcile_interval_seconds: 0 },
        },
      }),
    );
    proxy = await startProxy({ upstream: glance.url, config: configFile });
    client = new HttpClient(proxy.url);
    qcow2File = makeQcow2(dir, 'cli.qcow2', 24, 3);

    // Both images are created before any worker runs, so what the CLIs print at create is the queued state.
    glanceCreated = await glanceCli(
      'image-create',
      '--name', 'glance-cli-cached',
      '--disk-format', 'qcow2',
      '--container-format', 'bare',
      '--property', 'cache_raw=True',
      '--file', qcow2File,
    );
    openstackCreated = await openstackCli(
      'image', 'create',
      '--disk-format', 'qcow2',
      '--container-format', 'bare',
      '--property', 'cache_raw=True',
      '--file', qcow2File,
      '-f', 'json',
      'openstack-cli-cached',
    );
    glanceImageId = glanceTable(glanceCreated.stdout).id;
    openstackImageId = openstackCreated.code === 0 ? JSON.parse(openstackCreated.stdout).id : '';
  }, 120_000);

  afterAll(async () => {
    client?.destroy();
    await worker?.stop();
    await proxy?.stop();
    await glance?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it('glance image-create --property cache_raw=True --file prints the image Queued for its raw copy', () => {
    expect(glanceCreated).toMatchObject({ code: 0, stderr: '' });
    expect(glanceTable(glanceCreated.stdout)).toMatchObject({ status: 'active', cache_raw: 'True', cache_raw_status: 'Queued', cache_raw_size: '-', store: 'file' });
    expect(glanceTable(glanceCreated.stdout).cache_raw_url).toBeUndefined();
  });

  it('openstack image create --property cache_raw=True --file stores cache_raw True', () => {
    expect(openstackCreated).toMatchObject({ code: 0, stderr: '' });
    // openstacksdk prints the image as POST answered it, before the upload (no GET after it).
    expect(JSON.parse(openstackCreated.stdout)).toMatchObject({ name: 'openstack-cli-cached', properties: expect.objectContaining({ cache_raw: 'True' }) });
  });

  describe('once a worker has run', () => {
    beforeAll(async () => {
      worker = await startWorker({ config: configFile, opsPort: await freePort() });
      await waitForCached(glanceImageId);
      await waitForCached(openstackImageId);
    }, 90_000);

    it('glance image-show prints cache_raw_status Cached, the cache_raw_url of the RAW copy and its size', async () => {
      const shown = await glanceCli('image-show', glanceImageId);
      expect(shown).toMatchObject({ code: 0, stderr: '' });
      const rows = glanceTable(shown.stdout);
      expect(rows).toMatchObject({
        cache_raw: 'True',
        cache_raw_status: 'Cached',
        cache_raw_url: `file://${copyPath(glanceImageId)}`,
        cache_raw_size: String(24 * 1024 * 1024),
        store: 'file',
      });
      expect(rows.cache_raw_error).toBeUndefined();
      expect(statSync(copyPath(glanceImageId)).size).toBe(24 * 1024 * 1024);
    });

    it('openstack image show -f json prints cache_raw_status Cached and the cache_raw_url among the properties', async () => {
      const shown = await openstackCli('image', 'show', '-f', 'json', openstackImageId);
      expect(shown).toMatchObject({ code: 0, stderr: '' });
      const image = JSON.parse(shown.stdout);
      expect(image).toMatchObject({ id: openstackImageId, status: 'active' });
      expect(image.properties).toMatchObject({
        cache_raw: 'True',
        cache_raw_status: 'Cached',
        cache_raw_url: `file://${copyPath(openstackImageId)}`,
        cache_raw_size: String(24 * 1024 * 1024),
        store: 'file',
      });
    });

    it('glance image-list --property-filter and openstack image list --property find the images by cache_raw_status', async () => {
      const listed = await glanceCli('image-list', '--property-filter', 'cache_raw_status=Cached');
      expect(listed).toMatchObject({ code: 0, stderr: '' });
      expect(listed.stdout).toContain(glanceImageId);
      expect(listed.stdout).toContain(openstackImageId);
      const osc = await openstackCli('image', 'list', '--property', 'cache_raw_status=Cached', '-f', 'json');
      expect(osc).toMatchObject({ code: 0, stderr: '' });
      expect(JSON.parse(osc.stdout).map((i: { ID: string }) => i.ID).sort()).toEqual([glanceImageId, openstackImageId].sort());
    });

    it('made both copies from the one qcow2 both CLIs uploaded, byte for byte what qemu-img convert -O raw makes', async () => {
      const expected = await rawSha256Of(dir, qcow2File);
      expect(await sha256File(copyPath(glanceImageId))).toBe(expected);
      expect(await sha256File(copyPath(openstackImageId))).toBe(expected);
    });
  });
});
