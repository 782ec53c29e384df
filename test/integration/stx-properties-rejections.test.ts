import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient, type HttpResponse } from '../harness/http';
import { startProxy, type RunningProxy } from '../harness/proxy';
import {
  ACCEPT_FLAVOURS,
  PATCH_V21,
  countDirect,
  createImage,
  expectGlanceError,
  learnGlanceError,
  readableErrorRendering,
  runTag,
  sendPatch,
  showDirect,
  type GlanceErrorRendering,
  type Image,
} from './support/stx-images';

/**
 * What the proxy refuses on behalf of StarlingX, against a real Glance: each refusal carries StarlingX's
 * message in the body Glance itself would render for the request's Accept header, and Glance is left
 * exactly as it was (checked on Glance directly, never through the proxy).
 */

const TIMEOUT = 'hw_wrs_live_migration_timeout must be a number between 120 and 800 or 0, value:';
/** [property, value as sent in JSON, StarlingX's message]. */
const INVALID_VALUES: ReadonlyArray<readonly [string, unknown, string]> = [
  ['hw_wrs_live_migration_timeout', '119', `${TIMEOUT} 119`],
  ['hw_wrs_live_migration_timeout', 119, `${TIMEOUT} 119`],
  ['hw_wrs_live_migration_timeout', '801', `${TIMEOUT} 801`],
  ['hw_wrs_live_migration_timeout', 801, `${TIMEOUT} 801`],
  ['hw_wrs_live_migration_timeout', '12a', `${TIMEOUT} 12a`],
  ['hw_wrs_live_migration_timeout', '1.0', `${TIMEOUT} 1.0`],
  ['hw_wrs_live_migration_timeout', 1.5, `${TIMEOUT} 1.5`],
  ['hw_wrs_live_migration_max_downtime', '99', 'hw_wrs_live_migration_max_downtime must be a number greater than or equal to 100, value: 99'],
  ['sw_wrs_auto_recovery', 'yes', 'sw_wrs_auto_recovery must be True or False, value: yes'],
  ['cache_raw', 'maybe', 'cache_raw must be True or False, value: maybe'],
];
const READ_ONLY = ['store', 'cache_raw_status', 'cache_raw_url', 'cache_raw_size', 'cache_raw_error'];

/** How each way of changing an image carries one operation, and the verb the test names it by. */
const UPDATES: ReadonlyArray<readonly [label: string, method: string, contentType: string, op: 'add' | 'replace']> = [
  ['PATCH add', 'PATCH', PATCH_V21, 'add'],
  ['PATCH replace', 'PATCH', PATCH_V21, 'replace'],
  ['PUT replace (JSON-patch media type)', 'PUT', PATCH_V21, 'replace'],
  ['PUT add (application/json)', 'PUT', 'application/json', 'add'],
];

describe('StarlingX rejections through the proxy leave a real Glance untouched', () => {
  let glance: RunningGlance;
  let proxy: RunningProxy;
  let client: HttpClient;
  let direct: HttpClient;
  let target: Image;
  const run = runTag();
  /** Glance's rendering of a 400 and of a 403, per Accept flavour (the proxy's own where no Accept is sent). */
  const renderings = new Map<string, GlanceErrorRendering>();
  const rendering = (status: number, flavour: string) => renderings.get(`${status} ${flavour}`)!;

  beforeAll(async () => {
    glance = await startGlance();
    proxy = await startProxy({ upstream: glance.url });
    client = new HttpClient(proxy.url);
    direct = new HttpClient(glance.url);
    for (const [flavour, headers] of ACCEPT_FLAVOURS) {
      if (!('Accept' in headers)) {
        renderings.set(`400 ${flavour}`, readableErrorRendering(400, 'Bad Request'));
        renderings.set(`403 ${flavour}`, readableErrorRendering(403, 'Forbidden'));
        continue;
      }
      const malformed = (h: Record<string, string>) => direct.request({ method: 'POST', path: '/v2/images', headers: h, body: '{"name":' });
      renderings.set(`400 ${flavour}`, await learnGlanceError(malformed, 400, 'Malformed JSON in request body.', headers));
      const readOnly = (h: Record<string, string>) => direct.sendJson('POST', '/v2/images', { name: 'never', status: 'active' }, h);
      renderings.set(`403 ${flavour}`, await learnGlanceError(readOnly, 403, "Attribute 'status' is read-only.", headers));
    }
    target = await createImage(direct, {
      name: 'rejection-target',
      stx_test_run: run,
      cache_raw: 'True',
      sw_wrs_auto_recovery: 'False',
      hw_wrs_live_migration_timeout: '400',
      hw_wrs_live_migration_max_downtime: '350',
    });
  }, 90_000);

  afterAll(async () => {
    client?.destroy();
    direct?.destroy();
    await proxy?.stop();
    await glance?.stop();
  });

  /** Sends `request` and proves that no image appeared in Glance because of it. */
  async function createsNothing(request: () => Promise<HttpResponse>): Promise<HttpResponse> {
    const before = await countDirect(direct, run);
    const res = await request();
    expect(await countDirect(direct, run)).toBe(before);
    return res;
  }

  /** Sends `request` and proves that Glance's own body of the target image, updated_at included, did not change. */
  async function changesNothing(request: () => Promise<HttpResponse>): Promise<HttpResponse> {
    const before = await showDirect(direct, target.id);
    const res = await request();
    expect(await showDirect(direct, target.id)).toEqual(before);
    return res;
  }

  describe.each(ACCEPT_FLAVOURS)('answered as %s', (flavour, acceptHeaders) => {
    describe.each(INVALID_VALUES.map(([name, value, message]) => [name, JSON.stringify(value), value, message] as const))(
      '%s %s',
      (name, _shown, value, message) => {
        it(`is refused on create with 400 "${message}" and creates no image`, async () => {
          const res = await createsNothing(() =>
            client.sendJson('POST', '/v2/images', { name: 'refused', stx_test_run: run, [name]: value }, acceptHeaders),
          );
          expectGlanceError(res, rendering(400, flavour), 400, message);
        });

        it.each(UPDATES)('is refused by %s with the same 400 and leaves the image as it was', async (_label, method, contentType, op) => {
          const res = await changesNothing(() =>
            sendPatch(client, target.id, [{ op, path: `/${name}`, value }], { method, contentType, headers: acceptHeaders }),
          );
          expectGlanceError(res, rendering(400, flavour), 400, message);
        });
      },
    );

    describe.each(READ_ONLY)('read-only %s', (name) => {
      const message = `Attribute '${name}' is read-only.`;

      it(`is refused on create with 403 "${message}" and creates no image`, async () => {
        const res = await createsNothing(() =>
          client.sendJson('POST', '/v2/images', { name: 'refused', stx_test_run: run, [name]: 'x' }, acceptHeaders),
        );
        expectGlanceError(res, rendering(403, flavour), 403, message);
      });

      it.each([
        ['PATCH add', 'PATCH', { op: 'add', path: `/${name}`, value: 'file' }],
        ['PATCH replace', 'PATCH', { op: 'replace', path: `/${name}`, value: 'file' }],
        ['PATCH remove', 'PATCH', { op: 'remove', path: `/${name}` }],
        ['PUT replace', 'PUT', { op: 'replace', path: `/${name}`, value: 'file' }],
        ['PUT remove', 'PUT', { op: 'remove', path: `/${name}` }],
      ])('is refused by %s with the same 403 and leaves the image as it was', async (_label, method, operation) => {
        const res = await changesNothing(() => sendPatch(client, target.id, [operation], { method, headers: acceptHeaders }));
        expectGlanceError(res, rendering(403, flavour), 403, message);
      });
    });

    it.each([
      ['application/json', 'application/json'],
      ['text/plain', 'text/plain'],
      ['no Content-Type', null],
    ])(
      'answers a PATCH sent as %s exactly as Glance does: 415 with Accept-Patch, the image unchanged',
      async (_label, contentType) => {
        const body = [{ op: 'replace', path: '/hw_wrs_live_migration_timeout', value: '119' }, { op: 'add', path: '/store', value: 'rbd' }];
        const viaProxy = await changesNothing(() => sendPatch(client, target.id, body, { contentType, headers: acceptHeaders }));
        const fromGlance = await changesNothing(() => sendPatch(direct, target.id, body, { contentType, headers: acceptHeaders }));
        expect(viaProxy.status).toBe(415);
        expect(viaProxy.header('accept-patch')).toBe('application/openstack-images-v2.0-json-patch, application/openstack-images-v2.1-json-patch');
        const answer = (res: HttpResponse) => ({
          status: res.status,
          contentType: res.header('content-type'),
          acceptPatch: res.header('accept-patch'),
          body: res.text(),
        });
        if ('Accept' in acceptHeaders) {
          expect(answer(viaProxy)).toEqual(answer(fromGlance));
          return;
        }
        // No Accept: Glance's plain text, which openstacksdk cannot read, becomes the proxy's readable
        // JSON, with the same status, Accept-Patch and lines of text.
        expect({ ...answer(viaProxy), body: undefined }).toEqual({ ...answer(fromGlance), contentType: 'application/json', body: undefined });
        const lines = (text: string) => text.split('\n').map((line) => line.trim()).filter(Boolean);
        const { error } = JSON.parse(viaProxy.text());
        expect(error).toMatchObject({ code: 415, title: 'Unsupported Media Type' });
        expect(lines(error.message)).toEqual(lines(fromGlance.text()).slice(1));
      },
    );
  });

  it('refuses a whole patch whose later operation is invalid: the valid one before it is not applied either', async () => {
    const res = await changesNothing(() =>
      sendPatch(
        client,
        target.id,
        [
          { op: 'replace', path: '/name', value: 'renamed' },
          { op: 'add', path: '/hw_wrs_live_migration_timeout', value: '900' },
        ],
        { headers: { Accept: 'application/json' } },
      ),
    );
    expect(res.status).toBe(400);
    expect(res.json().message).toBe(`${TIMEOUT} 900<br /><br />\n\n\n`);
  });

  it('refuses a create with both a valid and an invalid extension value, creating nothing', async () => {
    const res = await createsNothing(() =>
      client.sendJson('POST', '/v2/images', { name: 'refused', stx_test_run: run, cache_raw: 'True', hw_wrs_live_migration_max_downtime: '0' }),
    );
    expect(res.status).toBe(400);
    expect(res.text()).toContain('hw_wrs_live_migration_max_downtime must be a number greater than or equal to 100, value: 0');
  });

  describe('malformed PATCH documents get a 400, never a 500, and change nothing', () => {
    const EXTENSION_OP = { op: 'replace', path: '/cache_raw', value: 'False' };
    const DOCUMENTS: ReadonlyArray<readonly [label: string, body: string, message: string]> = [
      ['a __proto__ path', '[{"op": "add", "path": "/__proto__", "value": "x"}]', "Invalid JSON pointer for this resource: '/__proto__'"],
      [
        'a __proto__ path beside an extension property',
        `[{"op": "add", "path": "/__proto__", "value": "True"}, ${JSON.stringify(EXTENSION_OP)}]`,
        "Invalid JSON pointer for this resource: '/__proto__'",
      ],
      [
        'an extension property under __proto__',
        '[{"op": "add", "path": "/__proto__/cache_raw", "value": "True"}]',
        "Invalid JSON pointer for this resource: '/__proto__/cache_raw'",
      ],
      [
        'an extension property under constructor/prototype',
        '[{"op": "replace", "path": "/constructor/prototype/cache_raw", "value": "True"}]',
        "Invalid JSON pointer for this resource: '/constructor/prototype/cache_raw'",
      ],
      ['a single operation object, not an array', JSON.stringify(EXTENSION_OP), 'Request body must be a JSON array of operation objects.'],
      ['an empty object', '{}', 'Request body must be a JSON array of operation objects.'],
      ['a JSON string', '"cache_raw"', 'Unexpected body type. Expected list/dict.'],
      ['a JSON number', '42', 'Unexpected body type. Expected list/dict.'],
      ['null', 'null', 'Unexpected body type. Expected list/dict.'],
      ['garbage', 'garbage', 'Malformed JSON in request body.'],
      ['truncated JSON with an extension property', '[{"op": "add", "path": "/cache_raw", "value": "True"}', 'Malformed JSON in request body.'],
      ['trailing garbage after an extension property', '[{"op": "add", "path": "/cache_raw", "value": "True"}] x', 'Malformed JSON in request body.'],
      ['an empty body', '', 'Body expected in request.'],
      [
        'an unknown op on an extension property',
        '[{"op": "test", "path": "/cache_raw", "value": "True"}]',
        'Invalid operation: `test`. It must be one of the following: add, remove, replace.',
      ],
      [
        'an unknown op on a Glance property',
        '[{"op": "frob", "path": "/name", "value": "x"}]',
        'Invalid operation: `frob`. It must be one of the following: add, remove, replace.',
      ],
      [
        'a move onto an extension property',
        '[{"op": "move", "from": "/name", "path": "/cache_raw"}]',
        'Invalid operation: `move`. It must be one of the following: add, remove, replace.',
      ],
      [
        'a missing op',
        '[{"path": "/cache_raw", "value": "True"}]',
        'Unable to find `op` in JSON Schema change. It must be one of the following: add, remove, replace.',
      ],
      ['a missing path', '[{"op": "add", "value": "True"}]', "Unable to find 'path' in JSON Schema change"],
      ['a missing value for an extension property', '[{"op": "add", "path": "/cache_raw"}]', 'Operation "add" requires a member named "value".'],
      ['an operation that is not an object', `[1, ${JSON.stringify(EXTENSION_OP)}]`, 'Operations must be JSON objects.'],
      ['a path that is a number', '[{"op": "add", "path": 5, "value": "True"}]', 'Pointer `5` does not start with "/".'],
      ['a path that is null, on a Glance property', '[{"op": "replace", "path": null, "value": "x"}]', 'Pointer `None` does not start with "/".'],
      [
        'a path that is a list, beside an extension property',
        `[${JSON.stringify(EXTENSION_OP)}, {"op": "add", "path": ["cache_raw"], "value": "True"}]`,
        "Pointer `['cache_raw']` does not start with \"/\".",
      ],
      ['an extension property one level down', '[{"op": "add", "path": "/cache_raw/x", "value": "True"}]', "Invalid JSON pointer for this resource: '/cache_raw/x'"],
      [
        'a bad pointer escape',
        '[{"op": "add", "path": "/cache_raw~2", "value": "True"}]',
        'Pointer `/cache_raw~2` contains "~" not part of a recognized escape sequence.',
      ],
      ['an object as an extension value', '[{"op": "add", "path": "/cache_raw", "value": {"a": 1}}]', "cache_raw must be True or False, value: {'a': 1}"],
      ['NaN as an extension value', '[{"op": "add", "path": "/hw_wrs_live_migration_timeout", "value": NaN}]', `${TIMEOUT} nan`],
    ];

    it.each(DOCUMENTS.flatMap(([label, body, message]) => [
      ['PATCH', label, body, message],
      ['PUT', label, body, message],
    ]))('%s with %s: 400 "%s"', async (method, _label, body, message) => {
      const res = await changesNothing(() => sendPatch(client, target.id, body, { method, headers: { Accept: 'application/json' } }));
      expect({ status: res.status, contentType: res.header('content-type') }).toEqual({ status: 400, contentType: 'application/json' });
      expect(res.json()).toEqual({ message: `${message}<br /><br />\n\n\n`, code: '400 Bad Request', title: 'Bad Request' });
    });
  });
});
