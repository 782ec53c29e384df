import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { propertyRules } from '../../src/images/rules';
import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient, type HttpResponse } from '../harness/http';
import { startProxy, type RunningProxy } from '../harness/proxy';
import { PATCH_V21, createImage, runTag, sendPatch, setDirect, showDirect, uploadData, type Image } from './support/stx-images';
import { SPEC_CREATE_REQUEST, SPEC_CREATE_RESPONSE, SPEC_ID, SPEC_LIST_FIRST, SPEC_LIST_PLAIN_IMAGE, SPEC_MODIFY_REQUEST, SPEC_MODIFY_RESPONSE, SPEC_SHOW_RESPONSE } from '../fixtures/spec-examples';

/**
 * The StarlingX extension properties end to end, through the proxy to a real Glance (file store):
 * the examples of the StarlingX API reference (shared/spec/image-api-v2-stx-extensions.rst), the
 * normalized values Glance ends up storing, and the image schemas.
 */


const RAW_CACHE_FIELDS = ['cache_raw_status', 'cache_raw_url', 'cache_raw_size', 'cache_raw_error'];
/** Different on every Glance: ids (compared through self and file), dates, owner, and hosts (direct_url). */
const UNCOMPARABLE = ['id', 'created_at', 'updated_at', 'owner', 'direct_url'];
/** Follow from the bytes uploaded (here a 16 MiB qcow2, which Glance 25 also measures: virtual_size). */
const DATA_FIELDS = ['size', 'checksum', 'virtual_size'];

/**
 * The fields of a spec example this Glance must reproduce: its id replaced by ours, `store` as the file
 * store this Glance uses, and without the raw-cache fields, which no worker writes yet.
 */
function specFields(example: Record<string, unknown>, specId: string, id: string): Record<string, unknown> {
  const skipped = new Set([...UNCOMPARABLE, ...DATA_FIELDS, ...RAW_CACHE_FIELDS]);
  const fields = Object.entries(example)
    .filter(([key]) => !skipped.has(key))
    .map(([key, value]) => [key, typeof value === 'string' ? value.split(specId).join(id) : value]);
  const expected = Object.fromEntries(fields);
  if (expected.store !== undefined) expected.store = 'file';
  return expected;
}

describe('StarlingX extension properties through the proxy to a real Glance', () => {
  let glance: RunningGlance;
  let proxy: RunningProxy;
  let client: HttpClient;
  let direct: HttpClient;
  let workDir: string;
  let qcow2: Buffer;
  const run = runTag();

  beforeAll(async () => {
    workDir = mkdtempSync(join(tmpdir(), 'stx-properties-'));
    execFileSync('qemu-img', ['create', '-f', 'qcow2', join(workDir, 'tiny.qcow2'), '16M'], { stdio: 'ignore' });
    qcow2 = readFileSync(join(workDir, 'tiny.qcow2'));
    glance = await startGlance();
    proxy = await startProxy({ upstream: glance.url });
    client = new HttpClient(proxy.url);
    direct = new HttpClient(glance.url);
  }, 90_000);

  afterAll(async () => {
    client?.destroy();
    direct?.destroy();
    await proxy?.stop();
    await glance?.stop();
    if (workDir) rmSync(workDir, { recursive: true, force: true });
  });

  describe('the API reference examples', () => {
    let created: Image;
    let id: string;

    /** What the data uploaded makes of the data fields and direct_url on this Glance. */
    const dataFields = () => ({
      size: qcow2.length,
      checksum: createHash('md5').update(qcow2).digest('hex'),
      virtual_size: 16 * 1024 * 1024,
      direct_url: `file://${glance.storeDir}/${id}`,
    });

    beforeAll(async () => {
      // The spec's request, as it is: `cirros` is found by id, not by a run tag.
      const res = await client.sendJson('POST', '/v2/images', SPEC_CREATE_REQUEST, { Accept: 'application/json' });
      // Glance answers a create with 201 Created (the API reference's "200" is a slip every client ignores).
      expect(res.status).toBe(201);
      created = res.json();
      id = created.id;
    });

    it("creates the image with the spec's values and no store, as the create example shows", () => {
      expect(created).toMatchObject(specFields(SPEC_CREATE_RESPONSE, SPEC_ID, id));
      expect(created).not.toHaveProperty('store');
      for (const field of RAW_CACHE_FIELDS) expect(created).not.toHaveProperty(field);
    });

    it('stores the create values in Glance itself, as the spec sent them', async () => {
      expect(await showDirect(direct, id)).toMatchObject(SPEC_CREATE_REQUEST);
    });

    describe('after the data is uploaded', () => {
      beforeAll(async () => {
        await uploadData(client, id, qcow2);
      });

      it("shows the spec's fields, with store file, the store this Glance keeps the data in", async () => {
        const res = await client.get(`/v2/images/${id}`, { Accept: 'application/json' });
        expect(res.status).toBe(200);
        const shown = res.json();
        expect(shown).toMatchObject({ ...specFields(SPEC_SHOW_RESPONSE, SPEC_ID, id), ...dataFields() });
        expect(shown.store).toBe('file');
      });

      it('does not invent the raw-cache fields, which only a raw-cache worker may write', async () => {
        const shown = (await client.get(`/v2/images/${id}`)).json();
        for (const field of RAW_CACHE_FIELDS) expect(shown).not.toHaveProperty(field);
      });

      it("lists the image with the spec's fields, and an image without extension properties with only store", async () => {
        const plain = await createImage(client, { name: 'sample-guest', disk_format: 'raw', container_format: 'bare', visibility: 'public' });
        const plainData = Buffer.from('sample guest bytes\n');
        await uploadData(client, plain.id, plainData);

        const res = await client.get(SPEC_LIST_FIRST, { Accept: 'application/json' });
        expect(res.status).toBe(200);
        const page = res.json();
        expect(page).toMatchObject({ schema: '/v2/schemas/images', first: SPEC_LIST_FIRST });
        const listed = (page.images as Image[]).find((image) => image.id === id);
        expect(listed).toMatchObject({ ...specFields(SPEC_SHOW_RESPONSE, SPEC_ID, id), ...dataFields() });
        expect(listed).toEqual((await client.get(`/v2/images/${id}`)).json());

        const sample = (page.images as Image[]).find((image) => image.id === plain.id);
        expect(sample).toMatchObject({ ...specFields(SPEC_LIST_PLAIN_IMAGE, 'ac22a842-27c6-40a5-8475-f15f12e94202', plain.id), size: plainData.length });
        for (const rule of propertyRules) {
          if (rule.name !== 'store') expect(sample).not.toHaveProperty(rule.name);
        }
      });

      describe.each([
        ['PUT', PATCH_V21],
        ['PUT', 'application/json'],
        ['PATCH', PATCH_V21],
      ])("the spec's modify request as %s with Content-Type %s", (method, contentType) => {
        let res: HttpResponse;

        beforeAll(async () => {
          // Back to the values the spec modifies, straight on Glance.
          await setDirect(direct, id, { hw_wrs_live_migration_timeout: '400', sw_wrs_auto_recovery: 'False', hw_wrs_live_migration_max_downtime: '350' });
          res = await sendPatch(client, id, SPEC_MODIFY_REQUEST, { method, contentType, headers: { Accept: 'application/json' } });
        });

        it("answers 200 with the spec's modified image", () => {
          expect(res.status).toBe(200);
          expect(res.json()).toMatchObject({ ...specFields(SPEC_MODIFY_RESPONSE, SPEC_ID, id), ...dataFields() });
        });

        it('leaves the modified values in Glance itself', async () => {
          expect(await showDirect(direct, id)).toMatchObject({
            hw_wrs_live_migration_timeout: '500',
            sw_wrs_auto_recovery: 'True',
            hw_wrs_live_migration_max_downtime: '300',
            cache_raw: 'True',
          });
        });
      });
    });
  });

  describe('values reach Glance in their stored form', () => {
    const NORMALIZED: ReadonlyArray<readonly [string, unknown, string]> = [
      ['cache_raw', true, 'True'],
      ['cache_raw', 'true', 'True'],
      ['cache_raw', 'TRUE', 'True'],
      ['cache_raw', false, 'False'],
      ['sw_wrs_auto_recovery', 'fAlSe', 'False'],
      ['hw_wrs_live_migration_timeout', 400, '400'],
      ['hw_wrs_live_migration_timeout', ' +400 ', '400'],
      ['hw_wrs_live_migration_timeout', '0', '0'],
      ['hw_wrs_live_migration_max_downtime', '0350', '350'],
      ['hw_wrs_live_migration_max_downtime', 100, '100'],
    ];
    const shown = (value: unknown) => JSON.stringify(value);

    it.each(NORMALIZED.map(([name, value, stored]) => [name, shown(value), stored, value] as const))(
      'a create with %s %s stores %p in Glance',
      async (name, _shown, stored, value) => {
        const image = await createImage(client, { name: `normalized-${name}`, stx_test_run: run, [name]: value });
        expect(image[name]).toBe(stored);
        expect((await showDirect(direct, image.id))[name]).toBe(stored);
      },
    );

    describe.each([
      ['PATCH add', 'PATCH', PATCH_V21, 'add'],
      ['PATCH replace', 'PATCH', PATCH_V21, 'replace'],
      ['PUT (JSON-patch media type)', 'PUT', PATCH_V21, 'replace'],
      ['PUT (application/json)', 'PUT', 'application/json', 'add'],
    ])('%s', (_label, method, contentType, op) => {
      let target: Image;

      beforeAll(async () => {
        target = await createImage(client, {
          name: 'normalized-by-patch',
          stx_test_run: run,
          cache_raw: 'False',
          sw_wrs_auto_recovery: 'True',
          hw_wrs_live_migration_timeout: '800',
          hw_wrs_live_migration_max_downtime: '500',
        });
      });

      it.each(NORMALIZED.map(([name, value, stored]) => [name, shown(value), stored, value] as const))(
        'with %s %s stores %p in Glance',
        async (name, _shown, stored, value) => {
          const res = await sendPatch(client, target.id, [{ op, path: `/${name}`, value }], { method, contentType, headers: { Accept: 'application/json' } });
          expect(res.status).toBe(200);
          expect(res.json()[name]).toBe(stored);
          expect((await showDirect(direct, target.id))[name]).toBe(stored);
        },
      );
    });
  });

  describe('the image schemas', () => {
    let glanceImage: Record<string, any>;
    let proxiedImage: Record<string, any>;
    const published = propertyRules.filter((rule) => rule.inImageSchema);

    beforeAll(async () => {
      glanceImage = (await direct.get('/v2/schemas/image')).json();
      const res = await client.get('/v2/schemas/image');
      expect(res.status).toBe(200);
      proxiedImage = res.json();
    });

    it("GET /v2/schemas/image keeps everything Glance's own schema has", () => {
      const { properties: glanceProperties, ...glanceRest } = glanceImage;
      const { properties: proxiedProperties, ...proxiedRest } = proxiedImage;
      expect(proxiedRest).toEqual(glanceRest);
      for (const [name, declaration] of Object.entries(glanceProperties as Record<string, unknown>)) {
        expect([name, proxiedProperties[name]]).toEqual([name, declaration]);
      }
    });

    it('GET /v2/schemas/image adds exactly the properties of the rules table, after Glance\'s own', () => {
      expect(Object.keys(proxiedImage.properties)).toEqual([...Object.keys(glanceImage.properties), ...published.map((rule) => rule.name)]);
    });

    it('describes each extension property as the rules table does', () => {
      for (const rule of published) {
        const declaration = proxiedImage.properties[rule.name];
        expect([rule.name, declaration]).toEqual([
          rule.name,
          expect.objectContaining({ type: 'string', description: rule.description, is_base: false }),
        ]);
        if (rule.access === 'read-only') expect(declaration.readOnly).toBe(true);
        if (rule.access === 'read-only' && rule.allowedValues !== undefined) expect(declaration.enum).toEqual(rule.allowedValues);
      }
    });

    it("keeps the table's unpublished properties (store) out of it, so glanceclient's own --store option still works", () => {
      const unpublished = propertyRules.filter((rule) => !rule.inImageSchema).map((rule) => rule.name);
      expect(unpublished).toContain('store');
      for (const name of unpublished) expect(proxiedImage.properties).not.toHaveProperty(name);
    });

    it('GET /v2/schemas/images lists images of the extended image schema and keeps the rest of Glance\'s', async () => {
      const glanceImages = (await direct.get('/v2/schemas/images')).json();
      const res = await client.get('/v2/schemas/images');
      expect(res.status).toBe(200);
      const proxiedImages = res.json();
      expect(proxiedImages.properties.images.items).toEqual(proxiedImage);
      expect(glanceImages.properties.images.items).toEqual(glanceImage);
      const withoutItems = (schema: Record<string, any>) => ({
        ...schema,
        properties: { ...schema.properties, images: { ...schema.properties.images, items: null } },
      });
      expect(withoutItems(proxiedImages)).toEqual(withoutItems(glanceImages));
    });
  });
});
