import { normalizeCreateRequest } from '../../src/images/inbound';
import { fixtureText } from './glance-fixtures';

describe('POST /v2/images body', () => {
  it('forwards the body glanceclient sends, already canonical, byte for byte', () => {
    const body = fixtureText('glanceclient-create-request.json');
    expect(normalizeCreateRequest(body)).toEqual({ ok: true, body, changed: false, edits: [] });
  });

  it('forwards a body without extension properties untouched', () => {
    const body = '{"name":  "cirros",\n "min_ram": 1.0, "disk_format": "qcow2"}';
    expect(normalizeCreateRequest(body)).toEqual({ ok: true, body, changed: false, edits: [] });
  });

  it("rewrites only the extension values it normalizes and keeps every other byte and Glance's key order", () => {
    const body =
      '{"name":"cirros", "cache_raw" : "true","min_ram":1.0,"hw_wrs_live_migration_timeout": 400 ,\n' +
      '"sw_wrs_auto_recovery":"False", "big": 12345678901234567890}';
    expect(normalizeCreateRequest(body)).toMatchObject({
      ok: true,
      changed: true,
      body:
        '{"name":"cirros", "cache_raw" : "True","min_ram":1.0,"hw_wrs_live_migration_timeout": "400" ,\n' +
        '"sw_wrs_auto_recovery":"False", "big": 12345678901234567890}',
    });
  });

  it('normalizes the example request of the StarlingX API reference without changing it', () => {
    const body =
      '{"hw_wrs_live_migration_timeout":"400","name":"cirros","container_format":"bare","cache_raw":"True",' +
      '"visibility":"public","disk_format":"qcow2","sw_wrs_auto_recovery":"False","hw_wrs_live_migration_max_downtime":"350"}';
    expect(normalizeCreateRequest(body)).toEqual({ ok: true, body, changed: false, edits: [] });
  });

  it('finds a property whose name is written with JSON escapes, as Glance decodes it', () => {
    const result = normalizeCreateRequest('{"cache\\u005fraw": "maybe"}');
    expect(result).toEqual({ ok: false, rejection: { status: 400, message: 'cache_raw must be True or False, value: maybe' } });
  });

  it('validates only the last of repeated keys, the one Glance keeps', () => {
    expect(normalizeCreateRequest('{"cache_raw": "maybe", "cache_raw": "true"}')).toMatchObject({
      ok: true,
      changed: true,
      body: '{"cache_raw": "maybe", "cache_raw": "True"}',
    });
    expect(normalizeCreateRequest('{"cache_raw": "true", "cache_raw": "maybe"}')).toMatchObject({ ok: false });
  });

  it('reports the first invalid property in body order', () => {
    const result = normalizeCreateRequest('{"hw_wrs_live_migration_max_downtime": "5", "cache_raw": "x"}');
    expect(result).toEqual({
      ok: false,
      rejection: { status: 400, message: 'hw_wrs_live_migration_max_downtime must be a number greater than or equal to 100, value: 5' },
    });
  });

  it('reads NaN and Infinity as Python does, so they cannot hide an invalid value', () => {
    const result = normalizeCreateRequest('{"min_ram": NaN, "sw_wrs_auto_recovery": "maybe"}');
    expect(result).toEqual({ ok: false, rejection: { status: 400, message: 'sw_wrs_auto_recovery must be True or False, value: maybe' } });
  });

  it.each(['store', 'cache_raw_status', 'cache_raw_url', 'cache_raw_size', 'cache_raw_error'])(
    'refuses the server-owned %s with 403, as Glance refuses its read-only attributes',
    (name) => {
      expect(normalizeCreateRequest(`{"name": "n", "${name}": "x"}`)).toEqual({
        ok: false,
        rejection: { status: 403, message: `Attribute '${name}' is read-only.` },
      });
    },
  );

  it('refuses a read-only field before judging any value, like Glance (403 before 400)', () => {
    expect(normalizeCreateRequest('{"cache_raw": "maybe", "cache_raw_status": "Cached"}')).toEqual({
      ok: false,
      rejection: { status: 403, message: "Attribute 'cache_raw_status' is read-only." },
    });
  });

  it('refuses a property named __proto__ as reserved', () => {
    expect(normalizeCreateRequest('{"name": "n", "__proto__": "x"}')).toEqual({
      ok: false,
      rejection: { status: 403, message: "Attribute '__proto__' is reserved." },
    });
  });

  it.each([
    ['malformed JSON', '{"name":'],
    ['an empty body', ''],
    ['a JSON array', '[{"cache_raw": "maybe"}]'],
    ['a JSON string', '"cache_raw"'],
    ['a UTF-8 byte order mark', '\ufeff{"cache_raw": "maybe"}'],
    ['trailing data', '{"cache_raw": "maybe"} x'],
  ])('forwards %s untouched so Glance answers it itself', (_, body) => {
    expect(normalizeCreateRequest(body)).toEqual({ ok: true, body, changed: false, edits: [] });
  });

  it('reads a deeply nested body, so nesting cannot hide a property from validation', () => {
    const body = `{"a": ${'['.repeat(100000)}${']'.repeat(100000)}, "cache_raw": "true"}`;
    expect(normalizeCreateRequest(body)).toMatchObject({ ok: true, changed: true });
  });

  it('quotes a deeply nested invalid value without overflowing the stack', () => {
    const result = normalizeCreateRequest(`{"cache_raw": ${'['.repeat(100000)}${']'.repeat(100000)}}`);
    expect(result).toMatchObject({ ok: false, rejection: { status: 400 } });
  });
});
