/**
 * Reads a request body the way Glance does, keeping where each value sits in the text so the proxy can
 * rewrite one value and leave every other byte as the client sent it.
 *
 * Glance's JSONRequestDeserializer.from_json (glance/common/wsgi.py) calls
 * `oslo_serialization.jsonutils.loads(body, object_hook=...)`: the bytes are decoded as strict UTF-8
 * (oslo_utils.encodeutils.safe_decode), then Python's json.loads reads the text with its C scanner, and
 * any ValueError becomes 400 "Malformed JSON in request body.". A body Glance accepts that the proxy
 * could not read would slip past validation, so every rule below follows Python, not JSON.parse:
 *
 * - invalid UTF-8 anywhere is malformed (UnicodeDecodeError is a ValueError); a UTF-8 byte order mark is
 *   kept by the 'utf-8' codec, and json.loads refuses text that starts with it;
 * - whitespace is exactly space, tab, LF and CR (no form feed, no NBSP, no other Unicode space);
 * - NaN, Infinity and -Infinity are values (case-sensitive; no -NaN, no +Infinity);
 * - numbers follow `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?` in ASCII digits only; an integer of
 *   more than 4300 digits is malformed, because int() refuses it (CPython's int_max_str_digits,
 *   CVE-2020-10735) with a ValueError; a float of any length is fine (it becomes inf if too big);
 * - strings refuse the control characters U+0000..U+001F (strict mode) but not U+007F; escapes are
 *   `\" \\ \/ \b \f \n \r \t \uXXXX`, and a `\u` escape may leave a lone surrogate;
 * - the top level may be any value, with only whitespace around it; an object that repeats a key keeps
 *   the last value (Python's dict), at the place of the first.
 *
 * from_json then answers "Unexpected body type. Expected list/dict." for a top-level scalar; that is the
 * caller's to decide, as is has_body (an empty body with no Transfer-Encoding is no body at all).
 * Python's scanner recurses, so a body nested about a thousand levels deep raises RecursionError, which
 * Glance answers with a 500; the depth limit refuses such bodies long before.
 */

/**
 * Where a value sits. `start`/`end` are offsets in UTF-16 code units into the decoded text (the text
 * given to parseGlanceJson, or the body's bytes decoded as UTF-8); `byteStart`/`byteEnd` are offsets
 * into the UTF-8 bytes of that same text: for GlanceJsonBodyReader, offsets into the body Buffer as
 * pushed, so the caller can rewrite the body's bytes without decoding it again; for parseGlanceJson(text),
 * offsets into Buffer.from(text) (a lone surrogate counts 3 bytes there, as Buffer.from writes U+FFFD).
 */
export interface JsonSpan {
  readonly start: number;
  readonly end: number;
  readonly byteStart: number;
  readonly byteEnd: number;
}

/**
 * A member of an object. For a body read by GlanceJsonBodyReader, a long key (or one past the reader's
 * budget of kept strings) is a getter (on the prototype, not an own property) that decodes it from the
 * body's bytes again each time it is read.
 */
export interface JsonMember {
  readonly key: string;
  readonly value: JsonNode;
}

/**
 * A value and where it sits (JsonSpan). For a body read by GlanceJsonBodyReader, the `value` of a long
 * string and the `text` of a long number (or of any past the reader's budget of kept strings, see
 * JsonReaderTuning) are getters on the node's prototype, not own properties, that decode them from the
 * body's bytes again each time they are read: the reader keeps no decoded text of the body, only the
 * nodes and views of the chunks pushed. Read them through the property (a spread or JSON.stringify of
 * such a node leaves them out), and not in a loop over a large document.
 */
export type JsonNode = JsonSpan &
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

/** Replaces `start`..`end` (UTF-16 offsets into a text) with `text`. */
export interface TextEdit {
  readonly start: number;
  readonly end: number;
  readonly text: string;
}

export interface JsonLimits {
  /** deepest nesting of arrays/objects (the top-level container is depth 1) */
  depth: number;
  /** most members in one object */
  members: number;
  /** most elements in one array */
  elements: number;
  /** most values in the whole document (every string, number, literal, array and object counts 1; object keys do not count) */
  values: number;
  /** longest string (key or value), in UTF-16 code units of the decoded string */
  string: number;
}

export const DEFAULT_JSON_LIMITS: JsonLimits = { depth: 32, members: 4096, elements: 16384, values: 65536, string: 65535 };

export type JsonBodyResult =
  /**
   * `text` is no longer filled by GlanceJsonBodyReader (the reader keeps no decoded text of the body):
   * use the nodes' byteStart/byteEnd on the body Buffer instead. Kept optional for older callers.
   */
  | { ok: true; text?: string; document: JsonNode }
  /** Glance would answer 400 "Malformed JSON in request body." */
  | { ok: false; problem: 'malformed'; message: string }
  /** A limit was crossed; `message` is a Glance-style sentence naming the limit and its value. */
  | { ok: false; problem: 'limit'; status: 400 | 413; message: string };

export type JsonBodyRefusal = Extract<JsonBodyResult, { ok: false }>;

/** Glance's explanation for a body its JSON decoder refuses (JSONRequestDeserializer.from_json). */
export const MALFORMED_JSON_MESSAGE = 'Malformed JSON in request body.';

/** CPython's default sys.get_int_max_str_digits(): int() refuses longer decimal strings. */
const PYTHON_INT_MAX_STR_DIGITS = 4300;

const NO_LIMITS: JsonLimits = { depth: Infinity, members: Infinity, elements: Infinity, values: Infinity, string: Infinity };

const MALFORMED: JsonBodyRefusal = Object.freeze({ ok: false, problem: 'malformed', message: MALFORMED_JSON_MESSAGE });

const QUOTE = 0x22;
const BACKSLASH = 0x5c;

// What the scanner waits for between tokens.
const EXPECT_VALUE = 0; // at the top, after ':' and after ',' in an array
const EXPECT_VALUE_OR_CLOSE = 1; // after '['
const EXPECT_KEY_OR_CLOSE = 2; // after '{'
const EXPECT_KEY = 3; // after ',' in an object
const EXPECT_COLON = 4; // after a key
const EXPECT_COMMA_OR_CLOSE = 5; // after an element or a member
const EXPECT_END = 6; // after the top-level value

// The token in progress, which may run over the end of one piece of text into the next.
const TOKEN_NONE = 0;
const TOKEN_STRING = 1;
const TOKEN_NUMBER = 2;
const TOKEN_WORD = 3;

// Where a number is in `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?`.
const NUMBER_SIGN = 0; // after '-': a digit must follow ('I' turns it into -Infinity)
const NUMBER_ZERO = 1; // integer part "0": no more digits
const NUMBER_INTEGER = 2;
const NUMBER_POINT = 3; // after '.': a digit must follow
const NUMBER_FRACTION = 4;
const NUMBER_E = 5; // after 'e': a sign or a digit must follow
const NUMBER_EXPONENT_SIGN = 6; // a digit must follow
const NUMBER_EXPONENT = 7;

// Inside a string: no escape, just after '\', or after '\u' and some hex digits.
const ESCAPE_NONE = -2;
const ESCAPE_STARTED = -1;
// 0..3: hex digits read so far after '\u'

const SIMPLE_ESCAPES: Readonly<Record<number, number>> = {
  0x22: 0x22, // \"
  0x5c: 0x5c, // \\
  0x2f: 0x2f, // \/
  0x62: 0x08, // \b
  0x66: 0x0c, // \f
  0x6e: 0x0a, // \n
  0x72: 0x0d, // \r
  0x74: 0x09, // \t
};

type WordNode = Extract<JsonNode, { kind: 'boolean' | 'null' | 'constant' }>;
type Word = 'true' | 'false' | 'null' | 'NaN' | 'Infinity' | '-Infinity';

const WORD_STARTS: Readonly<Record<number, Word>> = { 0x74: 'true', 0x66: 'false', 0x6e: 'null', 0x4e: 'NaN', 0x49: 'Infinity' };

function wordNode(word: Word, start: number, byteStart: number): WordNode {
  // Words are ASCII: as many bytes as code units.
  const end = start + word.length;
  const byteEnd = byteStart + word.length;
  switch (word) {
    case 'true':
      return { kind: 'boolean', value: true, start, end, byteStart, byteEnd };
    case 'false':
      return { kind: 'boolean', value: false, start, end, byteStart, byteEnd };
    case 'null':
      return { kind: 'null', start, end, byteStart, byteEnd };
    default:
      return { kind: 'constant', text: word, start, end, byteStart, byteEnd };
  }
}

function hexDigitValue(char: number): number {
  if (char >= 0x30 && char <= 0x39) return char - 0x30;
  if (char >= 0x61 && char <= 0x66) return char - 0x57;
  if (char >= 0x41 && char <= 0x46) return char - 0x37;
  return -1;
}

function isDigit(char: number): boolean {
  return char >= 0x30 && char <= 0x39;
}

// Every empty container shares these: a body of many `[]` or `{}` then costs one small node each.
const NO_ELEMENTS: readonly JsonNode[] = Object.freeze([]);
const NO_MEMBERS: readonly JsonMember[] = Object.freeze([]);

/**
 * Thrown from deep in the scanner to its entry points, which always catch it. Not an Error: a stack
 * trace would cost more than the whole refusal, and nothing outside this module ever sees it.
 */
class Refused {
  constructor(readonly refusal: JsonBodyRefusal) {}
}

function limitCrossed(status: 400 | 413, message: string): never {
  throw new Refused({ ok: false, problem: 'limit', status, message });
}

function malformed(): never {
  throw new Refused(MALFORMED);
}

/** Runs of plain characters shorter than this are copied as code units, so `"\na\na..."` builds no tiny strings. */
const SHORT_RUN = 32;
/** Code units turned into a string at once (an argument list, so kept well below engine limits). */
const UNIT_BATCH = 8192;
/** Distances the byte cursor counts char by char; longer ones are measured natively (Buffer.byteLength). */
const SHORT_MEASURE = 64;

/** The character after `\` in an escape, by its decoded code unit (the inverse is SIMPLE_ESCAPES). */
function unescapeJson(raw: string): string {
  let at = raw.indexOf('\\');
  if (at < 0) return raw;
  let result = '';
  let from = 0;
  while (at >= 0) {
    result += raw.slice(from, at);
    const char = raw.charCodeAt(at + 1);
    if (char === 0x75) {
      result += String.fromCharCode(parseInt(raw.slice(at + 2, at + 6), 16));
      from = at + 6;
    } else {
      result += String.fromCharCode(SIMPLE_ESCAPES[char] as number);
      from = at + 2;
    }
    at = raw.indexOf('\\', from);
  }
  return result + raw.slice(from);
}

/** Code units being copied by detached(). */
const detachUnits: number[] = [];

/**
 * A string of its own characters: V8 keeps a slice of a piece (or a `+` of slices) pointing into the
 * piece, which would keep the whole piece alive as long as the node. Slices shorter than 13 units are
 * copies already; longer ones are built again from their code units, into a flat string that is
 * one-byte whenever the characters allow, even when the piece was two-byte.
 */
function detached(value: string): string {
  if (value.length < 13) return value;
  let result = '';
  for (let from = 0; from < value.length; from += UNIT_BATCH) {
    const to = Math.min(value.length, from + UNIT_BATCH);
    for (let index = from; index < to; index += 1) detachUnits.push(value.charCodeAt(index));
    result += String.fromCharCode.apply(null, detachUnits);
    detachUnits.length = 0;
  }
  return result;
}

/**
 * The bytes of the body as pushed, kept as the chunks themselves (views, never copies), so that a string
 * left undecoded can be decoded again on demand. The caller must not change a chunk after pushing it.
 */
class BodyBytes {
  private readonly chunks: Buffer[] = [];
  /** Offset in the body of each chunk's first byte. */
  private readonly offsets: number[] = [];
  private length = 0;

  add(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.offsets.push(this.length);
    this.length += chunk.length;
  }

  clear(): void {
    this.chunks.length = 0;
    this.offsets.length = 0;
  }

  /** The body's bytes `start`..`end`, as a view when they lie in one chunk. */
  slice(start: number, end: number): Buffer {
    let low = 0;
    let high = this.offsets.length - 1;
    while (low < high) {
      const middle = (low + high + 1) >> 1;
      if ((this.offsets[middle] as number) <= start) low = middle;
      else high = middle - 1;
    }
    const parts: Buffer[] = [];
    for (let index = low; index < this.chunks.length && (this.offsets[index] as number) < end; index += 1) {
      const offset = this.offsets[index] as number;
      const chunk = this.chunks[index] as Buffer;
      parts.push(chunk.subarray(Math.max(0, start - offset), Math.min(chunk.length, end - offset)));
    }
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
  }

  /** The decoded value of the JSON string whose quotes are at byteStart and byteEnd - 1 (already validated). */
  stringAt(byteStart: number, byteEnd: number): string {
    return unescapeJson(this.slice(byteStart + 1, byteEnd - 1).toString('utf8'));
  }
}

/**
 * How the scanner keeps the strings it decodes. Without it (parseGlanceJson) every string is a slice
 * of the caller's text. With it, a string of at most `eagerString` units is kept as a copy of its own
 * while the copies total at most `eagerBudget` units; any other is left in the body's bytes and decoded
 * on demand, so that the nodes of a 16 MiB body never hold its text a second time.
 */
interface StringKeeping {
  readonly bytes: BodyBytes;
  readonly eagerString: number;
  readonly eagerBudget: number;
}

/** A key left in the body's bytes (see StringKeeping). */
interface LazyKey {
  readonly byteStart: number;
  readonly byteEnd: number;
  readonly units: number;
}

// Nodes whose text is left in the body's bytes: a getter on the class decodes it on each read. Classes,
// not accessors defined on each object, so that each costs a few words (there may be 65,536 of them).
// The getter is not an own property: a spread or JSON.stringify of such a node leaves the text out.

/** The span of a value whose text stays in the body's bytes. */
abstract class LazySpan {
  readonly #bytes: BodyBytes;
  constructor(
    readonly start: number,
    readonly end: number,
    readonly byteStart: number,
    readonly byteEnd: number,
    bytes: BodyBytes,
  ) {
    this.#bytes = bytes;
  }
  protected get bytes(): BodyBytes {
    return this.#bytes;
  }
}

class LazyStringNode extends LazySpan {
  readonly kind = 'string' as const;
  get value(): string {
    return this.bytes.stringAt(this.byteStart, this.byteEnd);
  }
}

class LazyNumberNode extends LazySpan {
  readonly kind = 'number' as const;
  get text(): string {
    return this.bytes.slice(this.byteStart, this.byteEnd).toString('latin1');
  }
}

class LazyMember {
  readonly #bytes: BodyBytes;
  readonly #key: LazyKey;
  constructor(
    key: LazyKey,
    readonly value: JsonNode,
    bytes: BodyBytes,
  ) {
    this.#key = key;
    this.#bytes = bytes;
  }
  get key(): string {
    return this.#bytes.stringAt(this.#key.byteStart, this.#key.byteEnd);
  }
  /** The key's length in UTF-16 units, so lastMember can pass a key it is not after without decoding it. */
  get keyUnits(): number {
    return this.#key.units;
  }
}

/**
 * Python's json grammar as a state machine over pieces of text, so that a body can be read as it arrives.
 * Iterative: nesting costs one entry in the `open*` stacks, never a stack frame. Work is linear in the
 * text, and the limits are checked when a value, member or element starts, before anything is built.
 *
 * Memory is what the limits bound, so nodes are kept small: the elements and members of open containers
 * wait on two shared stacks, and a container takes an array of exactly its own size when it closes.
 *
 * A piece is loaded, then run, possibly in several calls each starting at most a given number of values.
 */
class JsonScanner {
  /** Offset in the whole text of the current piece's first character. */
  private base = 0;
  /** Offset in the whole UTF-8 bytes of the current piece's first character. */
  private byteBase = 0;
  /** The current piece, and where in it scanning resumes. */
  private piece = '';
  private index = 0;
  /** A byte cursor in the current piece: the character at cursorIndex starts at byte cursorByte. */
  private cursorIndex = 0;
  private cursorByte = 0;

  private expect = EXPECT_VALUE;
  private values = 0;
  private document: JsonNode | undefined;
  /** Code units of the strings kept as copies so far (see StringKeeping). */
  private eagerUnits = 0;

  // One entry per open container, innermost last.
  private readonly openStart: number[] = [];
  private readonly openByteStart: number[] = [];
  private readonly openIsObject: boolean[] = [];
  /** Height of elementStack or memberStack when the container opened: its children are above it. */
  private readonly openHeight: number[] = [];
  /** The key of the member whose value is being read (objects only). */
  private readonly openKey: Array<string | LazyKey> = [];
  private readonly elementStack: JsonNode[] = [];
  private readonly memberStack: JsonMember[] = [];

  private token = TOKEN_NONE;
  /** Offset in the whole text (and bytes) where the token in progress starts. */
  private tokenStart = 0;
  private tokenByteStart = 0;

  private stringIsKey = false;
  private stringLength = 0;
  private escape = ESCAPE_NONE;
  private escapeUnit = 0;
  /**
   * The string's decoded text so far, when it cannot be one slice of one piece: joined with `+`, which
   * V8 keeps as a rope of slices of the pieces, so a string across pieces costs no copy.
   */
  private stringHead = '';
  /** Code units (from escapes and short runs) not yet added to stringHead. */
  private readonly stringUnits: number[] = [];

  private numberState = NUMBER_SIGN;
  private integerDigits = 0;
  /** The number's text from earlier pieces (a number may be megabytes of digits). */
  private numberHead = '';

  private word: Word = 'true';
  private wordMatched = 0;

  constructor(
    private readonly limits: JsonLimits,
    private readonly keeping?: StringKeeping,
  ) {}

  /** Reads a whole piece of the text at once; throws Refused when the text is refused. */
  feed(piece: string): void {
    this.load(piece);
    this.run(Infinity);
  }

  /** Makes `piece` the next piece to run. The previous one must have been run to its end. */
  load(piece: string): void {
    this.piece = piece;
    this.index = 0;
    this.cursorIndex = 0;
    this.cursorByte = this.byteBase;
  }

  /**
   * Reads on in the current piece, starting at most `maxValues` new values; true once the piece is read
   * to its end. Throws Refused when the text is refused.
   */
  run(maxValues: number): boolean {
    const piece = this.piece;
    const length = piece.length;
    const stopAt = this.values + maxValues;
    let index = this.index;
    while (index < length) {
      if (this.token !== TOKEN_NONE) {
        index = this.continueToken(piece, index);
        continue;
      }
      const char = piece.charCodeAt(index);
      // Python's json skips exactly these four: no form feed, no vertical tab, no Unicode spaces.
      if (char === 0x20 || char === 0x0a || char === 0x0d || char === 0x09) {
        index += 1;
        continue;
      }
      if (this.values >= stopAt) {
        this.index = index;
        return false;
      }
      index = this.structural(index, char);
    }
    this.index = length;
    if (this.token === TOKEN_NUMBER && !this.numberTooLongToKeep(this.base + length - this.tokenStart)) {
      this.numberHead += piece.slice(Math.max(0, this.tokenStart - this.base));
    }
    this.base += length;
    this.byteBase = this.cursorIndex === length ? this.cursorByte : this.cursorByte + Buffer.byteLength(piece.slice(this.cursorIndex));
    this.piece = '';
    this.index = 0;
    this.cursorIndex = 0;
    this.cursorByte = this.byteBase;
    return true;
  }

  /** The document, once the whole text has been fed; throws Refused when the text is refused. */
  finish(): JsonNode {
    if (this.token === TOKEN_NUMBER) this.endNumber('', this.base);
    else if (this.token !== TOKEN_NONE) malformed();
    if (this.expect !== EXPECT_END || this.document === undefined) malformed();
    return this.document;
  }

  /**
   * Offset in the whole bytes of the current piece's character `index`. Only asked for at the start or
   * end of a token, so in increasing order and never inside a surrogate pair: the cursor moves forward.
   */
  private byteAt(index: number): number {
    const piece = this.piece;
    let at = this.cursorIndex;
    let bytes = this.cursorByte;
    if (index - at > SHORT_MEASURE) {
      bytes += Buffer.byteLength(piece.slice(at, index));
    } else {
      for (; at < index; at += 1) {
        const char = piece.charCodeAt(at);
        if (char < 0x80) bytes += 1;
        else if (char < 0x800) bytes += 2;
        else if (char >= 0xd800 && char <= 0xdbff && at + 1 < index && (piece.charCodeAt(at + 1) & 0xfc00) === 0xdc00) {
          // A surrogate pair: one four-byte sequence. (A lone surrogate is written as U+FFFD, three bytes.)
          bytes += 4;
          at += 1;
        } else bytes += 3;
      }
    }
    this.cursorIndex = index;
    this.cursorByte = bytes;
    return bytes;
  }

  private structural(index: number, char: number): number {
    switch (this.expect) {
      case EXPECT_VALUE_OR_CLOSE:
        if (char === 0x5d) {
          this.close(index);
          return index + 1;
        }
        return this.startValue(index, char);
      case EXPECT_VALUE:
        return this.startValue(index, char);
      case EXPECT_KEY_OR_CLOSE:
        if (char === 0x7d) {
          this.close(index);
          return index + 1;
        }
        return this.startKey(index, char);
      case EXPECT_KEY:
        return this.startKey(index, char);
      case EXPECT_COLON:
        if (char !== 0x3a) malformed();
        this.expect = EXPECT_VALUE;
        return index + 1;
      case EXPECT_COMMA_OR_CLOSE: {
        const isObject = this.openIsObject[this.openIsObject.length - 1];
        if (char === 0x2c) this.expect = isObject ? EXPECT_KEY : EXPECT_VALUE;
        else if (char === (isObject ? 0x7d : 0x5d)) this.close(index);
        else malformed();
        return index + 1;
      }
      default:
        // After the top-level value only whitespace may follow ("Extra data").
        return malformed();
    }
  }

  private startKey(index: number, char: number): number {
    if (char !== QUOTE) malformed();
    if (this.memberStack.length - (this.openHeight[this.openHeight.length - 1] as number) >= this.limits.members) {
      limitCrossed(413, `The JSON request body has an object with more than ${this.limits.members} members.`);
    }
    this.startString(true, index);
    return index + 1;
  }

  private startValue(index: number, char: number): number {
    const at = this.base + index;
    if (char === 0x5b || char === 0x7b) {
      this.countValue();
      if (this.openStart.length >= this.limits.depth) {
        limitCrossed(400, `The JSON request body nests deeper than ${this.limits.depth} levels.`);
      }
      const isObject = char === 0x7b;
      this.openStart.push(at);
      this.openByteStart.push(this.byteAt(index));
      this.openIsObject.push(isObject);
      this.openHeight.push(isObject ? this.memberStack.length : this.elementStack.length);
      this.openKey.push('');
      this.expect = isObject ? EXPECT_KEY_OR_CLOSE : EXPECT_VALUE_OR_CLOSE;
      return index + 1;
    }
    if (char === QUOTE) {
      this.countValue();
      this.startString(false, index);
      return index + 1;
    }
    if (char === 0x2d || isDigit(char)) {
      this.countValue();
      this.token = TOKEN_NUMBER;
      this.tokenStart = at;
      this.tokenByteStart = this.byteAt(index);
      this.numberHead = '';
      this.integerDigits = 0;
      this.numberState = NUMBER_SIGN;
      // A leading digit is read again by continueNumber, which sees it after an (absent) sign.
      return char === 0x2d ? index + 1 : index;
    }
    const word = WORD_STARTS[char];
    if (word === undefined) malformed();
    this.countValue();
    this.token = TOKEN_WORD;
    this.tokenStart = at;
    this.tokenByteStart = this.byteAt(index);
    this.word = word;
    this.wordMatched = 1;
    return index + 1;
  }

  /** A value starts here: count it against the values limit, and against its array's elements limit. */
  private countValue(): void {
    this.values += 1;
    if (this.values > this.limits.values) {
      limitCrossed(413, `The JSON request body has more than ${this.limits.values} values.`);
    }
    const depth = this.openIsObject.length;
    if (depth > 0 && this.openIsObject[depth - 1] === false && this.elementStack.length - (this.openHeight[depth - 1] as number) >= this.limits.elements) {
      limitCrossed(413, `The JSON request body has an array with more than ${this.limits.elements} elements.`);
    }
  }

  private close(index: number): void {
    const start = this.openStart.pop() as number;
    const byteStart = this.openByteStart.pop() as number;
    const height = this.openHeight.pop() as number;
    this.openKey.pop();
    const end = this.base + index + 1;
    const byteEnd = this.byteAt(index) + 1;
    if (this.openIsObject.pop() === true) {
      const members = height === this.memberStack.length ? NO_MEMBERS : this.memberStack.slice(height);
      this.memberStack.length = height;
      this.complete({ kind: 'object', start, members, end, byteStart, byteEnd });
    } else {
      const elements = height === this.elementStack.length ? NO_ELEMENTS : this.elementStack.slice(height);
      this.elementStack.length = height;
      this.complete({ kind: 'array', start, elements, end, byteStart, byteEnd });
    }
  }

  private complete(node: JsonNode): void {
    const depth = this.openIsObject.length;
    if (depth === 0) {
      this.document = node;
      this.expect = EXPECT_END;
      return;
    }
    if (this.openIsObject[depth - 1] === true) this.memberStack.push(this.member(this.openKey[depth - 1] as string | LazyKey, node));
    else this.elementStack.push(node);
    this.expect = EXPECT_COMMA_OR_CLOSE;
  }

  private member(key: string | LazyKey, value: JsonNode): JsonMember {
    if (typeof key === 'string') return { key, value };
    return new LazyMember(key, value, (this.keeping as StringKeeping).bytes);
  }

  private continueToken(piece: string, index: number): number {
    switch (this.token) {
      case TOKEN_STRING:
        return this.continueString(piece, index);
      case TOKEN_NUMBER:
        return this.continueNumber(piece, index);
      default:
        return this.continueWord(piece, index);
    }
  }

  private startString(isKey: boolean, index: number): void {
    this.token = TOKEN_STRING;
    this.tokenStart = this.base + index;
    this.tokenByteStart = this.byteAt(index);
    this.stringIsKey = isKey;
    this.stringLength = 0;
    this.escape = ESCAPE_NONE;
    this.stringHead = '';
  }

  private continueString(piece: string, index: number): number {
    const length = piece.length;
    const limit = this.limits.string;
    while (index < length) {
      if (this.escape !== ESCAPE_NONE) {
        index = this.continueEscape(piece, index);
        continue;
      }
      const runStart = index;
      // No further than one character past what the string length limit allows: refuse early.
      const stop = Math.min(length, index + (limit - this.stringLength) + 1);
      let char = 0;
      while (index < stop) {
        char = piece.charCodeAt(index);
        if (char === QUOTE || char === BACKSLASH || char < 0x20) break;
        index += 1;
      }
      this.stringLength += index - runStart;
      if (this.stringLength > limit) this.stringTooLong();
      if (index === length) {
        this.appendRun(piece, runStart, index);
        return index;
      }
      if (char === QUOTE) {
        this.endString(piece, runStart, index);
        return index + 1;
      }
      // strict=True: Python refuses raw control characters inside strings ("Invalid control character").
      if (char !== BACKSLASH) malformed();
      this.appendRun(piece, runStart, index);
      this.escape = ESCAPE_STARTED;
      index += 1;
    }
    return index;
  }

  private continueEscape(piece: string, index: number): number {
    const char = piece.charCodeAt(index);
    if (this.escape === ESCAPE_STARTED) {
      if (char === 0x75) {
        this.escape = 0;
        this.escapeUnit = 0;
        return index + 1;
      }
      const unit = SIMPLE_ESCAPES[char];
      if (unit === undefined) malformed();
      this.escaped(unit);
      return index + 1;
    }
    // Python reads exactly four of 0-9, a-f, A-F (no sign, no space, no other digits).
    const digit = hexDigitValue(char);
    if (digit < 0) malformed();
    this.escapeUnit = this.escapeUnit * 16 + digit;
    this.escape += 1;
    // Python joins \uD83D\uDE00 into one code point and keeps a lone surrogate as it is; in UTF-16 both
    // are the same code units, so each escape stands for exactly one unit here.
    if (this.escape === 4) this.escaped(this.escapeUnit);
    return index + 1;
  }

  private escaped(unit: number): void {
    this.escape = ESCAPE_NONE;
    this.stringLength += 1;
    if (this.stringLength > this.limits.string) this.stringTooLong();
    this.stringUnits.push(unit);
    if (this.stringUnits.length >= UNIT_BATCH) this.flushUnits();
  }

  private stringTooLong(): never {
    return limitCrossed(400, `The JSON request body has a string longer than ${this.limits.string} characters.`);
  }

  /** Adds piece[start, end) to the string's decoded text: runs without escapes are slices, never char by char. */
  private appendRun(piece: string, start: number, end: number): void {
    if (end - start >= SHORT_RUN) {
      this.flushUnits();
      this.stringHead += piece.slice(start, end);
      return;
    }
    for (let index = start; index < end; index += 1) this.stringUnits.push(piece.charCodeAt(index));
    if (this.stringUnits.length >= UNIT_BATCH) this.flushUnits();
  }

  private flushUnits(): void {
    if (this.stringUnits.length === 0) return;
    this.stringHead += String.fromCharCode.apply(null, this.stringUnits);
    this.stringUnits.length = 0;
  }

  private endString(piece: string, runStart: number, quote: number): void {
    const start = this.tokenStart;
    const byteStart = this.tokenByteStart;
    const byteEnd = this.byteAt(quote) + 1;
    const keeping = this.keeping;
    const units = this.stringLength;
    let value: string | undefined;
    if (keeping !== undefined && (units > keeping.eagerString || this.eagerUnits + units > keeping.eagerBudget)) {
      // Left in the body's bytes, decoded on demand.
      this.stringUnits.length = 0;
      this.stringHead = '';
    } else {
      if (runStart === start + 1 - this.base) {
        // The whole string is this run: one slice of the piece, which shares its characters.
        value = piece.slice(runStart, quote);
      } else {
        this.appendRun(piece, runStart, quote);
        this.flushUnits();
        value = this.stringHead;
        this.stringHead = '';
      }
      if (keeping !== undefined) {
        this.eagerUnits += units;
        value = detached(value);
      }
    }
    this.token = TOKEN_NONE;
    if (this.stringIsKey) {
      this.openKey[this.openKey.length - 1] = value ?? { byteStart, byteEnd, units };
      this.expect = EXPECT_COLON;
      return;
    }
    const end = this.base + quote + 1;
    if (value !== undefined) {
      this.complete({ kind: 'string', start, value, end, byteStart, byteEnd });
      return;
    }
    this.complete(new LazyStringNode(start, end, byteStart, byteEnd, (keeping as StringKeeping).bytes));
  }

  private continueNumber(piece: string, index: number): number {
    const length = piece.length;
    let state = this.numberState;
    let integerDigits = this.integerDigits;
    for (; index < length; index += 1) {
      const char = piece.charCodeAt(index);
      if (isDigit(char)) {
        if (state === NUMBER_INTEGER) {
          integerDigits += 1;
          continue;
        }
        if (state === NUMBER_SIGN) {
          state = char === 0x30 ? NUMBER_ZERO : NUMBER_INTEGER;
          integerDigits = 1;
          continue;
        }
        if (state === NUMBER_FRACTION || state === NUMBER_EXPONENT) continue;
        if (state === NUMBER_POINT) {
          state = NUMBER_FRACTION;
          continue;
        }
        if (state === NUMBER_E || state === NUMBER_EXPONENT_SIGN) {
          state = NUMBER_EXPONENT;
          continue;
        }
        // After a leading zero a digit ends the number, and then cannot follow it: refused below.
      } else if (char === 0x2e && (state === NUMBER_ZERO || state === NUMBER_INTEGER)) {
        state = NUMBER_POINT;
        continue;
      } else if ((char === 0x65 || char === 0x45) && (state === NUMBER_ZERO || state === NUMBER_INTEGER || state === NUMBER_FRACTION)) {
        state = NUMBER_E;
        continue;
      } else if ((char === 0x2b || char === 0x2d) && state === NUMBER_E) {
        state = NUMBER_EXPONENT_SIGN;
        continue;
      } else if (char === 0x49 && state === NUMBER_SIGN) {
        // Python's scanner reads "-Infinity" as a constant before trying a number.
        this.token = TOKEN_WORD;
        this.word = '-Infinity';
        this.wordMatched = 2;
        return index + 1;
      }
      break;
    }
    this.numberState = state;
    this.integerDigits = integerDigits;
    if (index < length) this.endNumber(piece.slice(Math.max(0, this.tokenStart - this.base), index), this.base + index);
    return index;
  }

  /** `tail` is the number's text in the current piece, `end` the offset just after it in the whole text. */
  private endNumber(tail: string, end: number): void {
    const state = this.numberState;
    // Python backtracks over a '.' or 'e' that no digit follows, but the character left over can never
    // follow a value, so refusing at once gives the same answer; a lone '-' is no value at all.
    if (state !== NUMBER_ZERO && state !== NUMBER_INTEGER && state !== NUMBER_FRACTION && state !== NUMBER_EXPONENT) malformed();
    // int() refuses a decimal string longer than sys.get_int_max_str_digits() with a ValueError.
    if ((state === NUMBER_ZERO || state === NUMBER_INTEGER) && this.integerDigits > PYTHON_INT_MAX_STR_DIGITS) malformed();
    const start = this.tokenStart;
    const byteStart = this.tokenByteStart;
    // Numbers are ASCII: as many bytes as code units.
    const byteEnd = byteStart + (end - start);
    const head = this.numberHead;
    this.numberHead = '';
    this.token = TOKEN_NONE;
    const keeping = this.keeping;
    if (keeping !== undefined && (this.numberTooLongToKeep(end - start) || this.eagerUnits + (end - start) > keeping.eagerBudget)) {
      // Left in the body's bytes (a number may be megabytes of digits), read on demand.
      this.complete(new LazyNumberNode(start, end, byteStart, byteEnd, keeping.bytes));
      return;
    }
    let text = head + tail;
    if (keeping !== undefined) {
      this.eagerUnits += end - start;
      // A number over earlier pieces is a rope of their slices: kept, it would keep them alive.
      if (head.length > 0) text = detached(text);
    }
    this.complete({ kind: 'number', start, text, end, byteStart, byteEnd });
  }

  /** Whether a number of `units` characters is left in the body's bytes rather than kept as text. */
  private numberTooLongToKeep(units: number): boolean {
    return this.keeping !== undefined && units > this.keeping.eagerString;
  }

  private continueWord(piece: string, index: number): number {
    const word = this.word;
    const length = piece.length;
    while (index < length && this.wordMatched < word.length) {
      // Python compares the letters exactly: no "nan", no "True".
      if (piece.charCodeAt(index) !== word.charCodeAt(this.wordMatched)) malformed();
      this.wordMatched += 1;
      index += 1;
    }
    if (this.wordMatched === word.length) {
      this.token = TOKEN_NONE;
      this.complete(wordNode(word, this.tokenStart, this.tokenByteStart));
    }
    return index;
  }
}

/**
 * Bytes decoded and read per step by default. V8 puts a string over 128 KiB straight into its
 * large-object space; smaller pieces would be copied by every young-generation collection, and on a
 * small VM with slow page faults, 64 KiB pieces made steps of over 100 ms (bench/hostile-json.js).
 */
const DEFAULT_PIECE_BYTES = 256 * 1024;

/** How the reader paces itself and keeps strings; the defaults suit the proxy (tests lower them). */
export interface JsonReaderTuning {
  /**
   * Most new values one step starts (a step also reads at most one piece): 65,536 tiny values fit in
   * one 256 KiB piece (`[[[...]]],` 32 deep, 133 KB) and took 100-200 ms to build in one step.
   */
  valuesPerStep: number;
  /** Longest string key or value (and number), in UTF-16 units, kept decoded in its node; longer ones are decoded on demand. */
  eagerString: number;
  /**
   * Most UTF-16 units of strings and numbers kept decoded in all; past it, every one is decoded on
   * demand. Bounds what the nodes hold besides themselves to 2 MiB, whatever the body.
   */
  eagerBudget: number;
}

export const DEFAULT_READER_TUNING: JsonReaderTuning = { valuesPerStep: 4096, eagerString: 1024, eagerBudget: 1 << 20 };

/**
 * Reads a request body as it arrives, in steps that each cost at most one piece of `pieceBytes` bytes
 * and at most `valuesPerStep` new values: a 16 MiB body read in one synchronous call holds the event
 * loop for longer than 100 ms (decoding it alone can take that on a small VM), and so can 65,536 tiny
 * values in one piece. Smaller chunks are gathered into whole pieces, so a client trickling single bytes
 * cannot turn the text into millions of tiny strings either.
 *
 * Pacing, one step per turn of the event loop:
 *
 *     let refused = reader.push(chunk);            // for each chunk: one step
 *     while (!refused && reader.pending()) {       // work left over: one step per turn
 *       await new Promise((resolve) => setImmediate(resolve));
 *       refused = reader.step();
 *     }
 *     // after the last chunk:
 *     refused = reader.close();                    // the rest of the bytes are the last piece
 *     while (!refused && reader.pending()) { await nextTurn(); refused = reader.step(); }
 *     const result = reader.end();                 // the verdict; no work is left for it
 *
 * end() may also be called at any time: it does all the work left in one call.
 *
 * The reader keeps no decoded text of the body: a piece's text is dropped once the piece is read. It
 * keeps the pushed chunks themselves (views, not copies) until the nodes are dropped, so that long
 * strings can be decoded on demand from them (see JsonNode): a chunk must not change once pushed.
 */
export class GlanceJsonBodyReader {
  private readonly scanner: JsonScanner;
  // ignoreBOM keeps a leading U+FEFF in the text, as Python's 'utf-8' codec does, so json refuses it.
  private readonly decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  private readonly bytes = new BodyBytes();
  private readonly tuning: JsonReaderTuning;
  /** Chunks pushed and not yet decoded, and how many bytes they hold. */
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  /** A piece is loaded in the scanner and not read to its end. */
  private scanning = false;
  /** No more chunks will come; `flushed` once the decoder has been told so too. */
  private closed = false;
  private flushed = false;
  private refusal: JsonBodyRefusal | undefined;

  constructor(
    limits: JsonLimits = DEFAULT_JSON_LIMITS,
    private readonly pieceBytes: number = DEFAULT_PIECE_BYTES,
    tuning: Partial<JsonReaderTuning> = {},
  ) {
    this.tuning = { ...DEFAULT_READER_TUNING, ...tuning };
    this.scanner = new JsonScanner(limits, { bytes: this.bytes, eagerString: this.tuning.eagerString, eagerBudget: this.tuning.eagerBudget });
  }

  /**
   * Takes the next chunk of the body and does one step. Returns the refusal as soon as the body is
   * refused, then keeps returning it. Work may be left over: see pending().
   */
  push(chunk: Buffer): JsonBodyRefusal | undefined {
    if (this.refusal !== undefined) return this.refusal;
    if (this.closed) throw new Error('GlanceJsonBodyReader: push after close');
    this.bytes.add(chunk);
    if (chunk.length > 0) {
      this.queue.push(chunk);
      this.queuedBytes += chunk.length;
    }
    return this.step();
  }

  /** No more chunks will come: the bytes left become the last piece. Does one step. */
  close(): JsonBodyRefusal | undefined {
    this.closed = true;
    return this.step();
  }

  /** Whether a step has work to do now: a piece read partly, a whole piece waiting, or (once closed) the rest. */
  pending(): boolean {
    if (this.refusal !== undefined) return false;
    return this.scanning || this.queuedBytes >= this.pieceBytes || (this.closed && !this.flushed);
  }

  /**
   * Does one step of the work pending, if any: reads on in the current piece, or decodes the next one
   * and reads it, starting at most `valuesPerStep` values. Returns the refusal once the body is refused.
   */
  step(): JsonBodyRefusal | undefined {
    if (this.refusal === undefined && this.pending()) this.attempt(() => this.stepOnce());
    return this.refusal;
  }

  /** The verdict, once the whole body has been pushed; does in one call whatever work is still pending. */
  end(): JsonBodyResult {
    if (this.refusal !== undefined) return this.refusal;
    this.closed = true;
    while (this.pending()) this.attempt(() => this.stepOnce());
    if (this.refusal !== undefined) return this.refusal;
    const document = this.attempt(() => this.scanner.finish());
    if (this.refusal !== undefined) return this.refusal;
    return { ok: true, document: document as JsonNode };
  }

  private stepOnce(): void {
    if (!this.scanning) {
      const bytes = this.takePiece();
      let piece: string;
      try {
        piece = bytes === undefined ? this.decoder.decode() : this.decoder.decode(bytes, { stream: true });
      } catch {
        // Glance decodes the body with errors='strict': invalid UTF-8 is a UnicodeDecodeError, a ValueError.
        return malformed();
      }
      if (piece.length === 0) return;
      this.scanner.load(piece);
      this.scanning = true;
    }
    if (this.scanner.run(this.tuning.valuesPerStep)) this.scanning = false;
  }

  /** The next piece's bytes, or undefined (and the decoder is to be flushed) once closed and all taken. */
  private takePiece(): Buffer | undefined {
    if (this.queuedBytes === 0) {
      this.flushed = true;
      return undefined;
    }
    const size = Math.min(this.pieceBytes, this.queuedBytes);
    const first = this.queue[0] as Buffer;
    let piece: Buffer;
    if (first.length >= size) {
      piece = first.subarray(0, size);
      if (first.length === size) this.queue.shift();
      else this.queue[0] = first.subarray(size);
    } else {
      const parts: Buffer[] = [];
      let taken = 0;
      while (taken < size) {
        const chunk = this.queue[0] as Buffer;
        const part = chunk.length <= size - taken ? chunk : chunk.subarray(0, size - taken);
        parts.push(part);
        taken += part.length;
        if (part === chunk) this.queue.shift();
        else this.queue[0] = chunk.subarray(part.length);
      }
      piece = Buffer.concat(parts, size);
    }
    this.queuedBytes -= size;
    return piece;
  }

  private attempt<T>(step: () => T): T | undefined {
    try {
      return step();
    } catch (error) {
      if (!(error instanceof Refused)) throw error;
      this.refusal = error.refusal;
      this.queue = [];
      this.queuedBytes = 0;
      this.scanning = false;
      this.bytes.clear();
      return undefined;
    }
  }
}

/**
 * Decodes `body` exactly as Glance does (bytes -> text -> Python json), within `limits`, in one
 * synchronous call. For large bodies on the request path, GlanceJsonBodyReader keeps each step short.
 */
export function readGlanceJsonBody(body: Buffer, limits: JsonLimits = DEFAULT_JSON_LIMITS): JsonBodyResult {
  const reader = new GlanceJsonBodyReader(limits);
  return reader.push(body) ?? reader.end();
}

/** The document Glance would decode from `text`, or undefined when Glance would answer "Malformed JSON". */
export function parseGlanceJson(text: string): JsonNode | undefined {
  const scanner = new JsonScanner(NO_LIMITS);
  try {
    scanner.feed(text);
    return scanner.finish();
  } catch (error) {
    if (error instanceof Refused) return undefined;
    throw error;
  }
}

/** The member Python's dict keeps for `key`: the last one when the object repeats it. */
export function lastMember(node: JsonObjectNode, key: string): JsonNode | undefined {
  for (let index = node.members.length - 1; index >= 0; index -= 1) {
    const member = node.members[index];
    if (member === undefined) continue;
    // A key left in the body's bytes is decoded only when its length could match.
    if (member instanceof LazyMember && member.keyUnits !== key.length) continue;
    if (member.key === key) return member.value;
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

const LOWER_U = 0x75;

function hexAt(body: Buffer, at: number): number {
  const text = body.toString('latin1', at, at + 4);
  return /^[0-9a-fA-F]{4}$/.test(text) ? parseInt(text, 16) : -1;
}

/**
 * The first `\uXXXX` escape in a valid JSON body that stands for a lone UTF-16 surrogate, if any.
 * Python's json accepts one, but Glance cannot encode it to store it and answers 500 (with tags, after
 * creating the image), so the proxy refuses such a body. Strict UTF-8 holds no surrogate, so escapes
 * are the only way one gets in; a high surrogate escape followed by a low one is a character.
 */
export function findLoneSurrogateEscape(body: Buffer): string | undefined {
  for (let at = body.indexOf('\\'); at !== -1 && at < body.length; at = body.indexOf('\\', at)) {
    if (body[at + 1] !== LOWER_U) {
      at += 2;
      continue;
    }
    const unit = hexAt(body, at + 2);
    if (unit >= 0xd800 && unit <= 0xdbff && body[at + 6] === BACKSLASH && body[at + 7] === LOWER_U) {
      const next = hexAt(body, at + 8);
      if (next >= 0xdc00 && next <= 0xdfff) {
        at += 12;
        continue;
      }
    }
    if (unit >= 0xd800 && unit <= 0xdfff) return body.toString('latin1', at, at + 6);
    at += 6;
  }
  return undefined;
}
