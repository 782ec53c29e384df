import { normalizeCreateRequest, type InboundResult } from '../../src/images/inbound';

/** Creates an image whose only extension property is `name`, with `valueJson` as its raw JSON value. */
function createWith(name: string, valueJson: string): InboundResult {
  return normalizeCreateRequest(`{"name": "cirros", "${name}": ${valueJson}}`);
}

function storedValue(result: InboundResult, name: string): unknown {
  if (!result.ok) throw new Error(`rejected: ${result.rejection.message}`);
  return (JSON.parse(result.body) as Record<string, unknown>)[name];
}

function rejection(result: InboundResult): { status: number; message: string } {
  if (result.ok) throw new Error(`accepted: ${result.body}`);
  return { status: result.rejection.status, message: result.rejection.message };
}

describe.each(['cache_raw', 'sw_wrs_auto_recovery'])('boolean-like property %s', (name) => {
  it.each([
    ['"True"', 'True'],
    ['"False"', 'False'],
    ['"true"', 'True'],
    ['"false"', 'False'],
    ['"TRUE"', 'True'],
    ['"fAlSe"', 'False'],
    ['true', 'True'],
    ['false', 'False'],
  ])('accepts %s and stores %s', (sent, stored) => {
    expect(storedValue(createWith(name, sent), name)).toBe(stored);
  });

  it.each([
    ['"yes"', 'yes'],
    ['"1"', '1'],
    ['"on"', 'on'],
    ['" True"', ' True'],
    ['"True "', 'True '],
    ['"Tru"', 'Tru'],
    ['""', ''],
    ['null', 'None'],
    ['1', '1'],
    ['0', '0'],
    ['1.0', '1.0'],
    ['["True"]', "['True']"],
    ['{"v": true}', "{'v': True}"],
  ])('rejects %s with StarlingX\'s message quoting %s', (sent, shown) => {
    expect(rejection(createWith(name, sent))).toEqual({ status: 400, message: `${name} must be True or False, value: ${shown}` });
  });
});

describe('hw_wrs_live_migration_timeout', () => {
  const name = 'hw_wrs_live_migration_timeout';
  const message = (shown: string) => `hw_wrs_live_migration_timeout must be a number between 120 and 800 or 0, value: ${shown}`;

  it.each([
    ['"0"', '0'],
    ['"120"', '120'],
    ['"400"', '400'],
    ['"800"', '800'],
    ['"+400"', '400'],
    ['" 400 "', '400'],
    ['"\\t400\\n"', '400'],
    ['"\\u00a0400\\u3000"', '400'],
    ['"0400"', '400'],
    ['"-0"', '0'],
    ['"+0"', '0'],
    ['"000"', '0'],
    ['400', '400'],
    ['0', '0'],
    ['-0', '0'],
  ])('accepts %s and stores %s', (sent, stored) => {
    expect(storedValue(createWith(name, sent), name)).toBe(stored);
  });

  it.each([
    ['"119"', '119'],
    ['"801"', '801'],
    ['"1"', '1'],
    ['"-120"', '-120'],
    ['"1.0"', '1.0'],
    ['"12a"', '12a'],
    ['"1e3"', '1e3'],
    ['"4_00"', '4_00'],
    ['"\\u0664\\u0660\\u0660"', '\u0664\u0660\u0660'],
    ['"- 400"', '- 400'],
    ['"\\u001c400"', '\u001c400'],
    ['""', ''],
    ['"   "', '   '],
    ['119', '119'],
    ['801', '801'],
    ['1.5', '1.5'],
    ['400.0', '400.0'],
    ['4e2', '400.0'],
    ['1e16', '1e+16'],
    ['1E400', 'inf'],
    ['NaN', 'nan'],
    ['-Infinity', '-inf'],
    ['true', 'True'],
    ['null', 'None'],
    ['[400]', '[400]'],
  ])('rejects %s with StarlingX\'s message quoting %s', (sent, shown) => {
    expect(rejection(createWith(name, sent))).toEqual({ status: 400, message: message(shown) });
  });

  it("rejects a timeout of 119 with StarlingX's message", () => {
    expect(rejection(createWith(name, '"119"')).message).toBe(
      'hw_wrs_live_migration_timeout must be a number between 120 and 800 or 0, value: 119',
    );
  });

  it('keeps digits beyond double precision exact when quoting and checking them', () => {
    expect(rejection(createWith(name, '12345678901234567890123')).message).toBe(message('12345678901234567890123'));
  });
});

describe('hw_wrs_live_migration_max_downtime', () => {
  const name = 'hw_wrs_live_migration_max_downtime';
  const message = (shown: string) => `hw_wrs_live_migration_max_downtime must be a number greater than or equal to 100, value: ${shown}`;

  it.each([
    ['"100"', '100'],
    ['"500"', '500'],
    ['"99999999999999999999"', '99999999999999999999'],
    ['" +0100 "', '100'],
    ['350', '350'],
  ])('accepts %s and stores %s', (sent, stored) => {
    expect(storedValue(createWith(name, sent), name)).toBe(stored);
  });

  it.each([
    ['"99"', '99'],
    ['"0"', '0'],
    ['"-100"', '-100'],
    ['"100.5"', '100.5'],
    ['""', ''],
    ['99', '99'],
    ['false', 'False'],
    ['null', 'None'],
  ])('rejects %s with StarlingX\'s message quoting %s', (sent, shown) => {
    expect(rejection(createWith(name, sent))).toEqual({ status: 400, message: message(shown) });
  });
});

describe('quoting the value a client sent', () => {
  it('shows a string exactly as sent, even with characters Python would escape in a repr', () => {
    expect(rejection(createWith('cache_raw', '"it\'s\\n"')).message).toBe("cache_raw must be True or False, value: it's\n");
  });

  it('shows strings inside a list the way Python prints them', () => {
    expect(rejection(createWith('cache_raw', '["it\'s", "a\\"b", "\\u0000", "\\u00e9", "\\u00a0"]')).message).toBe(
      `cache_raw must be True or False, value: ["it's", 'a"b', '\\x00', 'é', '\\xa0']`,
    );
  });

  it('shows an object the way Python prints the dict it decodes, last duplicate winning in first position', () => {
    expect(rejection(createWith('cache_raw', '{"a": 1, "b": null, "a": 0.5}')).message).toBe(
      "cache_raw must be True or False, value: {'a': 0.5, 'b': None}",
    );
  });

  it('shows small and large floats in Python notation', () => {
    expect(rejection(createWith('cache_raw', '0.00001')).message).toBe('cache_raw must be True or False, value: 1e-05');
    expect(rejection(createWith('cache_raw', '0.0001')).message).toBe('cache_raw must be True or False, value: 0.0001');
    expect(rejection(createWith('cache_raw', '1e15')).message).toBe('cache_raw must be True or False, value: 1000000000000000.0');
    expect(rejection(createWith('cache_raw', '-1.5e-7')).message).toBe('cache_raw must be True or False, value: -1.5e-07');
    expect(rejection(createWith('cache_raw', '-0.0')).message).toBe('cache_raw must be True or False, value: -0.0');
  });

  it('keeps a $ in the value literal in the message', () => {
    expect(rejection(createWith('cache_raw', '"$&$1"')).message).toBe('cache_raw must be True or False, value: $&$1');
  });
});
