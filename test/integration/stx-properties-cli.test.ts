import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient } from '../harness/http';
import * as cli from '../harness/openstack-cli';
import { glanceTable } from '../harness/openstack-cli';
import { startProxy, type RunningProxy } from '../harness/proxy';
import { countDirect, runTag, showDirect, type Image } from './support/stx-images';

/**
 * The StarlingX properties as users meet them: Debian's python-glanceclient (`glance`) and
 * python-openstackclient (`openstack`), through the proxy to a real Glance that ignores the dummy
 * token (fake identity). What Glance stores is read from Glance directly.
 */

const TIMEOUT_900 = 'hw_wrs_live_migration_timeout must be a number between 120 and 800 or 0, value: 900';

describe('the glance and openstack CLIs through the proxy', () => {
  let glance: RunningGlance;
  let proxy: RunningProxy;
  let direct: HttpClient;
  let workDir: string;
  let qcow2File: string;
  const run = runTag();

  const glanceCli = (...args: string[]) => cli.glanceCli(proxy.url, ...args);
  const openstackCli = (...args: string[]) => cli.openstackCli(proxy.url, ...args);

  beforeAll(async () => {
    workDir = mkdtempSync(join(tmpdir(), 'stx-cli-'));
    qcow2File = join(workDir, 'x.qcow2');
    execFileSync('qemu-img', ['create', '-f', 'qcow2', qcow2File, '16M'], { stdio: 'ignore' });
    glance = await startGlance();
    proxy = await startProxy({ upstream: glance.url });
    direct = new HttpClient(glance.url);
  }, 90_000);

  afterAll(async () => {
    direct?.destroy();
    await proxy?.stop();
    await glance?.stop();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  describe('glance (python-glanceclient)', () => {
    let id: string;
    let createdInGlance: Image;

    beforeAll(async () => {
      const created = await glanceCli(
        'image-create',
        '--name', 'x',
        '--disk-format', 'qcow2',
        '--container-format', 'bare',
        '--property', 'cache_raw=true',
        '--property', 'hw_wrs_live_migration_timeout=400',
        '--property', `stx_test_run=${run}`,
        '--file', qcow2File,
      );
      expect(created).toMatchObject({ code: 0, stderr: '' });
      id = glanceTable(created.stdout).id;
      createdInGlance = await showDirect(direct, id);
    });

    it('image-create --property cache_raw=true stores "True" and "400" in Glance, with the data', () => {
      expect(createdInGlance).toMatchObject({ cache_raw: 'True', hw_wrs_live_migration_timeout: '400', status: 'active', stores: 'fs' });
    });

    it('image-update --property hw_wrs_live_migration_timeout=900 fails with StarlingX\'s message and changes nothing', async () => {
      const updated = await glanceCli('image-update', id, '--property', 'hw_wrs_live_migration_timeout=900');
      expect(updated.code).not.toBe(0);
      expect(updated.stderr.trim().split('\n')).toContain(`HTTP 400 Bad Request: ${TIMEOUT_900}`);
      expect(await showDirect(direct, id)).toEqual(createdInGlance);
    });

    it('image-update --property cache_raw=maybe fails with StarlingX\'s message, not a client-side schema error', async () => {
      const updated = await glanceCli('image-update', id, '--property', 'cache_raw=maybe');
      expect(updated.code).not.toBe(0);
      expect(updated.stderr.trim()).toBe('HTTP 400 Bad Request: cache_raw must be True or False, value: maybe');
      expect(await showDirect(direct, id)).toEqual(createdInGlance);
    });

    it('image-update of a read-only field fails as for Glance\'s own read-only attributes and changes nothing', async () => {
      const updated = await glanceCli('image-update', id, '--property', 'cache_raw_status=Cached');
      expect(updated.code).not.toBe(0);
      // glanceclient prints the HTML error body's text without unescaping it, for Glance's own 403s too.
      expect(updated.stderr.trim()).toBe('HTTP 403 Forbidden: Attribute &#x27;cache_raw_status&#x27; is read-only.');
      expect(await showDirect(direct, id)).toEqual(createdInGlance);
    });

    it('image-show prints store file', async () => {
      const shown = await glanceCli('image-show', id);
      expect(shown.code).toBe(0);
      expect(glanceTable(shown.stdout)).toMatchObject({ store: 'file', cache_raw: 'True', hw_wrs_live_migration_timeout: '400' });
    });

    it('image-update with valid values in other spellings stores their canonical form', async () => {
      const updated = await glanceCli('image-update', id, '--property', 'sw_wrs_auto_recovery=FALSE', '--property', 'hw_wrs_live_migration_max_downtime=0500');
      expect(updated.code).toBe(0);
      expect(glanceTable(updated.stdout)).toMatchObject({ sw_wrs_auto_recovery: 'False', hw_wrs_live_migration_max_downtime: '500', store: 'file' });
      expect(await showDirect(direct, id)).toMatchObject({ sw_wrs_auto_recovery: 'False', hw_wrs_live_migration_max_downtime: '500' });
    });

    it('image-create with an invalid value fails with StarlingX\'s message and creates no image', async () => {
      const before = await countDirect(direct, run);
      const created = await glanceCli(
        'image-create',
        '--name', 'refused',
        '--disk-format', 'qcow2',
        '--container-format', 'bare',
        '--property', 'hw_wrs_live_migration_timeout=900',
        '--property', `stx_test_run=${run}`,
      );
      expect(created.code).not.toBe(0);
      expect(created.stderr.trim()).toBe(`HTTP 400 Bad Request: ${TIMEOUT_900}`);
      expect(await countDirect(direct, run)).toBe(before);
    });
  });

  describe('openstack (python-openstackclient)', () => {
    let id: string;
    let createdInGlance: Image;

    beforeAll(async () => {
      const created = await openstackCli(
        'image', 'create',
        '--property', 'cache_raw=True',
        '--property', 'hw_wrs_live_migration_timeout=0400',
        '--property', `stx_test_run=${run}`,
        '--disk-format', 'qcow2',
        '--container-format', 'bare',
        '--file', qcow2File,
        '-f', 'json',
        'osc-x',
      );
      expect(created).toMatchObject({ code: 0, stderr: '' });
      id = JSON.parse(created.stdout).id;
      createdInGlance = await showDirect(direct, id);
    });

    it('image create --property cache_raw=True --file stores "True" (and a timeout of 0400 as "400") in Glance', () => {
      expect(createdInGlance).toMatchObject({ cache_raw: 'True', hw_wrs_live_migration_timeout: '400', status: 'active', stores: 'fs' });
    });

    it('image set --property hw_wrs_live_migration_timeout=900 fails with a 400 carrying StarlingX\'s message and changes nothing', async () => {
      const set = await openstackCli('image', 'set', '--property', 'hw_wrs_live_migration_timeout=900', id);
      expect(set.code).toBe(1);
      // openstacksdk sends this PATCH with an empty Accept header; the proxy answers its own errors to such
      // a request in JSON, which openstacksdk reads (Glance's plain text would show only "Bad Request").
      expect(set.stderr.trim()).toBe(`BadRequestException: 400: Client Error for url: ${proxy.url}/v2/images/${id}, ${TIMEOUT_900}`);
      expect(await showDirect(direct, id)).toEqual(createdInGlance);
    });

    it('image show -f json shows store file', async () => {
      const shown = await openstackCli('image', 'show', '-f', 'json', id);
      expect(shown.code).toBe(0);
      expect(JSON.parse(shown.stdout).properties).toMatchObject({ store: 'file', cache_raw: 'True', hw_wrs_live_migration_timeout: '400' });
    });
  });

  /** One refused value per extension property, with the message StarlingX gives for it. */
  const REFUSED: ReadonlyArray<[property: string, value: string, message: string]> = [
    ['cache_raw', 'maybe', 'cache_raw must be True or False, value: maybe'],
    ['sw_wrs_auto_recovery', 'sometimes', 'sw_wrs_auto_recovery must be True or False, value: sometimes'],
    ['hw_wrs_live_migration_timeout', '900', TIMEOUT_900],
    ['hw_wrs_live_migration_max_downtime', '99', 'hw_wrs_live_migration_max_downtime must be a number greater than or equal to 100, value: 99'],
  ];

  describe.each(REFUSED)('every CLI shows StarlingX\'s message for %s=%s', (property, value, message) => {
    let id: string;
    let before: Image;

    beforeAll(async () => {
      const created = await openstackCli('image', 'create', '--disk-format', 'raw', '--container-format', 'bare', '--property', `stx_test_run=${run}`, '-f', 'json', `refusals-${property}`);
      expect(created).toMatchObject({ code: 0, stderr: '' });
      id = JSON.parse(created.stdout).id;
      before = await showDirect(direct, id);
    });

    it('openstack image create: the message, and no image', async () => {
      const count = await countDirect(direct, run);
      const created = await openstackCli('image', 'create', '--disk-format', 'raw', '--container-format', 'bare', '--property', `stx_test_run=${run}`, '--property', `${property}=${value}`, 'refused');
      expect(created.code).toBe(1);
      expect(created.stderr).toContain(message);
      expect(await countDirect(direct, run)).toBe(count);
    });

    it('openstack image set: the message, and the image unchanged', async () => {
      const set = await openstackCli('image', 'set', '--property', `${property}=${value}`, id);
      expect(set.code).toBe(1);
      expect(set.stderr).toContain(message);
      expect(await showDirect(direct, id)).toEqual(before);
    });

    it('glance image-create: the message, and no image', async () => {
      const count = await countDirect(direct, run);
      const created = await glanceCli('image-create', '--name', 'refused', '--disk-format', 'raw', '--container-format', 'bare', '--property', `stx_test_run=${run}`, '--property', `${property}=${value}`);
      expect(created.code).not.toBe(0);
      expect(created.stderr.trim()).toBe(`HTTP 400 Bad Request: ${message}`);
      expect(await countDirect(direct, run)).toBe(count);
    });

    it('glance image-update: the message, and the image unchanged', async () => {
      const updated = await glanceCli('image-update', id, '--property', `${property}=${value}`);
      expect(updated.code).not.toBe(0);
      expect(updated.stderr.trim()).toBe(`HTTP 400 Bad Request: ${message}`);
      expect(await showDirect(direct, id)).toEqual(before);
    });
  });
});
