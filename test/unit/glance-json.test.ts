import { applyEdits, lastMember, parseGlanceJson, type JsonNode } from '../../src/images/glance-json';

function objectNode(text: string): Extract<JsonNode, { kind: 'object' }> {
  const node = parseGlanceJson(text);
  if (node?.kind !== 'object') throw new Error(`not an object: ${text}`);
  return node;
}

describe('reading a body as Glance (Python json) does', () => {
  it('keeps the position of every value so one can be replaced in place', () => {
    const text = '{ "a" : [1, "x"] , "b": true }';
    const node = objectNode(text);
    const a = lastMember(node, 'a');
    const b = lastMember(node, 'b');
    expect(a && text.slice(a.start, a.end)).toBe('[1, "x"]');
    expect(b && text.slice(b.start, b.end)).toBe('true');
  });

  it('decodes string escapes, lone surrogates included', () => {
    const node = objectNode('{"k\\u0065y": "\\"\\\\\\/\\b\\f\\n\\r\\t\\ud800\\u00e9"}');
    expect(node.members[0]).toMatchObject({ key: 'key', value: { kind: 'string', value: '"\\/\b\f\n\r\t\ud800é' } });
  });

  it('accepts the NaN, Infinity and -Infinity constants Python accepts', () => {
    expect(parseGlanceJson('[NaN, Infinity, -Infinity]')).toMatchObject({
      kind: 'array',
      elements: [{ text: 'NaN' }, { text: 'Infinity' }, { text: '-Infinity' }],
    });
  });

  it('keeps every repeated key, the last one being the one Python keeps', () => {
    const node = objectNode('{"a": 1, "a": 2}');
    expect(node.members).toHaveLength(2);
    expect(lastMember(node, 'a')).toMatchObject({ kind: 'number', text: '2' });
  });

  it('reads __proto__ as an ordinary key', () => {
    expect(objectNode('{"__proto__": {"polluted": true}}').members[0]?.key).toBe('__proto__');
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });

  it.each([
    ['empty text', ''],
    ['only whitespace', ' \n'],
    ['a byte order mark', '\ufeff{}'],
    ['trailing data', '{} {}'],
    ['a trailing comma', '[1,]'],
    ['a leading zero', '[01]'],
    ['a bare fraction dot', '[1.]'],
    ['an unquoted key', '{a: 1}'],
    ['single quotes', "{'a': 1}"],
    ['an unknown escape', '["\\x41"]'],
    ['a short unicode escape', '["\\u12"]'],
    ['an unterminated string', '["abc'],
    ['-NaN', '[-NaN]'],
    ['lower-case nan', '[nan]'],
    ['an unclosed array', '[1, 2'],
    ['a mismatched bracket', '[1, 2}'],
    ['whitespace Python does not skip', '\u00a0{}'],
  ])('refuses %s, like Python', (_, text) => {
    expect(parseGlanceJson(text)).toBeUndefined();
  });

  it.each([
    ['a top-level string', '"x"'],
    ['a top-level number', '-1.5e+3'],
    ['surrounding JSON whitespace', ' \t\r\n{} \n'],
    ['empty containers', '{"a": [], "b": {}}'],
  ])('accepts %s', (_, text) => {
    expect(parseGlanceJson(text)).toBeDefined();
  });

  it('reads nesting far deeper than the call stack allows', () => {
    const depth = 200000;
    expect(parseGlanceJson(`${'['.repeat(depth)}${']'.repeat(depth)}`)).toMatchObject({ kind: 'array' });
    expect(parseGlanceJson(`${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`)).toMatchObject({ kind: 'object' });
  });
});

describe('applying edits', () => {
  it('replaces each span, whatever the order the edits come in', () => {
    expect(
      applyEdits('0123456789', [
        { start: 1, end: 2, text: 'a' },
        { start: 7, end: 9, text: 'bcd' },
        { start: 4, end: 4, text: '-' },
      ]),
    ).toBe('0a23-456bcd9');
  });
});
