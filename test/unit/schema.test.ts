import Ajv from 'ajv';
import { extendImageSchema, extendImagesSchema } from '../../src/images/schema';
import { fixtureJson } from './glance-fixtures';

type Schema = { properties: Record<string, Record<string, unknown>> } & Record<string, unknown>;

const glanceSchema = fixtureJson('schema-image.json') as Schema;
const extended = extendImageSchema(glanceSchema) as Schema;

const EXTENSION = [
  'cache_raw',
  'sw_wrs_auto_recovery',
  'hw_wrs_live_migration_timeout',
  'hw_wrs_live_migration_max_downtime',
  'cache_raw_status',
  'cache_raw_url',
  'cache_raw_size',
  'cache_raw_error',
];

/** What python-glanceclient (warlock, jsonschema) does with the schema: validate a whole image. */
function clientAccepts(image: Record<string, unknown>): boolean {
  const validate = new Ajv({ strict: false }).compile(extended);
  return validate(image);
}

describe('GET /v2/schemas/image', () => {
  it("keeps every property Glance 25 declares, unchanged and first, then adds the extension's", () => {
    expect(Object.entries(extended.properties)).toEqual([
      ...Object.entries(glanceSchema.properties),
      ...EXTENSION.map((name) => [name, expect.any(Object)]),
    ]);
  });

  it('leaves additionalProperties, name and links as Glance sent them', () => {
    const { properties: _glance, ...rest } = glanceSchema;
    const { properties: _extended, ...extendedRest } = extended;
    expect(extendedRest).toEqual(rest);
    expect(extended.additionalProperties).toEqual({ type: 'string' });
  });

  it('does not declare store, which would clash with glanceclient\'s own --store option', () => {
    expect(extended.properties).not.toHaveProperty('store');
  });

  it('describes each extension property as a non-base string with its description', () => {
    for (const name of EXTENSION) {
      expect(extended.properties[name]).toMatchObject({ type: 'string', is_base: false, description: expect.any(String) });
    }
    expect(extended.properties.sw_wrs_auto_recovery?.description).toBe(
      'Indicates whether auto recovery of failed virtual machine instances is enabled or not. The default is True.',
    );
  });

  it.each(['cache_raw', 'sw_wrs_auto_recovery', 'hw_wrs_live_migration_timeout', 'hw_wrs_live_migration_max_downtime'])(
    'declares %s without a pattern or enum, so that glanceclient sends any value on and the proxy answers it',
    (name) => {
      expect(extended.properties[name]).not.toHaveProperty('pattern');
      expect(extended.properties[name]).not.toHaveProperty('enum');
    },
  );

  it('lets glanceclient send every value the proxy normalizes or answers with its own message', () => {
    for (const value of ['true', 'TRUE', ' +400 ', '0400', '119', '900', 'maybe', '']) {
      expect(clientAccepts({ cache_raw: value, sw_wrs_auto_recovery: value, hw_wrs_live_migration_timeout: value })).toBe(true);
    }
  });

  it('marks the server-owned fields read-only, with the states cache_raw_status takes', () => {
    for (const name of ['cache_raw_status', 'cache_raw_url', 'cache_raw_size', 'cache_raw_error']) {
      expect(extended.properties[name]).toMatchObject({ readOnly: true });
    }
    expect(extended.properties.cache_raw_status?.enum).toEqual(['Queued', 'Caching', 'Cached', 'Error']);
  });

  it('lets glanceclient validate images carrying the server-owned fields, store and legacy spellings', () => {
    const image = {
      ...fixtureJson('show-rbd-and-file.json'),
      store: 'rbd, file',
      sw_wrs_auto_recovery: 'true',
      cache_raw_status: 'Queued',
      cache_raw_size: '-',
      cache_raw_url: 'rbd://f/images/i_raw/snap',
      cache_raw_error: 'Not a Ceph RBD image',
    };
    expect(clientAccepts(image)).toBe(true);
    expect(clientAccepts({ ...image, cache_raw_status: 'Unknown' })).toBe(false);
  });

  it("keeps a declaration Glance already has for an extension name (an operator's schema-image.json)", () => {
    const operatorDeclared = { type: 'string', description: 'site specific', is_base: false };
    const withOwn = { ...glanceSchema, properties: { ...glanceSchema.properties, cache_raw: operatorDeclared } };
    const result = extendImageSchema(withOwn) as Schema;
    expect(result.properties.cache_raw).toEqual(operatorDeclared);
  });

  it('leaves the schema it was given untouched', () => {
    const before = structuredClone(glanceSchema);
    extendImageSchema(glanceSchema);
    expect(glanceSchema).toEqual(before);
  });

  it.each([null, 'schema', [], { name: 'image' }])('returns %p, which has no properties, as it is', (body) => {
    expect(extendImageSchema(body)).toEqual(body);
  });
});

describe('GET /v2/schemas/images', () => {
  const glanceImages = fixtureJson('schema-images.json') as { properties: { images: { items: unknown } } } & Record<string, unknown>;

  it('extends the image schema its images items hold, and nothing else', () => {
    const result = extendImagesSchema(glanceImages) as typeof glanceImages;
    expect(result.properties.images.items).toEqual(extendImageSchema(glanceImages.properties.images.items));
    expect({ ...result, properties: { ...result.properties, images: { ...result.properties.images, items: null } } }).toEqual({
      ...glanceImages,
      properties: { ...glanceImages.properties, images: { ...glanceImages.properties.images, items: null } },
    });
  });

  it.each([null, { properties: {} }, { properties: { images: { type: 'array' } } }])('returns %p as it is', (body) => {
    expect(extendImagesSchema(body)).toEqual(body);
  });
});
