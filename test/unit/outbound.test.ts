import { pythonJson } from '../../src/http/python-json';
import { enrichImage, enrichImageBytes, enrichImageList, type EnrichContext } from '../../src/images/outbound';
import { fixtureJson, fixtureText } from './glance-fixtures';

const ctx: EnrichContext = { storeTypes: { fs: 'file', ceph: 'rbd' } };

type Image = Record<string, unknown>;

function enriched(image: unknown, context: EnrichContext = ctx): Image {
  return enrichImage(image, context) as Image;
}

/** Glance's fields unchanged and in Glance's order, then `store` last. */
function expectGlanceFieldsThenStore(result: Image, glance: Image, store: string): void {
  const withoutStale = Object.entries(glance).filter(([key]) => key !== 'store');
  expect(Object.entries(result)).toEqual([...withoutStale, ['store', store]]);
}

describe('store, computed on every read', () => {
  it('is file for an image uploaded to the file store', () => {
    const glance = fixtureJson('show-file-multistore.json');
    expectGlanceFieldsThenStore(enriched(glance), glance, 'file');
  });

  it('is rbd for an image in Ceph', () => {
    const glance = fixtureJson('show-rbd.json');
    expectGlanceFieldsThenStore(enriched(glance), glance, 'rbd');
  });

  it("lists every backend holding the image in StarlingX's form, in the order Glance lists the locations", () => {
    const glance = fixtureJson('show-rbd-and-file.json');
    expectGlanceFieldsThenStore(enriched(glance), glance, 'rbd, file');
  });

  it('is file for an imported image, which StarlingX never labelled', () => {
    const glance = fixtureJson('show-imported.json');
    expectGlanceFieldsThenStore(enriched(glance), glance, 'file');
  });

  it('comes from the location URL on a single-store Glance, which reports no stores', () => {
    const glance = fixtureJson('show-single-store.json');
    expectGlanceFieldsThenStore(enriched(glance), glance, 'file');
  });

  it('comes from the backend ids in stores when Glance hides locations and direct_url', () => {
    const glance = fixtureJson('show-hidden-locations.json');
    expectGlanceFieldsThenStore(enriched(glance), glance, 'file');
  });

  it('comes from direct_url when only the locations are hidden', () => {
    const { locations: _hidden, ...glance } = fixtureJson('show-rbd.json');
    expectGlanceFieldsThenStore(enriched(glance, { storeTypes: {} }), glance, 'rbd');
  });

  it.each([
    ['a new image', 'create-queued.json'],
    ['an image staged for import', 'show-uploading.json'],
  ])('is absent for %s, which has no data yet', (_, fixture) => {
    const glance = fixtureJson(fixture);
    expect(Object.entries(enriched(glance))).toEqual(Object.entries(glance));
  });

  it('is absent when the only backend ids are unknown to the configuration', () => {
    const glance = fixtureJson('show-hidden-locations.json');
    expect(enriched(glance, { storeTypes: { ceph: 'rbd' } })).not.toHaveProperty('store');
  });

  it("maps each backend id through the configuration, skipping Glance's internal stores", () => {
    const result = enriched({ id: 'i', stores: 'ceph,os_glance_staging_store, fs,ceph' });
    expect(result.store).toBe('rbd, file');
  });

  it('ignores a location whose scheme is not a store type and uses the next source', () => {
    const result = enriched({ locations: [{ url: 'http://example.com/cirros.img', metadata: {} }], stores: 'fs' });
    expect(result.store).toBe('file');
  });

  it('never maps a backend id through inherited object properties', () => {
    expect(enriched({ stores: 'constructor,toString,__proto__' })).not.toHaveProperty('store');
  });

  it('replaces a stale store value Glance returned with the derived one, at the end', () => {
    const glance = { store: 'rbd', id: 'i', direct_url: 'file:///var/lib/glance/images/i', name: 'n' };
    expect(Object.entries(enriched(glance))).toEqual([
      ['id', 'i'],
      ['direct_url', 'file:///var/lib/glance/images/i'],
      ['name', 'n'],
      ['store', 'file'],
    ]);
  });

  it('removes a stale store value when nothing says where the data is', () => {
    expect(enriched({ id: 'i', store: 'rbd', locations: [] })).toEqual({ id: 'i', locations: [] });
  });
});

describe('everything else Glance sent', () => {
  it('passes the cache_raw fields through as Glance stored them, without inventing any', () => {
    const glance = {
      ...fixtureJson('show-rbd.json'),
      cache_raw_status: 'Cached',
      cache_raw_size: '41126400',
      cache_raw_url: 'rbd://f/images/i_raw/snap',
    };
    const result = enriched(glance);
    expect(result).toMatchObject({ cache_raw_status: 'Cached', cache_raw_size: '41126400', cache_raw_url: 'rbd://f/images/i_raw/snap' });
    expect(enriched(fixtureJson('show-file-multistore.json'))).not.toHaveProperty('cache_raw_status');
  });

  it('leaves the image it was given untouched', () => {
    const glance = fixtureJson('show-rbd.json');
    const copy = structuredClone(glance);
    enriched({ ...glance, store: 'stale' });
    expect(glance).toEqual(copy);
  });

  it('keeps a __proto__ property an ordinary field', () => {
    const glance = JSON.parse('{"__proto__": {"polluted": true}, "direct_url": "rbd://f/images/i/snap"}') as unknown;
    const result = enriched(glance);
    expect(Object.keys(result)).toEqual(['__proto__', 'direct_url', 'store']);
    expect(Object.getPrototypeOf(result)).toBe(Object.prototype);
    expect((result as { polluted?: unknown }).polluted).toBeUndefined();
  });

  it.each([null, 'text', 42, [{ direct_url: 'rbd://f/images/i/snap' }]])('returns %p, which is not an image, as it is', (body) => {
    expect(enrichImage(body, ctx)).toBe(body);
  });
});

describe('image lists', () => {
  it('enriches each image of a list page and keeps the page links in place', () => {
    const glance = fixtureJson('list.json');
    const result = enrichImageList(glance, ctx) as Image;
    expect(Object.keys(result)).toEqual(Object.keys(glance));
    expect(result.first).toBe(glance.first);
    expect(result.schema).toBe(glance.schema);
    const [image] = result.images as Image[];
    expectGlanceFieldsThenStore(image as Image, (glance.images as Image[])[0] as Image, 'file');
  });

  it('enriches every image of a mixed page independently', () => {
    const page = { images: [fixtureJson('show-rbd.json'), fixtureJson('create-queued.json'), fixtureJson('show-rbd-and-file.json')] };
    const stores = (enrichImageList(page, ctx) as { images: Image[] }).images.map((image) => image.store);
    expect(stores).toEqual(['rbd', undefined, 'rbd, file']);
  });

  it.each([null, [], { images: 'none' }, { first: '/v2/images' }])('returns %p, which is not a list page, as it is', (body) => {
    expect(enrichImageList(body, ctx)).toBe(body);
  });
});

describe("enrichImageBytes: the enriched image written after Glance's own bytes", () => {
  const shows = ['create-queued.json', 'show-file-multistore.json', 'show-hidden-locations.json', 'show-imported.json', 'show-rbd-and-file.json', 'show-rbd.json', 'show-single-store.json', 'show-uploading.json'];
  const contexts: Array<[string, EnrichContext]> = [
    ['raw cache off', ctx],
    ['raw cache on', { ...ctx, rawCacheEnabled: true }],
  ];

  describe.each(contexts)('%s', (_name, context) => {
    it.each(shows)('%s: the same bytes as the enriched image written in full', (name) => {
      const raw = Buffer.from(fixtureText(name), 'utf8');
      const image = JSON.parse(raw.toString('utf8'));
      // The captured bodies are Python's json.dumps output, so writing Glance's part again gives the same bytes.
      expect(pythonJson(image)).toBe(raw.toString('utf8').trimEnd());
      const result = enrichImageBytes(image, raw, context);
      const bytes = Buffer.isBuffer(result) ? result.toString('utf8') : pythonJson(result);
      expect(bytes.trimEnd()).toBe(pythonJson(enrichImage(image, context)));
    });
  });

  it('passes Glance\'s bytes as they are, not as JSON.stringify or json.dumps would write them again', () => {
    const raw = Buffer.from('{"name": "caf\\u00e9", "size": 1.0, "stores": "fs"}');
    const result = enrichImageBytes(JSON.parse(raw.toString()), raw, ctx);
    expect(Buffer.isBuffer(result) && result.toString()).toBe('{"name": "caf\\u00e9", "size": 1.0, "stores": "fs", "store": "file"}');
  });

  it('gives the same bytes back when nothing is to be added', () => {
    const raw = Buffer.from('{"name": "empty", "size": 1.0}');
    expect(enrichImageBytes(JSON.parse(raw.toString()), raw, ctx)).toBe(raw);
  });

  it('writes the image again when Glance sent a store of its own (its place in the order changes)', () => {
    const raw = Buffer.from('{"store": "forged", "stores": "ceph", "name": "x"}');
    const result = enrichImageBytes(JSON.parse(raw.toString()), raw, ctx);
    expect(Buffer.isBuffer(result)).toBe(false);
    expect(pythonJson(result)).toBe('{"stores": "ceph", "name": "x", "store": "rbd"}');
  });

  it('leaves an image with nowhere to derive a store from as Glance sent it', () => {
    const raw = Buffer.from('{}');
    expect(enrichImageBytes({}, raw, ctx)).toBe(raw);
  });
});
