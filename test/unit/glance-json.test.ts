import {
  applyEdits,
  DEFAULT_JSON_LIMITS,
  findLoneSurrogateEscape,
  GlanceJsonBodyReader,
  lastMember,
  parseGlanceJson,
  readGlanceJsonBody,
  type JsonBodyResult,
  type JsonLimits,
  type JsonNode,
} from '../../src/images/glance-json';

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

const LIMITS: JsonLimits = { depth: 3, members: 2, elements: 3, values: 8, string: 5 };
const bytes = (...parts: Array<string | number[]>): Buffer =>
  Buffer.concat(parts.map((part) => (typeof part === 'string' ? Buffer.from(part) : Buffer.from(part))));

function accepted(body: Buffer | string, limits: JsonLimits = DEFAULT_JSON_LIMITS): JsonNode {
  const result = readGlanceJsonBody(typeof body === 'string' ? Buffer.from(body) : body, limits);
  if (!result.ok) throw new Error(`refused: ${result.message}`);
  return result.document;
}

function refusal(body: Buffer | string, limits: JsonLimits = DEFAULT_JSON_LIMITS): JsonBodyResult {
  const result = readGlanceJsonBody(typeof body === 'string' ? Buffer.from(body) : body, limits);
  if (result.ok) throw new Error('accepted');
  return result;
}

const MALFORMED = { ok: false, problem: 'malformed', message: 'Malformed JSON in request body.' };

describe('reading request body bytes as Glance does (oslo jsonutils.loads: strict UTF-8, then Python json)', () => {
  it('returns the document, with spans in the decoded text (UTF-16) and in the body (bytes), and no text', () => {
    const text = '{"name": "ü中😀", "n": 1}';
    const body = Buffer.from(text);
    const result = readGlanceJsonBody(body, DEFAULT_JSON_LIMITS);
    if (!result.ok || result.document.kind !== 'object') throw new Error('not an object');
    expect(result.text).toBeUndefined();
    const name = lastMember(result.document, 'name');
    const n = lastMember(result.document, 'n');
    expect(n && text.slice(n.start, n.end)).toBe('1');
    expect(n && body.subarray(n.byteStart, n.byteEnd).toString()).toBe('1');
    expect(name && body.subarray(name.byteStart, name.byteEnd).toString()).toBe('"ü中😀"');
    expect(name && text.slice(name.start, name.end)).toBe('"ü中😀"');
    expect(result.document).toMatchObject({ start: 0, end: text.length, byteStart: 0, byteEnd: body.length });
  });

  it('gives parseGlanceJson byte spans into the UTF-8 of its text, a lone surrogate counting 3 bytes', () => {
    const text = '["\\u00e9", "é", "\ud800", "😀", "\ud800😀", 1, {"é": [true]}]';
    const bytes = Buffer.from(text);
    const node = parseGlanceJson(text);
    if (node?.kind !== 'array') throw new Error('not an array');
    expect(node.elements.map((element) => element.byteEnd - element.byteStart)).toEqual([8, 4, 5, 6, 9, 1, 14]);
    expect(node).toMatchObject({ byteStart: 0, byteEnd: bytes.length });
    expect(bytes.subarray(node.elements[6]?.byteStart, node.elements[6]?.byteEnd).toString()).toBe('{"é": [true]}');
  });

  it('decodes long strings and keys (or any past the kept budget) on demand from the body, the same as kept ones', () => {
    const long = `é\\n${'a'.repeat(2000)}\\u00e9😀`;
    const text = `{"${long}": "${long}", "short": ["x", "${'b'.repeat(20)}"], "k": "v"}`;
    const body = Buffer.from(text);
    const kept = readGlanceJsonBody(body, DEFAULT_JSON_LIMITS);
    const lazy = new GlanceJsonBodyReader(DEFAULT_JSON_LIMITS, 7, { eagerString: 0, eagerBudget: 0 });
    for (let offset = 0; offset < body.length; offset += 5) lazy.push(body.subarray(offset, offset + 5));
    const result = lazy.end();
    expect(plain(result)).toEqual(plain(kept));
    if (!result.ok || result.document.kind !== 'object') throw new Error('not an object');
    const expected = `é\n${'a'.repeat(2000)}é😀`;
    expect(result.document.members[0]?.key).toBe(expected);
    expect(lastMember(result.document, expected)).toMatchObject({ kind: 'string', value: expected });
    expect(lastMember(result.document, 'k')).toMatchObject({ value: 'v' });
    expect(lastMember(result.document, 'short')).toMatchObject({ elements: [{ value: 'x' }, { value: 'b'.repeat(20) }] });
  });

  it.each([
    ['a lone continuation byte', [0x80]],
    ['an overlong encoding', [0xc0, 0x80]],
    ['an overlong three-byte encoding', [0xe0, 0x9f, 0xbf]],
    ['an encoded surrogate', [0xed, 0xa0, 0x80]],
    ['a code point above U+10FFFF', [0xf4, 0x90, 0x80, 0x80]],
    ['a byte that never occurs in UTF-8', [0xff]],
    ['a sequence cut short', [0xe2, 0x82]],
  ])('refuses invalid UTF-8 (%s) as malformed, since Glance decodes with errors=strict', (_, sequence) => {
    expect(refusal(bytes('["', sequence, '"]'))).toEqual(MALFORMED);
  });

  it('refuses a body that ends inside a UTF-8 sequence', () => {
    expect(refusal(bytes('"a"', [0xe4, 0xb8]))).toEqual(MALFORMED);
  });

  it('refuses a UTF-8 byte order mark before the document, which the utf-8 codec keeps and json refuses', () => {
    expect(refusal(bytes([0xef, 0xbb, 0xbf], '{}'))).toEqual(MALFORMED);
  });

  it('accepts a byte order mark inside a string', () => {
    expect(accepted(bytes('["', [0xef, 0xbb, 0xbf], '"]'))).toMatchObject({ elements: [{ value: '\ufeff' }] });
  });

  it('skips exactly space, tab, LF and CR between tokens', () => {
    expect(accepted(' \t\r\n[ \t\r\n1 \t\r\n, \t\r\n{ \t\r\n"a" \t\r\n: \t\r\n2 \t\r\n} \t\r\n] \t\r\n')).toMatchObject({ kind: 'array' });
  });

  it.each([
    ['form feed', '\f'],
    ['vertical tab', '\v'],
    ['a file separator', '\x1c'],
    ['a no-break space', '\u00a0'],
    ['a line separator', '\u2028'],
    ['an ideographic space', '\u3000'],
    ['a next line', '\u0085'],
  ])('refuses %s between tokens, which Python does not count as whitespace', (_, space) => {
    expect(refusal(`[1,${space}2]`)).toEqual(MALFORMED);
    expect(refusal(`{}${space}`)).toEqual(MALFORMED);
  });

  it('accepts NaN, Infinity and -Infinity wherever a value may stand', () => {
    expect(accepted('{"a": NaN, "b": [Infinity, -Infinity]}')).toMatchObject({
      members: [{ value: { kind: 'constant', text: 'NaN' } }, { value: { elements: [{ text: 'Infinity' }, { text: '-Infinity' }] } }],
    });
    expect(accepted('-Infinity')).toMatchObject({ kind: 'constant', text: '-Infinity' });
  });

  it.each(['-NaN', 'nan', '+Infinity', 'Inf', 'infinity', '-Inf', 'True', 'NULL', 'nul', 'NaNa', 'truefalse'])('refuses %s, which Python does not know', (word) => {
    expect(refusal(`[${word}]`)).toEqual(MALFORMED);
  });

  it.each(['0', '-0', '12', '-12.5', '0.0', '1e5', '1E+5', '1e-5', '0e0', '-0.0E-0', '1e400', '123456789012345678901234567890'])(
    'accepts the number %s with its text as written',
    (number) => {
      expect(accepted(`[${number}]`)).toMatchObject({ elements: [{ kind: 'number', text: number }] });
    },
  );

  it.each([
    ['a leading zero', '01'],
    ['a point without digits after it', '1.'],
    ['a point without digits before it', '.5'],
    ['a plus sign', '+1'],
    ['an exponent without digits', '1e'],
    ['an exponent sign without digits', '1e+'],
    ['a lone minus', '-'],
    ['hexadecimal', '0x10'],
    ['an Arabic-Indic digit', '\u0661'],
    ['an Arabic-Indic digit after ASCII ones', '1\u0661'],
    ['a fullwidth digit', '\uff11'],
    ['digit separators', '1_000'],
  ])('refuses %s in a number (the C scanner reads ASCII digits only)', (_, number) => {
    expect(refusal(`[${number}]`)).toEqual(MALFORMED);
  });

  it('refuses an integer of more than 4300 digits, which int() refuses with a ValueError', () => {
    expect(accepted('9'.repeat(4300))).toMatchObject({ kind: 'number' });
    expect(accepted(`[-${'9'.repeat(4300)}]`)).toMatchObject({ kind: 'array' });
    expect(refusal('9'.repeat(4301))).toEqual(MALFORMED);
    expect(refusal(`{"size": -${'9'.repeat(4301)}}`)).toEqual(MALFORMED);
  });

  it('accepts a float of any length, which Python reads as a float (inf when too big)', () => {
    expect(accepted(`${'9'.repeat(5000)}.0`)).toMatchObject({ kind: 'number' });
    expect(accepted(`${'9'.repeat(5000)}e0`)).toMatchObject({ kind: 'number' });
  });

  it.each([
    ['NUL', '\x00'],
    ['a tab', '\t'],
    ['a line feed', '\n'],
    ['U+001F', '\x1f'],
  ])('refuses a raw %s inside a string (strict mode)', (_, control) => {
    expect(refusal(`["a${control}b"]`)).toEqual(MALFORMED);
    expect(refusal(`{"a${control}": 1}`)).toEqual(MALFORMED);
  });

  it('accepts a raw DEL and other non-control characters inside a string', () => {
    expect(accepted('["\x7f\u0085\u2028😀"]')).toMatchObject({ elements: [{ value: '\x7f\u0085\u2028😀' }] });
  });

  it('decodes every escape Python knows, in keys and values', () => {
    expect(accepted('{"k\\u0065y": "\\"\\\\\\/\\b\\f\\n\\r\\t\\u00E9\\u00e9"}')).toMatchObject({
      members: [{ key: 'key', value: { value: '"\\/\b\f\n\r\t\u00e9\u00e9' } }],
    });
  });

  it('keeps lone and reversed surrogates from \\u escapes, and joins a pair into one code point', () => {
    expect(accepted('["\\ud800", "\\udc00\\ud800", "\\ud83d\\ude00", "\\ud83dx"]')).toMatchObject({
      elements: [{ value: '\ud800' }, { value: '\udc00\ud800' }, { value: '😀' }, { value: '\ud83dx' }],
    });
  });

  it.each(['\\x41', '\\U0041', '\\a', '\\u12', '\\u00g0', '\\u 123', '\\u+123', '\\u\u0661234', '\\ud800\\u00zz', '\\'])(
    'refuses the escape %s',
    (escape) => {
      expect(refusal(`["${escape}"]`)).toEqual(MALFORMED);
    },
  );

  it('keeps every repeated key, the last one being the value Python keeps', () => {
    const document = accepted('{"a": 1, "b": 2, "a": 3}');
    if (document.kind !== 'object') throw new Error('not an object');
    expect(document.members.map((member) => member.key)).toEqual(['a', 'b', 'a']);
    expect(lastMember(document, 'a')).toMatchObject({ text: '3' });
  });

  it('accepts a scalar at the top, leaving from_json\'s "Expected list/dict" check to the caller', () => {
    expect(accepted(' "x" ')).toMatchObject({ kind: 'string', value: 'x' });
    expect(accepted('null')).toMatchObject({ kind: 'null' });
  });

  it.each([
    ['an empty body', ''],
    ['only whitespace', ' \r\n'],
    ['trailing data', '{} {}'],
    ['a trailing comma in an array', '[1,]'],
    ['a trailing comma in an object', '{"a": 1,}'],
    ['a missing colon', '{"a" 1}'],
    ['a key that is not a string', '{1: 2}'],
    ['a mismatched bracket', '[1}'],
    ['an unclosed object', '{"a": 1'],
    ['an unterminated string', '"abc'],
    ['single quotes', "['a']"],
  ])('refuses %s', (_, body) => {
    expect(refusal(body)).toEqual(MALFORMED);
  });
});

describe('limits on request bodies', () => {
  it('uses depth 32, 4096 members, 16384 elements, 65536 values and 65535-unit strings by default', () => {
    expect(DEFAULT_JSON_LIMITS).toEqual({ depth: 32, members: 4096, elements: 16384, values: 65536, string: 65535 });
  });

  it('accepts nesting down to the depth limit and refuses one level more with 400', () => {
    expect(accepted(`${'['.repeat(32)}${']'.repeat(32)}`)).toMatchObject({ kind: 'array' });
    expect(refusal(`${'['.repeat(33)}${']'.repeat(33)}`)).toEqual({
      ok: false,
      problem: 'limit',
      status: 400,
      message: 'The JSON request body nests deeper than 32 levels.',
    });
    expect(refusal('{"a": {"b": [[1]]}}', LIMITS)).toMatchObject({ status: 400, message: 'The JSON request body nests deeper than 3 levels.' });
  });

  it('refuses an object with more members than the limit with 413, repeated keys counting each time', () => {
    expect(accepted('{"a": 1, "b": 2}', LIMITS)).toMatchObject({ kind: 'object' });
    expect(refusal('{"a": 1, "a": 2, "a": 3}', LIMITS)).toEqual({
      ok: false,
      problem: 'limit',
      status: 413,
      message: 'The JSON request body has an object with more than 2 members.',
    });
  });

  it('refuses an array with more elements than the limit with 413', () => {
    expect(accepted('[1, 2, 3]', LIMITS)).toMatchObject({ kind: 'array' });
    expect(refusal('[1, 2, 3, 4]', LIMITS)).toMatchObject({ status: 413, message: 'The JSON request body has an array with more than 3 elements.' });
  });

  it('counts every value but not object keys, and refuses one value too many with 413', () => {
    // 8 values: the outer array, two objects, two strings, a number, an empty array and null.
    expect(accepted('[{"k": "v", "n": 1}, {"e": []}, null, "s"]', { ...LIMITS, elements: 10 })).toMatchObject({ kind: 'array' });
    expect(refusal('[{"k": "v", "n": 1}, {"e": []}, null, "s", 0]', { ...LIMITS, elements: 10 })).toMatchObject({
      status: 413,
      message: 'The JSON request body has more than 8 values.',
    });
  });

  it('measures strings in UTF-16 code units of the decoded text, keys included, and refuses a longer one with 400', () => {
    expect(accepted('["abcde", "\\u00e9\\n\\t\\"\\\\", "a😀😀"]', LIMITS)).toMatchObject({ kind: 'array' });
    expect(refusal('["abcdef"]', LIMITS)).toEqual({
      ok: false,
      problem: 'limit',
      status: 400,
      message: 'The JSON request body has a string longer than 5 characters.',
    });
    expect(refusal('["😀😀😀"]', LIMITS)).toMatchObject({ status: 400 });
    expect(refusal('["\\n\\n\\n\\n\\n\\n"]', LIMITS)).toMatchObject({ status: 400 });
    expect(refusal('{"abcdef": 1}', LIMITS)).toMatchObject({ status: 400 });
  });

  it('stops at the first limit crossed, whatever follows', () => {
    expect(refusal('[1, 2, 3, 4, !!', LIMITS)).toMatchObject({ problem: 'limit', status: 413 });
    expect(refusal('"abcdef', LIMITS)).toMatchObject({ problem: 'limit', status: 400 });
    // Each piece is decoded before it is read: invalid UTF-8 in a later piece is never looked at.
    const reader = new GlanceJsonBodyReader(LIMITS, 8);
    expect(drain(reader, reader.push(bytes('[1, 2, 3, 4, 5, 6, 7, ', [0xff])))).toMatchObject({ problem: 'limit', status: 413 });
  });

  it('still answers malformed for what is malformed before any limit is crossed', () => {
    expect(refusal('[1, 2,, 3, 4, 5]', LIMITS)).toEqual(MALFORMED);
  });

  it('refuses a 16 MiB body of empty arrays at the element limit without reading it all', () => {
    const body = Buffer.alloc(16 * 1024 * 1024);
    body.fill('[],', 1);
    body[0] = 0x5b;
    expect(refusal(body)).toMatchObject({ status: 413, message: 'The JSON request body has an array with more than 16384 elements.' });
  });
});

/** A deep copy of what a node shows through its properties, getters included (a lazy node's text is one). */
function plain(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(plain);
  if (typeof value !== 'object' || value === null) return value;
  const fields = ['ok', 'document', 'kind', 'start', 'end', 'byteStart', 'byteEnd', 'key', 'value', 'text', 'members', 'elements'];
  const record = value as Record<string, unknown>;
  return Object.fromEntries(fields.filter((field) => record[field] !== undefined).map((field) => [field, plain(record[field])]));
}

/** Steps the reader until no work is pending (or it refuses), as a caller does one step per turn. */
function drain(reader: GlanceJsonBodyReader, refused: JsonBodyResult | undefined): JsonBodyResult | undefined {
  let steps = 0;
  while (refused === undefined && reader.pending()) {
    refused = reader.step();
    steps += 1;
    if (steps > 1e6) throw new Error('the reader never stops');
  }
  return refused;
}

describe('reading a body as it arrives', () => {
  const body = Buffer.from('{"name": "ü中😀\\n", "size": -12.5e3, "tags": [true, null, NaN], "x": "abcdefghijklmnopqrstuvwxyz0123456789"}');

  it('gives the same text, document and spans whatever the chunk and piece sizes', () => {
    const whole = readGlanceJsonBody(body, DEFAULT_JSON_LIMITS);
    for (let pieceBytes = 1; pieceBytes <= 9; pieceBytes += 1) {
      for (let chunkBytes = 1; chunkBytes <= 7; chunkBytes += 1) {
        const reader = new GlanceJsonBodyReader(DEFAULT_JSON_LIMITS, pieceBytes);
        for (let offset = 0; offset < body.length; offset += chunkBytes) {
          expect(reader.push(body.subarray(offset, offset + chunkBytes))).toBeUndefined();
        }
        expect(reader.end()).toEqual(whole);
      }
    }
  });

  it('returns a refusal from push as soon as a limit is crossed, and the same refusal afterwards', () => {
    const reader = new GlanceJsonBodyReader(LIMITS, 4);
    expect(drain(reader, reader.push(Buffer.from('[1, 2, ')))).toBeUndefined();
    const refused = drain(reader, reader.push(Buffer.from('3, 4, 5')));
    expect(refused).toMatchObject({ problem: 'limit', status: 413 });
    expect(reader.push(Buffer.from(']'))).toBe(refused);
    expect(reader.end()).toBe(refused);
  });

  it('refuses invalid UTF-8 split across chunks', () => {
    const reader = new GlanceJsonBodyReader(DEFAULT_JSON_LIMITS, 1);
    drain(reader, reader.push(Buffer.from('["')));
    drain(reader, reader.push(Buffer.from([0xed])));
    expect(drain(reader, reader.push(Buffer.from([0xa0, 0x80])))).toEqual(MALFORMED);
  });

  it('gathers small chunks until a piece is full before reading them', () => {
    const reader = new GlanceJsonBodyReader(LIMITS, 64);
    expect(reader.push(Buffer.from('[1, 2, 3, 4]'))).toBeUndefined();
    expect(reader.end()).toMatchObject({ problem: 'limit' });
  });

  it('reads at most one piece and at most valuesPerStep new values per step, the rest in later steps', () => {
    const unit = `${'['.repeat(31)}${']'.repeat(31)},`;
    const body = Buffer.from(`[${unit.repeat(100)}[]]`);
    const whole = readGlanceJsonBody(body, DEFAULT_JSON_LIMITS);
    expect(whole.ok).toBe(true);
    const reader = new GlanceJsonBodyReader(DEFAULT_JSON_LIMITS, 1024, { valuesPerStep: 100 });
    expect(reader.push(body)).toBeUndefined();
    expect(reader.pending()).toBe(true);
    let steps = 1;
    while (reader.pending()) {
      expect(reader.step()).toBeUndefined();
      steps += 1;
    }
    // 3202 values, at most 100 a step: at least 33 steps (the last piece is read only once closed).
    expect(steps).toBeGreaterThanOrEqual(30);
    expect(reader.close()).toBeUndefined();
    while (reader.pending()) expect(reader.step()).toBeUndefined();
    expect(reader.end()).toEqual(whole);
  });

  it('refuses at the values limit in a later step, no step starting more than valuesPerStep values', () => {
    const body = Buffer.from(`[${'[],'.repeat(20)}[]]`);
    const reader = new GlanceJsonBodyReader({ ...DEFAULT_JSON_LIMITS, values: 10 }, 1 << 20, { valuesPerStep: 4 });
    expect(reader.push(body)).toBeUndefined();
    expect(reader.close()).toBeUndefined();
    expect(reader.step()).toBeUndefined();
    expect(reader.step()).toMatchObject({ problem: 'limit', status: 413, message: 'The JSON request body has more than 10 values.' });
    expect(reader.pending()).toBe(false);
  });
});

describe('lone surrogate escapes, which Glance accepts and then cannot store', () => {
  it.each([
    ['{"stx_x": "a\\udc00b"}', '\\udc00'],
    ['{"tags": ["\\uD800"]}', '\\uD800'],
    ['{"a": "\\ud83d\\ude00", "b": "\\ud83d"}', '\\ud83d'],
    ['{"a": "\\ude00\\ud83d"}', '\\ude00'],
  ])('finds the first in %s', (body, expected) => {
    expect(findLoneSurrogateEscape(Buffer.from(body, 'utf8'))).toBe(expected);
  });
  it.each([['{"a": "\\ud83d\\ude00"}'], ['{"a": "\\\\ud800"}'], ['{"a": "\\u00e9 \\n \\\\"}'], ['{"a": "😀"}']])('finds none in %s', (body) => {
    expect(findLoneSurrogateEscape(Buffer.from(body, 'utf8'))).toBeUndefined();
  });
});
