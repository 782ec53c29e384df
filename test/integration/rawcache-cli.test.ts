import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient } from '../harness/http';
import { makeQcow2, rawSha256Of, sha256File } from '../harness/images';
import { freePort } from '../harness/ports';
import * as cli from '../harness/openstack-cli';
import { glanceTable, type CliResult } from '../harness/openstack-cli';
import { imageSteps, writeRawCacheConfig } from '../harness/rawcache';
import { startProxy, startWorker, type RunningProxy } from '../harness/proxy';

/**
 * The raw cache as an operator meets it with Debian's `glance` (python-glanceclient 4.1) and
 * `openstack` (python-openstackclient 6.0) CLIs, through the proxy to a real Glance (file store,
 * dummy token), with the SQLite queue and a `stx-glance-proxy worker` making the copies.
 */

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

  const glanceCli = (...args: string[]) => cli.glanceCli(proxy.url, ...args);
  const openstackCli = (...args: string[]) => cli.openstackCli(proxy.url, ...args);
  const copyPath = (id: string) => join(rawDir, `${id}.raw`);
  const waitForCached = (id: string, timeoutMs = 60_000) => imageSteps(client, () => worker?.logs().slice(-2000) ?? '').waitForImage(id, (i) => i.cache_raw_status === 'Cached', timeoutMs);

  beforeAll(async () => {
    glance = await startGlance();
    dir = mkdtempSync(join(tmpdir(), 'stx-rawcache-cli-'));
    rawDir = join(dir, 'raw');
    configFile = writeRawCacheConfig(dir, { upstream: glance.url });
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
