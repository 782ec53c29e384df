import type { RunningGlance } from '../harness/glance';
import { HttpClient, type HttpResponse } from '../harness/http';
import { PROPERTY_PROTECTIONS_FILE, startKeystoneCloud, type KeystoneCloud, type KeystoneUser, type RunningKeystone } from '../harness/keystone';
import { PATCH_V21, runTag, type Image } from './support/stx-images';

/**
 * config/glance-property-protections.conf installed in a real keystone-mode Glance: a user who goes
 * straight to Glance, around the proxy, cannot forge the raw-cache fields or `store`; a service
 * identity can write them; everyone reads them; every other property stays as open as without the file.
 */

const RAW_CACHE_FIELDS = {
  cache_raw_status: 'Cached',
  cache_raw_url: 'rbd://ceph-fsid/images/someone-elses-image_raw/snap',
  cache_raw_size: '41126400',
  cache_raw_error: 'forged',
} as const;
const PROTECTED = [...Object.keys(RAW_CACHE_FIELDS), 'store'];

/** What a member may still set: the StarlingX user-writable properties and ordinary ones. */
const WRITABLE = {
  cache_raw: 'True',
  sw_wrs_auto_recovery: 'True',
  hw_wrs_live_migration_timeout: '400',
  hw_wrs_live_migration_max_downtime: '500',
  os_distro: 'debian',
  site_note: 'kept as is',
  // Names that merely contain a protected one are not protected: the rules are anchored.
  cache_raw_status_note: 'not protected',
  my_store: 'not protected',
} as const;

type Op = { op: 'add' | 'replace' | 'remove'; path: string; value?: string };

describe('Glance property protections for the raw-cache fields (straight to a keystone-mode Glance)', () => {
  let cloud: KeystoneCloud;
  let keystone: RunningKeystone;
  let glance: RunningGlance;
  let client: HttpClient;
  let member: KeystoneUser;
  /** A member of the same project that also has the service role. */
  let serviceMember: KeystoneUser;
  /** The raw-cache worker's identity as deployed: admin and service in project service. */
  let worker: KeystoneUser;
  const tokens = new Map<KeystoneUser, string>();
  const run = runTag();

  const token = async (user: KeystoneUser): Promise<string> => {
    if (!tokens.has(user)) tokens.set(user, await keystone.issueToken(user));
    return tokens.get(user)!;
  };
  const create = async (user: KeystoneUser, properties: Record<string, string> = {}): Promise<HttpResponse> =>
    client.sendJson(
      'POST',
      '/v2/images',
      { name: 'protections', disk_format: 'qcow2', container_format: 'bare', stx_test_run: run, ...properties },
      { 'X-Auth-Token': await token(user), Accept: 'application/json' },
    );
  const createImage = async (user: KeystoneUser, properties: Record<string, string> = {}): Promise<Image> => {
    const res = await create(user, properties);
    if (res.status !== 201) throw new Error(`create answered ${res.status}: ${res.text()}`);
    return res.json();
  };
  const patch = async (user: KeystoneUser, id: string, ops: Op[]): Promise<HttpResponse> =>
    client.request({
      method: 'PATCH',
      path: `/v2/images/${id}`,
      headers: { 'X-Auth-Token': await token(user), 'Content-Type': PATCH_V21, Accept: 'application/json' },
      body: JSON.stringify(ops),
    });
  const show = async (user: KeystoneUser, id: string): Promise<Image> => {
    const res = await client.get(`/v2/images/${id}`, { 'X-Auth-Token': await token(user), Accept: 'application/json' });
    if (res.status !== 200) throw new Error(`show answered ${res.status}: ${res.text()}`);
    return res.json();
  };
  const count = async (user: KeystoneUser): Promise<number> => {
    const res = await client.get(`/v2/images?stx_test_run=${run}&limit=1000`, { 'X-Auth-Token': await token(user), Accept: 'application/json' });
    return (res.json().images as unknown[]).length;
  };
  const adds = (properties: Record<string, string>): Op[] => Object.entries(properties).map(([name, value]) => ({ op: 'add', path: `/${name}`, value }));
  /** Glance's 403 for a protected property, as its JSON error body carries it. */
  const expectReserved = (res: HttpResponse, property: string): void => {
    expect(res.status).toBe(403);
    expect(res.json()).toMatchObject({ code: '403 Forbidden', title: 'Forbidden' });
    expect(res.json().message).toContain(`Attribute '${property}' is reserved.`);
  };

  beforeAll(async () => {
    cloud = await startKeystoneCloud({ glanceConf: { propertyProtections: PROPERTY_PROTECTIONS_FILE }, proxy: false });
    ({ keystone, glance, worker } = cloud);
    client = new HttpClient(glance.url);
    member = await keystone.createUser({ name: 'member', project: 'demo', roles: ['member'] });
    serviceMember = await keystone.createUser({ name: 'service-member', project: 'demo', roles: ['member', 'service'] });
  }, 120_000);

  afterAll(async () => {
    client?.destroy();
    await cloud?.stop();
  });

  describe('a member going straight to Glance', () => {
    it.each(PROTECTED)('cannot create an image with %s (403 reserved), and none is created', async (property) => {
      const before = await count(member);
      expectReserved(await create(member, { [property]: 'forged' }), property);
      expect(await count(member)).toBe(before);
    });

    it.each(PROTECTED)('cannot add %s to its own image (403 reserved), which stays unchanged', async (property) => {
      const image = await createImage(member);
      expectReserved(await patch(member, image.id, [{ op: 'add', path: `/${property}`, value: 'forged' }]), property);
      expect(await show(member, image.id)).toEqual(image);
    });

    it('cannot change or remove what the service identity wrote, and reads it', async () => {
      const image = await createImage(member, { cache_raw: 'True' });
      const written = await patch(worker, image.id, adds({ ...RAW_CACHE_FIELDS, store: 'rbd' }));
      expect(written.status).toBe(200);
      const stored = await show(member, image.id);
      expect(stored).toMatchObject({ ...RAW_CACHE_FIELDS, store: 'rbd', cache_raw: 'True' });

      for (const property of PROTECTED) {
        expectReserved(await patch(member, image.id, [{ op: 'replace', path: `/${property}`, value: 'forged' }]), property);
        expectReserved(await patch(member, image.id, [{ op: 'add', path: `/${property}`, value: 'forged' }]), property);
        expectReserved(await patch(member, image.id, [{ op: 'remove', path: `/${property}` }]), property);
      }
      expect(await show(member, image.id)).toEqual(stored);
    });

    it('still creates images with, and sets, changes and removes, ordinary and StarlingX user-writable properties', async () => {
      const image = await createImage(member, WRITABLE);
      expect(image).toMatchObject(WRITABLE);

      const changed = await patch(member, image.id, [
        { op: 'replace', path: '/cache_raw', value: 'False' },
        { op: 'add', path: '/hw_wrs_live_migration_timeout', value: '800' },
        { op: 'remove', path: '/site_note' },
        { op: 'remove', path: '/my_store' },
        { op: 'add', path: '/architecture', value: 'x86_64' },
      ]);
      expect(changed.status).toBe(200);
      expect(changed.json()).toMatchObject({ cache_raw: 'False', hw_wrs_live_migration_timeout: '800', architecture: 'x86_64' });
      expect(changed.json()).not.toHaveProperty('site_note');
      expect(changed.json()).not.toHaveProperty('my_store');
    });
  });

  describe('a service identity', () => {
    it('with the service role (and member of the project) writes, changes and removes every raw-cache field', async () => {
      const image = await createImage(member, { cache_raw: 'True' });
      const queued = await patch(serviceMember, image.id, adds({ cache_raw_status: 'Queued', cache_raw_size: '-', cache_raw_error: 'transient' }));
      expect(queued.status).toBe(200);

      const cached = await patch(serviceMember, image.id, [
        { op: 'replace', path: '/cache_raw_status', value: 'Cached' },
        { op: 'replace', path: '/cache_raw_size', value: RAW_CACHE_FIELDS.cache_raw_size },
        { op: 'add', path: '/cache_raw_url', value: RAW_CACHE_FIELDS.cache_raw_url },
        { op: 'remove', path: '/cache_raw_error' },
      ]);
      expect(cached.status).toBe(200);
      const shown = await show(member, image.id);
      expect(shown).toMatchObject({ cache_raw_status: 'Cached', cache_raw_size: RAW_CACHE_FIELDS.cache_raw_size, cache_raw_url: RAW_CACHE_FIELDS.cache_raw_url });
      expect(shown).not.toHaveProperty('cache_raw_error');
    });

    it('as the worker is deployed (admin and service in project service) writes them on a member\'s image', async () => {
      const image = await createImage(member, { cache_raw: 'True' });
      const res = await patch(worker, image.id, adds(RAW_CACHE_FIELDS));
      expect(res.status).toBe(200);
      expect(res.json()).toMatchObject(RAW_CACHE_FIELDS);
    });

    it('the cloud admin (admin role) may write them too, to repair a stale status by hand', async () => {
      const image = await createImage(member, { cache_raw: 'True' });
      const res = await patch(keystone.admin, image.id, adds({ cache_raw_status: 'Error', cache_raw_error: 'repaired by hand' }));
      expect(res.status).toBe(200);
      expect(await show(member, image.id)).toMatchObject({ cache_raw_status: 'Error', cache_raw_error: 'repaired by hand' });
    });
  });

  it('a reader of the project reads the raw-cache fields too', async () => {
    const reader = await keystone.createUser({ name: 'reader', project: 'demo', roles: ['reader'] });
    const image = await createImage(member, { cache_raw: 'True' });
    expect((await patch(worker, image.id, adds(RAW_CACHE_FIELDS))).status).toBe(200);
    expect(await show(reader, image.id)).toMatchObject({ ...RAW_CACHE_FIELDS, cache_raw: 'True' });
  });
});
