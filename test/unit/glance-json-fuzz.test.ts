/**
 * Differential fuzzing of the body reader against Glance's own decoding: one Python process runs
 * glance.common.wsgi.JSONRequestDeserializer.from_json on every body, and both sides must agree on
 * accept or refuse and, when they accept, on the decoded document (last member wins, in the place of
 * the first, as in a Python dict). GLANCE_JSON_FUZZ_SEED and GLANCE_JSON_FUZZ_BODIES override the
 * defaults; a failure prints the seed, the body's number and the body.
 */
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import {
  GlanceJsonBodyReader,
  lastMember,
  parseGlanceJson,
  readGlanceJsonBody,
  type JsonBodyResult,
  type JsonLimits,
  type JsonNode,
} from '../../src/images/glance-json';

const SEED = Number(process.env.GLANCE_JSON_FUZZ_SEED ?? 20261201);
const BODIES = Number(process.env.GLANCE_JSON_FUZZ_BODIES ?? 100_000);
const BATCH = 2500;

/** Reads framed bodies (4-byte big-endian length, then the bytes; 0xFFFFFFFF asks for a flush), answers one line each. */
const ORACLE = String.raw`
import struct, sys
import webob.exc
from glance.common import wsgi
from oslo_serialization import jsonutils

deserializer = wsgi.JSONRequestDeserializer()

def canon(value):
    if value is True: return 'T'
    if value is False: return 'F'
    if value is None: return 'N'
    if isinstance(value, int): return 'i' + str(value)
    if isinstance(value, float): return 'fNaN' if value != value else 'f' + struct.pack('>d', value).hex()
    if isinstance(value, str): return 's' + value.encode('utf-16-le', 'surrogatepass').hex()
    if isinstance(value, list): return '[' + ','.join(canon(item) for item in value) + ']'
    return '{' + ','.join(canon(key) + ':' + canon(item) for key, item in value.items()) + '}'

def judge(body):
    try:
        document = deserializer.from_json(body)
    except webob.exc.HTTPBadRequest as error:
        if error.explanation == 'Malformed JSON in request body.':
            return 'M'
        if error.explanation != 'Unexpected body type. Expected list/dict.':
            return 'X ' + error.explanation
        # from_json refuses a top-level scalar after decoding it; the reader leaves that check to its caller.
        document = jsonutils.loads(body, object_hook=deserializer._sanitizer)
    except Exception as error:
        return 'X ' + type(error).__name__
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(100000)
    try:
        return 'O ' + canon(document)
    finally:
        sys.setrecursionlimit(limit)

stdin, stdout = sys.stdin.buffer, sys.stdout
while True:
    head = stdin.read(4)
    if len(head) < 4:
        break
    (size,) = struct.unpack('>I', head)
    if size == 0xFFFFFFFF:
        stdout.flush()
        continue
    stdout.write(judge(stdin.read(size)) + '\n')
`;

/** One Python process; batches may be queued, and are answered in order. */
class GlanceOracle {
  private readonly child: ChildProcessByStdio<Writable, Readable, null>;
  private buffered = '';
  private lines: string[] = [];
  private readonly waiting: Array<{ count: number; resolve: (lines: string[]) => void; reject: (error: Error) => void }> = [];

  constructor() {
    const env = { ...process.env };
    // Glance runs with CPython's default int_max_str_digits (4300); so must the oracle.
    delete env.PYTHONINTMAXSTRDIGITS;
    this.child = spawn('/usr/bin/python3', ['-c', ORACLE], { stdio: ['pipe', 'pipe', 'inherit'], env });
    this.child.once('exit', (code) => {
      for (const batch of this.waiting.splice(0)) batch.reject(new Error(`the Python oracle exited (${code})`));
    });
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (data: string) => {
      const parts = (this.buffered + data).split('\n');
      this.buffered = parts.pop() ?? '';
      this.lines.push(...parts);
      for (let batch = this.waiting[0]; batch !== undefined && this.lines.length >= batch.count; batch = this.waiting[0]) {
        this.waiting.shift();
        batch.resolve(this.lines.splice(0, batch.count));
      }
    });
  }

  judge(bodies: readonly Buffer[]): Promise<string[]> {
    const frames: Buffer[] = [];
    for (const body of bodies) {
      const head = Buffer.alloc(4);
      head.writeUInt32BE(body.length);
      frames.push(head, body);
    }
    frames.push(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    return new Promise((resolve, reject) => {
      this.waiting.push({ count: bodies.length, resolve, reject });
      this.child.stdin.write(Buffer.concat(frames));
    });
  }

  close(): void {
    this.child.stdin.end();
  }
}

/** sfc32: small, fast and deterministic. */
function randomSource(seed: number): () => number {
  let a = 0x9e3779b9;
  let b = 0x243f6a88;
  let c = 0xb7e15162;
  let d = seed >>> 0;
  const next = (): number => {
    a >>>= 0;
    b >>>= 0;
    c >>>= 0;
    d >>>= 0;
    let t = (a + b) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    d = (d + 1) | 0;
    t = (t + d) | 0;
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
  for (let i = 0; i < 16; i += 1) next();
  return next;
}

class BodyMaker {
  constructor(readonly random: () => number) {}

  int(below: number): number {
    return Math.floor(this.random() * below);
  }

  chance(probability: number): boolean {
    return this.random() < probability;
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)] as T;
  }

  whitespace(): string {
    if (this.chance(0.6)) return '';
    if (this.chance(0.03)) return this.pick(['\f', '\v', '\u00a0', '\u2028', '\u3000', '\ufeff', '\u0085', '\u1680', '\u200b', '\x1c']);
    let text = '';
    for (let count = 1 + this.int(3); count > 0; count -= 1) text += this.pick([' ', '\n', '\t', '\r']);
    return text;
  }

  digits(count: number, first = '0123456789'): string {
    let text = this.pick([...first]);
    while (text.length < count) text += String(this.int(1e9)).padStart(9, '0');
    return text.slice(0, count);
  }

  number(): string {
    const roll = this.random();
    if (roll < 0.01) return (this.chance(0.5) ? '-' : '') + this.digits(4299 + this.int(3), '123456789');
    if (roll < 0.015) return this.digits(4301 + this.int(50), '123456789') + this.pick(['.0', 'e0', 'E+1', '.5e-3']);
    if (roll < 0.05) {
      return this.pick(['01', '1.', '.5', '+1', '1e', '1e+', '0x10', '\u0661', '1\u0661', '\uff11', '1_000', '-', '--1', '1.e5', '1e5.0', '-.5', '0.0.1', '1ee5', '\u{1d7d9}']);
    }
    if (roll < 0.1) return this.pick(['1e400', '-1e400', '1e-400', '4.9e-324', '2.2250738585072014e-308', '1.7976931348623157e308', '9007199254740993', '-0', '-0.0', '0e0', '0E-0', '123456789012345678901234567890.5']);
    let text = this.chance(0.3) ? '-' : '';
    text += this.chance(0.2) ? '0' : this.digits(1 + this.int(25), '123456789');
    if (this.chance(0.3)) text += '.' + this.digits(1 + this.int(20));
    if (this.chance(0.2)) text += this.pick(['e', 'E']) + this.pick(['', '+', '-']) + this.digits(1 + this.int(4));
    return text;
  }

  unicodeEscape(): string {
    const roll = this.random();
    let unit: number;
    if (roll < 0.3) unit = 0xd800 + this.int(0x800);
    else if (roll < 0.4) return `\\u${this.hex4(0xd800 + this.int(0x400))}\\u${this.hex4(0xdc00 + this.int(0x400))}`;
    else if (roll < 0.6) unit = this.int(0x80);
    else unit = this.int(0x10000);
    return `\\u${this.hex4(unit)}`;
  }

  hex4(unit: number): string {
    const hex = unit.toString(16).padStart(4, '0');
    return this.chance(0.5) ? hex.toUpperCase() : hex;
  }

  stringContent(): string {
    let text = '';
    for (let count = this.int(12); count > 0; count -= 1) {
      const roll = this.random();
      if (roll < 0.45) text += this.pick(['a', 'b', 'name', 'cirros', ' ', '0', '/', "'", 'True', 'x'.repeat(40)]);
      else if (roll < 0.6) text += this.pick(['\\"', '\\\\', '\\/', '\\b', '\\f', '\\n', '\\r', '\\t']);
      else if (roll < 0.75) text += this.unicodeEscape();
      else if (roll < 0.9) text += this.pick(['é', 'ü', '中', '😀', '\u2028', '\ufeff', '\u007f', '\u0085', '\u00a0', 'Ā', '\ufffd', '\uffff']);
      else if (roll < 0.95) text += this.pick(['\t', '\n', '\x00', '\x1f', '\x01', '\r']);
      else text += this.pick(['\\x41', '\\u12', '\\u00g0', '\\U0041', '\\a', '\\', '\\u 123', '\\u+123', '\\\u0661234', '\\ud800\\u00zz']);
    }
    return text;
  }

  key(): string {
    if (this.chance(0.7)) return this.pick(['a', 'b', 'name', 'cache_raw', '__proto__', 'constructor', '', 'ключ', '\\u0061', 'n\\u0061me', 'a\\ud800']);
    return this.stringContent();
  }

  value(depth: number): string {
    const roll = this.random();
    if (depth < 6 && roll < 0.2) {
      const members: string[] = [];
      for (let count = this.int(6); count > 0; count -= 1) {
        members.push(`${this.whitespace()}"${this.key()}"${this.whitespace()}:${this.whitespace()}${this.value(depth + 1)}${this.whitespace()}`);
      }
      return `{${members.length === 0 ? this.whitespace() : members.join(',')}}`;
    }
    if (depth < 6 && roll < 0.4) {
      const elements: string[] = [];
      for (let count = this.int(6); count > 0; count -= 1) elements.push(`${this.whitespace()}${this.value(depth + 1)}${this.whitespace()}`);
      return `[${elements.length === 0 ? this.whitespace() : elements.join(',')}]`;
    }
    if (roll < 0.6) return `"${this.stringContent()}"`;
    if (roll < 0.8) return this.number();
    if (roll < 0.97) return this.pick(['true', 'false', 'null', 'NaN', 'Infinity', '-Infinity']);
    return this.pick(['True', 'None', 'nan', '-NaN', 'Inf', '+Infinity', 'infinity', 'nul', 'tru', '-Inf', 'undefined']);
  }

  document(): string {
    const top = this.chance(0.9) ? this.value(this.chance(0.5) ? 0 : 5) : this.value(6);
    return `${this.whitespace()}${top}${this.whitespace()}`;
  }
}

const GLANCE_BODIES = [
  '{"name": "cirros", "disk_format": "qcow2", "container_format": "bare", "visibility": "public", "min_disk": 0, "min_ram": 512, "protected": false, "tags": ["a", "b"], "cache_raw": "True", "hw_wrs_live_migration_timeout": "120", "hw_wrs_live_migration_max_downtime": "500", "sw_wrs_auto_recovery": "True"}',
  '[{"op": "replace", "path": "/cache_raw", "value": "True"}, {"op": "add", "path": "/hw_wrs_live_migration_timeout", "value": "800"}, {"op": "remove", "path": "/sw_wrs_auto_recovery"}]',
  '[{"replace": "/name", "value": "x"}, {"add": "/tags/-", "value": "t"}]',
  '{"name": "\\u00fc\u4e2d\ud83d\ude00", "id": "c6f1d0b2-1b3a-4d2e-9c1e-0a5b6c7d8e9f", "os_distro": "ubuntu", "hw_wrs_live_migration_max_downtime": 100}',
  '{"method": {"name": "web-download", "uri": "http://example.com/cirros.img"}, "stores": ["file", "ceph"], "all_stores_must_succeed": false}',
  '[{"op": "add", "path": "/locations/-", "value": {"url": "file:///var/lib/glance/images/x", "metadata": {}}}]',
  '{"cache_raw": true, "hw_wrs_live_migration_timeout": 0, "min_ram": 1.5e3, "size": 12345678901234567890}',
];

const INVALID_UTF8 = [
  [0x80],
  [0xbf],
  [0xc0, 0x80],
  [0xc1, 0xbf],
  [0xc2],
  [0xe0, 0x80, 0x80],
  [0xe0, 0x9f, 0xbf],
  [0xed, 0xa0, 0x80],
  [0xed, 0xbf, 0xbf],
  [0xe2, 0x82],
  [0xf0, 0x80, 0x80, 0x80],
  [0xf0, 0x9f, 0x98],
  [0xf4, 0x90, 0x80, 0x80],
  [0xf5, 0x80, 0x80, 0x80],
  [0xf8, 0x88, 0x80, 0x80, 0x80],
  [0xfe],
  [0xff],
];

const INSERTS = [
  '\x00', '\x01', '\x1f', '\t', '\n', '\x7f', '\ufeff', '\f', '\v', '\u00a0', '\u2028', '\u3000',
  'NaN', 'Infinity', '-Infinity', '-NaN', 'nan', ',', ':', '[', ']', '{', '}', '"', '\\', '-', '.', 'e', '0', '9',
  '\\u', '\\ud800', '\\udc00', '\\ud83d\\ude00', '\\x', '\\u00', '\u0661', '\uff11', '1'.repeat(4301), ' ', '\r\n',
];

function mutate(maker: BodyMaker, body: Buffer): Buffer {
  let bytes = body;
  for (let count = 1 + maker.int(3); count > 0; count -= 1) {
    const at = maker.int(bytes.length + 1);
    const roll = maker.random();
    if (roll < 0.15 && bytes.length > 0) {
      const copy = Buffer.from(bytes);
      const index = Math.min(at, copy.length - 1);
      copy[index] = (copy[index] as number) ^ (1 << maker.int(8));
      bytes = copy;
    } else if (roll < 0.25 && bytes.length > 0) {
      const copy = Buffer.from(bytes);
      copy[Math.min(at, copy.length - 1)] = maker.chance(0.5) ? maker.int(256) : maker.pick([0x00, 0x1f, 0x20, 0x7f, 0x80, 0xbf, 0xc0, 0xed, 0xf4, 0xff, 0x22, 0x5c, 0x5b, 0x5d, 0x7b, 0x7d, 0x2c, 0x3a]);
      bytes = copy;
    } else if (roll < 0.35) {
      bytes = bytes.subarray(0, at);
    } else if (roll < 0.45) {
      bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1 + maker.int(4))]);
    } else if (roll < 0.55) {
      bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from(maker.pick(INVALID_UTF8)), bytes.subarray(at)]);
    } else if (roll < 0.6) {
      bytes = Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), bytes]);
    } else if (roll < 0.8) {
      bytes = Buffer.concat([bytes.subarray(0, at), Buffer.from(maker.pick(INSERTS)), bytes.subarray(at)]);
    } else if (roll < 0.9) {
      const text = bytes.toString('latin1');
      const open = text.indexOf('{');
      const close = text.lastIndexOf('}');
      if (open >= 0 && maker.chance(0.5)) {
        bytes = Buffer.concat([bytes.subarray(0, open + 1), Buffer.from(`"cache_raw": ${maker.pick(['"False"', '1', 'null', '[]', 'NaN'])},`), bytes.subarray(open + 1)]);
      } else if (close > 0) {
        bytes = Buffer.concat([bytes.subarray(0, close), Buffer.from(`, "name": ${maker.pick(['"dup"', '2', '{}', '-Infinity'])}`), bytes.subarray(close)]);
      }
    } else {
      const from = maker.int(bytes.length + 1);
      const to = Math.min(bytes.length, from + maker.int(12));
      bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(from, to), bytes.subarray(at)]);
    }
  }
  return bytes;
}

function makeBody(maker: BodyMaker): Buffer {
  const roll = maker.random();
  if (roll < 0.3) return Buffer.from(maker.document());
  if (roll < 0.45) return Buffer.from(maker.pick(GLANCE_BODIES));
  if (roll < 0.75) return mutate(maker, Buffer.from(maker.pick(GLANCE_BODIES)));
  return mutate(maker, Buffer.from(maker.document()));
}

function floatCanon(value: number): string {
  if (Number.isNaN(value)) return 'fNaN';
  const bytes = Buffer.alloc(8);
  bytes.writeDoubleBE(value);
  return `f${bytes.toString('hex')}`;
}

const stringCanon = (value: string): string => `s${Buffer.from(value, 'utf16le').toString('hex')}`;

/** The same canonical dump as the oracle's: a Python dict keeps the first place and the last value of a key. */
function canon(node: JsonNode): string {
  switch (node.kind) {
    case 'object': {
      const keys = [...new Set(node.members.map((member) => member.key))];
      return `{${keys.map((key) => `${stringCanon(key)}:${canon(lastMember(node, key) as JsonNode)}`).join(',')}}`;
    }
    case 'array':
      return `[${node.elements.map(canon).join(',')}]`;
    case 'string':
      return stringCanon(node.value);
    case 'number':
      return /[.eE]/.test(node.text) ? floatCanon(Number(node.text)) : `i${BigInt(node.text).toString()}`;
    case 'boolean':
      return node.value ? 'T' : 'F';
    case 'null':
      return 'N';
    case 'constant':
      return floatCanon(node.text === 'NaN' ? NaN : node.text === 'Infinity' ? Infinity : -Infinity);
  }
}

function verdict(result: JsonBodyResult): string {
  if (result.ok) return `O ${canon(result.document)}`;
  return result.problem === 'malformed' ? 'M' : `L ${result.status} ${result.message}`;
}

interface Shape {
  depth: number;
  members: number;
  elements: number;
  values: number;
  string: number;
}

function shapeOf(document: JsonNode): Shape {
  const shape: Shape = { depth: 0, members: 0, elements: 0, values: 0, string: 0 };
  const stack: Array<[JsonNode, number]> = [[document, 0]];
  for (let entry = stack.pop(); entry !== undefined; entry = stack.pop()) {
    const [node, depth] = entry;
    shape.values += 1;
    if (node.kind === 'object' || node.kind === 'array') shape.depth = Math.max(shape.depth, depth + 1);
    if (node.kind === 'string') shape.string = Math.max(shape.string, node.value.length);
    if (node.kind === 'object') {
      shape.members = Math.max(shape.members, node.members.length);
      for (const member of node.members) {
        shape.string = Math.max(shape.string, member.key.length);
        stack.push([member.value, depth + 1]);
      }
    }
    if (node.kind === 'array') {
      shape.elements = Math.max(shape.elements, node.elements.length);
      for (const element of node.elements) stack.push([element, depth + 1]);
    }
  }
  return shape;
}

const HIGH: JsonLimits = { depth: 100000, members: 1e9, elements: 1e9, values: 1e9, string: 1e9 };
const SMALL: JsonLimits = { depth: 3, members: 3, elements: 4, values: 12, string: 10 };
const LIMIT_NAMES = ['depth', 'members', 'elements', 'values', 'string'] as const;

/** The status and the words of the refusal for crossing `limit` set to `value`. */
function refusalFor(limit: keyof JsonLimits, value: number): [400 | 413, string] {
  switch (limit) {
    case 'depth':
      return [400, `nests deeper than ${value} levels.`];
    case 'members':
      return [413, `an object with more than ${value} members.`];
    case 'elements':
      return [413, `an array with more than ${value} elements.`];
    case 'values':
      return [413, `more than ${value} values.`];
    case 'string':
      return [400, `a string longer than ${value} characters.`];
  }
}

function refusedFor(result: JsonBodyResult, limit: keyof JsonLimits, value: number): boolean {
  const [status, words] = refusalFor(limit, value);
  return !result.ok && result.problem === 'limit' && result.status === status && result.message.endsWith(words);
}

/** The body pushed in chunks of 1 to 24 bytes into a reader that decodes 1 to 16 bytes at a time. */
function readInChunks(maker: BodyMaker, body: Buffer, limits: JsonLimits): JsonBodyResult {
  // Every string is left in the bytes and decoded on demand, and a step starts at most 1 to 8 values.
  const reader = new GlanceJsonBodyReader(limits, 1 + maker.int(16), { eagerString: 0, eagerBudget: 0, valuesPerStep: 1 + maker.int(8) });
  for (let offset = 0; offset < body.length; ) {
    const size = 1 + maker.int(24);
    const refusal = reader.push(body.subarray(offset, offset + size));
    if (refusal !== undefined) return refusal;
    offset += size;
  }
  return reader.end();
}

function show(body: Buffer): string {
  return `${JSON.stringify(body.toString('latin1'))} (hex ${body.toString('hex').slice(0, 400)})`;
}

describe('the body reader against Glance (differential fuzzing)', () => {
  let oracle: GlanceOracle;
  beforeAll(() => {
    oracle = new GlanceOracle();
  });
  afterAll(() => oracle.close());

  it(`decides and decodes ${BODIES} bodies exactly as Glance's from_json does (seed ${SEED})`, async () => {
    const maker = new BodyMaker(randomSource(SEED));
    // Chunk sizes and lowered limits come from a second stream, so that the bodies depend on the seed alone.
    const chooser = new BodyMaker(randomSource(SEED ^ 0x5bd1e995));
    const tally = { accepted: 0, malformed: 0, limited: 0, containers: 0 };
    const batchFrom = (first: number): { first: number; bodies: Buffer[]; answers: Promise<string[]> } => {
      const bodies = Array.from({ length: Math.min(BATCH, BODIES - first) }, () => makeBody(maker));
      return { first, bodies, answers: oracle.judge(bodies) };
    };
    // Python judges the next batch while this side checks the current one.
    for (let batch = batchFrom(0); batch.bodies.length > 0; ) {
      const { first, bodies } = batch;
      const answers = await batch.answers;
      batch = first + BATCH < BODIES ? batchFrom(first + BATCH) : { first: BODIES, bodies: [], answers: Promise.resolve([]) };
      bodies.forEach((body, offset) => {
        const where = `seed ${SEED}, body #${first + offset}: ${show(body)}`;
        const result = readGlanceJsonBody(body, HIGH);
        const mine = verdict(result);
        if (mine !== answers[offset]) throw new Error(`Glance says ${answers[offset]?.slice(0, 300)}, the reader ${mine.slice(0, 300)}; ${where}`);

        const chunked = readInChunks(chooser, body, HIGH);
        if (verdict(chunked) !== mine) {
          throw new Error(`read in chunks: ${verdict(chunked).slice(0, 300)}; ${where}`);
        }

        if (result.ok) {
          tally.accepted += 1;
          if (result.document.kind === 'object' || result.document.kind === 'array') tally.containers += 1;
          // Reading every span again is quadratic in the depth: every fifth body is enough.
          if ((first + offset) % 5 === 0) checkSpans(body, result.document, where);
        } else {
          tally.malformed += 1;
        }
        // The old string API (lenient decoding is the caller's) agrees whenever the bytes are valid UTF-8.
        if (Buffer.from(body.toString('utf8')).equals(body)) {
          const parsed = parseGlanceJson(body.toString('utf8'));
          if ((parsed === undefined) !== !result.ok || (parsed !== undefined && `O ${canon(parsed)}` !== mine)) {
            throw new Error(`parseGlanceJson disagrees; ${where}`);
          }
        }

        if (checkLimits(chooser, body, result, where)) tally.limited += 1;
      });
    }
    // The fuzzer must keep reaching both sides of the decision, and the limits.
    expect(tally.accepted).toBeGreaterThan(BODIES * 0.2);
    expect(tally.containers).toBeGreaterThan(BODIES * 0.15);
    expect(tally.malformed).toBeGreaterThan(BODIES * 0.2);
    expect(tally.limited).toBeGreaterThan(BODIES * 0.05);
  }, 300_000);
});

/** Every value's span, read again on its own, is that value. */
function checkSpans(body: Buffer, document: JsonNode, where: string): void {
  const text = body.toString('utf8');
  const stack: JsonNode[] = [document];
  for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
    const again = parseGlanceJson(text.slice(node.start, node.end));
    if (again === undefined || canon(again) !== canon(node)) throw new Error(`span ${node.start}-${node.end} is not its value; ${where}`);
    if (body.subarray(node.byteStart, node.byteEnd).toString('utf8') !== text.slice(node.start, node.end)) {
      throw new Error(`byte span ${node.byteStart}-${node.byteEnd} is not span ${node.start}-${node.end}; ${where}`);
    }
    if (node.kind === 'object') stack.push(...node.members.map((member) => member.value));
    if (node.kind === 'array') stack.push(...node.elements);
  }
}

/**
 * Limits set exactly to the document's own shape change nothing; lowering one of them by one refuses the
 * body for that limit; under SMALL limits, a refusal names a limit the document does cross.
 */
function checkLimits(maker: BodyMaker, body: Buffer, unlimited: JsonBodyResult, where: string): boolean {
  const small = readGlanceJsonBody(body, SMALL);
  if (!unlimited.ok) {
    if (small.ok) throw new Error(`accepted under limits what is malformed; ${where}`);
    return !small.ok && small.problem === 'limit';
  }
  const shape = shapeOf(unlimited.document);
  const crossed = LIMIT_NAMES.filter((limit) => shape[limit] > SMALL[limit]);
  if (crossed.length === 0 && verdict(small) !== verdict(unlimited)) throw new Error(`within the limits, yet ${verdict(small)}; ${where}`);
  if (crossed.length > 0 && !crossed.some((limit) => refusedFor(small, limit, SMALL[limit]))) {
    throw new Error(`crosses ${crossed.join(', ')}, yet ${verdict(small)}; ${where}`);
  }

  const exact: JsonLimits = { ...shape };
  if (verdict(readGlanceJsonBody(body, exact)) !== verdict(unlimited)) throw new Error(`limits at its own shape refuse it; ${where}`);
  const lowered = maker.pick(LIMIT_NAMES.filter((limit) => shape[limit] > 0));
  const tight = readGlanceJsonBody(body, { ...exact, [lowered]: shape[lowered] - 1 });
  if (!refusedFor(tight, lowered, shape[lowered] - 1)) throw new Error(`${lowered} lowered to ${shape[lowered] - 1}, yet ${verdict(tight)}; ${where}`);
  return !small.ok && small.problem === 'limit';
}
