/**
 * Reads a request body the way Glance does (Python's json module), keeping where each value sits in
 * the text so the proxy can rewrite one value and leave every other byte as the client sent it.
 *
 * Python's json accepts NaN, Infinity and -Infinity, which JSON.parse refuses; a body the proxy could
 * not read but Glance could would slip past validation, so this reader accepts them too.
 */

interface Span {
  readonly start: number;
  readonly end: number;
}

export interface JsonMember {
  readonly key: string;
  readonly value: JsonNode;
}

export type JsonNode = Span &
  (
    | { readonly kind: 'object'; readonly members: readonly JsonMember[] }
    | { readonly kind: 'array'; readonly elements: readonly JsonNode[] }
    | { readonly kind: 'string'; readonly value: string }
    | { readonly kind: 'number'; readonly text: string }
    | { readonly kind: 'boolean'; readonly value: boolean }
    | { readonly kind: 'null' }
    | { readonly kind: 'constant'; readonly text: 'NaN' | 'Infinity' | '-Infinity' }
  );

export type JsonObjectNode = Extract<JsonNode, { kind: 'object' }>;

export interface TextEdit extends Span {
  readonly text: string;
}

class Malformed extends Error {}

const ESCAPES: Readonly<Record<string, string>> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?/y;
const HEX4 = /^[0-9a-fA-F]{4}$/;
const WORDS = [
  ['true', { kind: 'boolean', value: true }],
  ['false', { kind: 'boolean', value: false }],
  ['null', { kind: 'null' }],
  ['NaN', { kind: 'constant', text: 'NaN' }],
  ['Infinity', { kind: 'constant', text: 'Infinity' }],
  ['-Infinity', { kind: 'constant', text: '-Infinity' }],
] as const;

type OpenContainer =
  | { kind: 'object'; start: number; members: JsonMember[]; key: string }
  | { kind: 'array'; start: number; elements: JsonNode[] };

/** Iterative, so that nesting depth is bounded by memory only, never by the call stack. */
class Reader {
  private index = 0;
  private readonly open: OpenContainer[] = [];

  constructor(private readonly text: string) {}

  document(): JsonNode {
    this.skipWhitespace();
    let node = this.valueOrOpen();
    for (;;) {
      if (node === undefined) {
        node = this.valueOrOpen();
        continue;
      }
      const container = this.open.at(-1);
      if (container === undefined) break;
      if (container.kind === 'object') container.members.push({ key: container.key, value: node });
      else container.elements.push(node);
      node = this.afterElement(container);
    }
    this.skipWhitespace();
    if (this.index !== this.text.length) throw new Malformed();
    return node;
  }

  /** A complete value, or undefined after opening a non-empty container (its first value comes next). */
  private valueOrOpen(): JsonNode | undefined {
    const start = this.index;
    const char = this.text.charAt(start);
    if (char === '{' || char === '[') {
      this.index += 1;
      this.skipWhitespace();
      const close = char === '{' ? '}' : ']';
      if (this.text.charAt(this.index) === close) {
        this.index += 1;
        return char === '{' ? { kind: 'object', start, members: [], end: this.index } : { kind: 'array', start, elements: [], end: this.index };
      }
      if (char === '[') {
        this.open.push({ kind: 'array', start, elements: [] });
      } else {
        this.open.push({ kind: 'object', start, members: [], key: this.memberKey() });
      }
      return undefined;
    }
    if (char === '"') return { kind: 'string', start, value: this.string(), end: this.index };
    for (const [word, node] of WORDS) {
      if (this.text.startsWith(word, start)) {
        this.index += word.length;
        return { ...node, start, end: this.index };
      }
    }
    NUMBER.lastIndex = start;
    const number = NUMBER.exec(this.text);
    if (number === null) throw new Malformed();
    this.index += number[0].length;
    return { kind: 'number', start, text: number[0], end: this.index };
  }

  /** After a member or element: the closed container, or undefined when another value follows. */
  private afterElement(container: OpenContainer): JsonNode | undefined {
    this.skipWhitespace();
    const char = this.text.charAt(this.index);
    this.index += 1;
    if (char === ',') {
      this.skipWhitespace();
      if (container.kind === 'object') container.key = this.memberKey();
      return undefined;
    }
    this.open.pop();
    if (container.kind === 'object' && char === '}') {
      return { kind: 'object', start: container.start, members: container.members, end: this.index };
    }
    if (container.kind === 'array' && char === ']') {
      return { kind: 'array', start: container.start, elements: container.elements, end: this.index };
    }
    throw new Malformed();
  }

  /** `"key"`, the colon and the whitespace around it. */
  private memberKey(): string {
    const key = this.string();
    this.skipWhitespace();
    if (this.text.charAt(this.index) !== ':') throw new Malformed();
    this.index += 1;
    this.skipWhitespace();
    return key;
  }

  private skipWhitespace(): void {
    while (this.index < this.text.length && ' \t\n\r'.includes(this.text.charAt(this.index))) this.index += 1;
  }

  private string(): string {
    if (this.text.charAt(this.index) !== '"') throw new Malformed();
    this.index += 1;
    let decoded = '';
    for (;;) {
      if (this.index >= this.text.length) throw new Malformed();
      const char = this.text.charAt(this.index);
      this.index += 1;
      if (char === '"') return decoded;
      if (char !== '\\') {
        decoded += char;
        continue;
      }
      const escape = this.text.charAt(this.index);
      this.index += 1;
      if (escape === 'u') {
        const hex = this.text.slice(this.index, this.index + 4);
        if (!HEX4.test(hex)) throw new Malformed();
        decoded += String.fromCharCode(parseInt(hex, 16));
        this.index += 4;
      } else if (Object.hasOwn(ESCAPES, escape)) {
        decoded += ESCAPES[escape];
      } else {
        throw new Malformed();
      }
    }
  }
}

/** The document Glance would decode from `text`, or undefined when Glance would answer "Malformed JSON". */
export function parseGlanceJson(text: string): JsonNode | undefined {
  try {
    return new Reader(text).document();
  } catch {
    return undefined;
  }
}

/** The member Python's dict keeps for `key`: the last one when the object repeats it. */
export function lastMember(node: JsonObjectNode, key: string): JsonNode | undefined {
  for (let index = node.members.length - 1; index >= 0; index -= 1) {
    const member = node.members[index];
    if (member !== undefined && member.key === key) return member.value;
  }
  return undefined;
}

export function applyEdits(text: string, edits: readonly TextEdit[]): string {
  let result = text;
  for (const edit of [...edits].sort((a, b) => b.start - a.start)) {
    result = result.slice(0, edit.start) + edit.text + result.slice(edit.end);
  }
  return result;
}
