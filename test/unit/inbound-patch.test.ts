import { normalizePatchRequest, type InboundResult } from '../../src/images/inbound';
import { fixtureText } from './glance-fixtures';

const V21 = 'application/openstack-images-v2.1-json-patch';
const V20 = 'application/openstack-images-v2.0-json-patch';
const ACCEPT_PATCH = 'application/openstack-images-v2.0-json-patch, application/openstack-images-v2.1-json-patch';

const patch = (body: string, contentType: string | undefined = V21): InboundResult => normalizePatchRequest(contentType, body);
const unchanged = (body: string): InboundResult => ({ ok: true, body, changed: false, edits: [] });
const refused = (status: 400 | 403, message: string): InboundResult => ({ ok: false, rejection: { status, message } });

describe('PATCH media type', () => {
  it.each([
    ['application/json', 'application/json'],
    ['application/json; charset=UTF-8', 'application/json; charset=UTF-8'],
    ['application/x-www-form-urlencoded', 'application/x-www-form-urlencoded'],
    ['application/openstack-images-v2.2-json-patch', 'application/openstack-images-v2.2-json-patch'],
  ])('answers %s with 415 and Accept-Patch, in Glance\'s words', (contentType, shown) => {
    expect(patch('[]', contentType)).toEqual({
      ok: false,
      rejection: {
        status: 415,
        message: `The request media type ${shown} is not supported by this server.`,
        headers: { 'Accept-Patch': ACCEPT_PATCH },
      },
    });
  });

  it('names text/plain when no Content-Type was sent, as Glance under eventlet does', () => {
    expect(normalizePatchRequest(undefined, '[]')).toMatchObject({
      ok: false,
      rejection: { status: 415, message: 'The request media type text/plain is not supported by this server.' },
    });
  });

  it('checks the media type before reading the body, like Glance', () => {
    expect(patch('[{"op": "add", "path": "/cache_raw_status", "value": "x"}', 'application/json')).toMatchObject({
      ok: false,
      rejection: { status: 415 },
    });
  });

  it.each([V21, V20, `${V21}; charset=UTF-8`, `${V20};charset=utf-8`, V21.toUpperCase(), `  ${V21}  `])('accepts %s', (contentType) => {
    expect(patch('[]', contentType)).toEqual(unchanged('[]'));
  });
});

describe('PATCH bodies the proxy has nothing to do with', () => {
  it.each([
    ['glance image-update', 'glanceclient-update-request.json'],
    ['openstack image set', 'openstackclient-set-request.json'],
  ])('forwards what %s sends, byte for byte', (_, fixture) => {
    const body = fixtureText(fixture);
    expect(patch(body)).toEqual(unchanged(body));
  });

  it.each([
    ['an empty patch', '[]'],
    ['malformed JSON', '[{"op":"add",'],
    ['an empty body', ''],
    ['an object instead of an array', '{"op": "replace", "path": "/cache_raw", "value": "maybe"}'],
    ['an unknown operation on a Glance property', '[{"op": "test", "path": "/name", "value": "x"}]'],
    ['an operation that is not an object', '["replace"]'],
    ['a Glance read-only attribute', '[{"op": "replace", "path": "/status", "value": "queued"}]'],
    ['a tag append', '[{"op": "add", "path": "/tags/-", "value": "c"}]'],
    ['a pointer escape that only looks like an extension name', '[{"op": "add", "path": "/cache~0raw", "value": "maybe"}]'],
    ['a pointer to a token holding a slash', '[{"op": "add", "path": "/cache_raw~1x", "value": "maybe"}]'],
  ])('forwards %s untouched so Glance answers it', (_, body) => {
    expect(patch(body)).toEqual(unchanged(body));
  });

  it('forwards canonical values unchanged', () => {
    const body = '[{"op": "replace", "path": "/cache_raw", "value": "True"}, {"op": "add", "path": "/hw_wrs_live_migration_timeout", "value": "0"}]';
    expect(patch(body)).toEqual(unchanged(body));
  });
});

describe('PATCH normalization', () => {
  it('stores the canonical form of each value and leaves the rest of the text alone', () => {
    const body =
      '[{"op":"replace","path":"/sw_wrs_auto_recovery","value":"true"},\n' +
      ' {"op": "add", "path": "/hw_wrs_live_migration_timeout", "value": " +400 "},\n' +
      ' {"op": "add", "path": "/cache_raw", "value": false},\n' +
      ' {"op": "replace", "path": "/min_ram", "value": 1.0},\n' +
      ' {"op": "add", "path": "/hw_wrs_live_migration_max_downtime", "value": 350}]';
    expect(patch(body)).toMatchObject({
      ok: true,
      changed: true,
      body:
        '[{"op":"replace","path":"/sw_wrs_auto_recovery","value":"True"},\n' +
        ' {"op": "add", "path": "/hw_wrs_live_migration_timeout", "value": "400"},\n' +
        ' {"op": "add", "path": "/cache_raw", "value": "False"},\n' +
        ' {"op": "replace", "path": "/min_ram", "value": 1.0},\n' +
        ' {"op": "add", "path": "/hw_wrs_live_migration_max_downtime", "value": "350"}]',
    });
  });

  it('normalizes the old v2.0 syntax', () => {
    const body = '[{"replace": "/sw_wrs_auto_recovery", "value": "FALSE"}, {"add": "/cache_raw", "value": "true"}]';
    expect(patch(body, V20)).toMatchObject({
      ok: true,
      changed: true,
      body: '[{"replace": "/sw_wrs_auto_recovery", "value": "False"}, {"add": "/cache_raw", "value": "True"}]',
    });
  });

  it('normalizes the StarlingX API reference example, which already is canonical', () => {
    const body =
      '[{"path":"/hw_wrs_live_migration_timeout","value":"500","op":"replace"},{"path":"/sw_wrs_auto_recovery","value":"True","op":"replace"},' +
      '{"path":"/hw_wrs_live_migration_max_downtime","value":"300","op":"replace"}]';
    expect(patch(body)).toEqual(unchanged(body));
  });

  it('rewrites the value Glance keeps when "value" is repeated', () => {
    expect(patch('[{"op": "add", "path": "/cache_raw", "value": "maybe", "value": "true"}]')).toMatchObject({
      ok: true,
      changed: true,
      body: '[{"op": "add", "path": "/cache_raw", "value": "maybe", "value": "True"}]',
    });
  });

  it.each([
    ['a trailing space', '/cache_raw '],
    ['a leading space', '/ cache_raw'],
    ['a doubled leading slash', '//cache_raw'],
    ['JSON escapes', '/cache\\u005fraw'],
  ])('finds the property behind a pointer with %s, as Glance decodes it', (_, pointer) => {
    expect(patch(`[{"op": "add", "path": "${pointer}", "value": "maybe"}]`)).toEqual(
      refused(400, 'cache_raw must be True or False, value: maybe'),
    );
  });

  it('lets remove through without looking for a value', () => {
    const body = '[{"op": "remove", "path": "/cache_raw"}, {"op": "remove", "path": "/hw_wrs_live_migration_timeout"}]';
    expect(patch(body)).toEqual(unchanged(body));
  });
});

describe('PATCH rejections', () => {
  it.each(['add', 'replace'])("rejects an invalid value given with %s with StarlingX's message", (op) => {
    expect(patch(`[{"op": "${op}", "path": "/hw_wrs_live_migration_timeout", "value": "119"}]`)).toEqual(
      refused(400, 'hw_wrs_live_migration_timeout must be a number between 120 and 800 or 0, value: 119'),
    );
  });

  it('rejects an invalid value in v2.0 syntax', () => {
    expect(patch('[{"add": "/hw_wrs_live_migration_max_downtime", "value": "99"}]', V20)).toEqual(
      refused(400, 'hw_wrs_live_migration_max_downtime must be a number greater than or equal to 100, value: 99'),
    );
  });

  it('rejects an empty string, which StarlingX let through', () => {
    expect(patch('[{"op": "add", "path": "/sw_wrs_auto_recovery", "value": ""}]')).toEqual(
      refused(400, 'sw_wrs_auto_recovery must be True or False, value: '),
    );
  });

  describe.each(['store', 'cache_raw_status', 'cache_raw_url', 'cache_raw_size', 'cache_raw_error'])('server-owned %s', (name) => {
    it.each(['add', 'replace', 'remove'])('is refused with 403 for %s', (op) => {
      const value = op === 'remove' ? '' : ', "value": "x"';
      expect(patch(`[{"op": "${op}", "path": "/${name}"${value}}]`)).toEqual(refused(403, `Attribute '${name}' is read-only.`));
    });

    it('is refused with 403 in v2.0 syntax', () => {
      expect(patch(`[{"remove": "/${name}"}]`, V20)).toEqual(refused(403, `Attribute '${name}' is read-only.`));
    });
  });

  it.each([
    ['/__proto__', "Invalid JSON pointer for this resource: '/__proto__'"],
    ['/__proto__/polluted', "Invalid JSON pointer for this resource: '/__proto__/polluted'"],
    ['/constructor/prototype', "Invalid JSON pointer for this resource: '/constructor/prototype'"],
    ['/locations/__proto__', "Invalid JSON pointer for this resource: '/locations/__proto__'"],
    ['/ __proto__ ', "Invalid JSON pointer for this resource: '/__proto__'"],
  ])('answers a path through %s itself with 400', (pointer, message) => {
    expect(patch(`[{"op": "add", "path": "${pointer}", "value": "x"}]`)).toEqual(refused(400, message));
    expect(patch(`[{"op": "remove", "path": "${pointer}"}]`)).toEqual(refused(400, message));
  });

  it('lets constructor alone through to Glance', () => {
    const body = '[{"op": "add", "path": "/constructor", "value": "x"}]';
    expect(patch(body)).toEqual(unchanged(body));
  });

  it('answers in the order Glance reads the operations', () => {
    const body = '[{"op": "add", "path": "/cache_raw", "value": "maybe"}, {"op": "add", "path": "/store", "value": "x"}]';
    expect(patch(body)).toEqual(refused(400, 'cache_raw must be True or False, value: maybe'));
  });
});

describe("malformed operations in a PATCH that touches an extension property get Glance's own 400", () => {
  const touching = '{"op": "replace", "path": "/cache_raw", "value": "true"}';
  it.each([
    ['an operation that is not an object', '"add"', 'Operations must be JSON objects.'],
    [
      'a missing op',
      '{"path": "/name", "value": "x"}',
      'Unable to find `op` in JSON Schema change. It must be one of the following: add, remove, replace.',
    ],
    [
      'a null op',
      '{"op": null, "path": "/name", "value": "x"}',
      'Unable to find `op` in JSON Schema change. It must be one of the following: add, remove, replace.',
    ],
    [
      'an unknown op',
      '{"op": "test", "path": "/name", "value": "x"}',
      'Invalid operation: `test`. It must be one of the following: add, remove, replace.',
    ],
    [
      'an op that is not a string',
      '{"op": true, "path": "/name", "value": "x"}',
      'Invalid operation: `True`. It must be one of the following: add, remove, replace.',
    ],
    ['a missing path', '{"op": "add", "value": "x"}', "Unable to find 'path' in JSON Schema change"],
    ['a pointer without a leading slash', '{"op": "add", "path": "name", "value": "x"}', 'Pointer `name` does not start with "/".'],
    ['adjacent slashes', '{"op": "add", "path": "/a/ /b", "value": "x"}', 'Pointer `/a/ /b` contains adjacent "/".'],
    ['a trailing slash', '{"op": "add", "path": "/name/", "value": "x"}', 'Pointer `/name/` end with "/".'],
    [
      'an information separator between slashes, whitespace to Python',
      '{"op": "add", "path": "/a/\\u001c/b", "value": "x"}',
      'Pointer `/a/\u001c/b` contains adjacent "/".',
    ],
    [
      'a byte order mark between slashes, not whitespace to Python',
      '{"op": "add", "path": "/a/\\ufeff/b", "value": "x"}',
      "Invalid JSON pointer for this resource: '/a/\ufeff/b'",
    ],
    ['a lone slash token', '{"op": "add", "path": "/ / ", "value": "x"}', 'Pointer `/ / ` does not contains valid token.'],
    ['a bad escape', '{"op": "add", "path": "/a~2", "value": "x"}', 'Pointer `/a~2` contains "~" not part of a recognized escape sequence.'],
    ['a trailing tilde', '{"op": "add", "path": "/a~", "value": "x"}', 'Pointer `/a~` contains "~" not part of a recognized escape sequence.'],
    ['a path too deep', '{"op": "add", "path": "/a~1b/c", "value": "x"}', "Invalid JSON pointer for this resource: '/a/b/c'"],
    ['a tag append', '{"op": "add", "path": "/tags/-", "value": "c"}', "Invalid JSON pointer for this resource: '/tags/-'"],
    ['a missing value', '{"op": "replace", "path": "/name"}', 'Operation "replace" requires a member named "value".'],
  ])('%s', (_, malformed, message) => {
    expect(patch(`[${touching}, ${malformed}]`)).toEqual(refused(400, message));
    expect(patch(`[${malformed}, ${touching}]`)).toEqual(refused(400, message));
  });

  it('refuses an extension property addressed one level down', () => {
    expect(patch('[{"op": "add", "path": "/cache_raw/x", "value": "True"}]')).toEqual(
      refused(400, "Invalid JSON pointer for this resource: '/cache_raw/x'"),
    );
  });

  it('refuses a v2.1 body sent as v2.0 when it touches an extension property', () => {
    expect(patch(`[${touching}]`, V20)).toEqual(
      refused(400, 'Operation objects must contain exactly one member named "add", "remove", or "replace".'),
    );
  });

  it('refuses a v2.0 operation naming two operations', () => {
    expect(patch('[{"add": "/cache_raw", "remove": "/cache_raw", "value": "True"}]', V20)).toEqual(
      refused(400, 'Operation objects must contain only one member named "add", "remove", or "replace".'),
    );
  });

  it('accepts a location added at a position, the one path Glance allows two levels deep', () => {
    const body = `[{"op": "add", "path": "/locations/-", "value": {"url": "rbd://f/images/i/snap", "metadata": {}}}, ${touching}]`;
    expect(patch(body)).toMatchObject({ ok: true, changed: true });
  });
});

describe('operations Glance fails on with a 500', () => {
  it.each([
    ['a number', '5', 'Pointer `5` does not start with "/".'],
    ['null', 'null', 'Pointer `None` does not start with "/".'],
    ['an array', '["cache_raw"]', "Pointer `['cache_raw']` does not start with \"/\"."],
    ['an object', '{"cache_raw": "True"}', "Pointer `{'cache_raw': 'True'}` does not start with \"/\"."],
    ['a boolean', 'true', 'Pointer `True` does not start with "/".'],
  ])('answers a path that is %s with 400 even when no extension property is involved', (_, pointer, message) => {
    expect(patch(`[{"op": "add", "path": ${pointer}, "value": "x"}]`)).toEqual(refused(400, message));
    expect(patch(`[{"op": "replace", "path": "/name", "value": "x"}, {"op": "remove", "path": ${pointer}}]`)).toEqual(refused(400, message));
  });

  it('answers a v2.0 pointer that is not a string with 400 too', () => {
    expect(patch('[{"add": 5, "value": "x"}]', V20)).toEqual(refused(400, 'Pointer `5` does not start with "/".'));
  });

  it('leaves an earlier refusal of Glance to Glance', () => {
    const body = '[{"op": "test", "path": "/name", "value": "x"}, {"op": "add", "path": 5, "value": "x"}]';
    expect(patch(body)).toEqual(unchanged(body));
  });
});
