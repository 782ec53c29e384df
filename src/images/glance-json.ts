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
  | { ok: true; text: string; document: JsonNode }
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

function wordNode(word: Word, start: number, end: number): WordNode {
  switch (word) {
    case 'true':
      return { kind: 'boolean', value: true, start, end };
    case 'false':
      return { kind: 'boolean', value: false, start, end };
    case 'null':
      return { kind: 'null', start, end };
    default:
      return { kind: 'constant', text: word, start, end };
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

/**
 * Python's json grammar as a state machine over pieces of text, so that a body can be read as it arrives.
 * Iterative: nesting costs one entry in the `open*` stacks, never a stack frame. Work is linear in the
 * text, and the limits are checked when a value, member or element starts, before anything is built.
 *
 * Memory is what the limits bound, so nodes are kept small: the elements and members of open containers
 * wait on two shared stacks, and a container takes an array of exactly its own size when it closes.
 */
class JsonScanner {
  /** Offset in the whole text of the current piece's first character. */
  private base = 0;
  private expect = EXPECT_VALUE;
  private values = 0;
  private document: JsonNode | undefined;

  // One entry per open container, innermost last.
  private readonly openStart: number[] = [];
  private readonly openIsObject: boolean[] = [];
  /** Height of elementStack or memberStack when the container opened: its children are above it. */
  private readonly openHeight: number[] = [];
  /** The key of the member whose value is being read (objects only). */
  private readonly openKey: string[] = [];
  private readonly elementStack: JsonNode[] = [];
  private readonly memberStack: JsonMember[] = [];

  private token = TOKEN_NONE;
  /** Offset in the whole text where the token in progress starts. */
  private tokenStart = 0;

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

  constructor(private readonly limits: JsonLimits) {}

  /** Reads the next piece of the text; throws Refused when the text is refused. */
  feed(piece: string): void {
    const length = piece.length;
    let index = 0;
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
      index = this.structural(index, char);
    }
    if (this.token === TOKEN_NUMBER) this.numberHead += piece.slice(Math.max(0, this.tokenStart - this.base));
    this.base += length;
  }

  /** The document, once the whole text has been fed; throws Refused when the text is refused. */
  finish(): JsonNode {
    if (this.token === TOKEN_NUMBER) this.endNumber('', this.base);
    else if (this.token !== TOKEN_NONE) malformed();
    if (this.expect !== EXPECT_END || this.document === undefined) malformed();
    return this.document;
  }

  private structural(index: number, char: number): number {
    const at = this.base + index;
    switch (this.expect) {
      case EXPECT_VALUE_OR_CLOSE:
        if (char === 0x5d) {
          this.close(at);
          return index + 1;
        }
        return this.startValue(index, char);
      case EXPECT_VALUE:
        return this.startValue(index, char);
      case EXPECT_KEY_OR_CLOSE:
        if (char === 0x7d) {
          this.close(at);
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
        else if (char === (isObject ? 0x7d : 0x5d)) this.close(at);
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
    this.startString(true, this.base + index);
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
      this.openIsObject.push(isObject);
      this.openHeight.push(isObject ? this.memberStack.length : this.elementStack.length);
      this.openKey.push('');
      this.expect = isObject ? EXPECT_KEY_OR_CLOSE : EXPECT_VALUE_OR_CLOSE;
      return index + 1;
    }
    if (char === QUOTE) {
      this.countValue();
      this.startString(false, at);
      return index + 1;
    }
    if (char === 0x2d || isDigit(char)) {
      this.countValue();
      this.token = TOKEN_NUMBER;
      this.tokenStart = at;
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

  private close(at: number): void {
    const start = this.openStart.pop() as number;
    const height = this.openHeight.pop() as number;
    this.openKey.pop();
    const end = at + 1;
    if (this.openIsObject.pop() === true) {
      const members = height === this.memberStack.length ? NO_MEMBERS : this.memberStack.slice(height);
      this.memberStack.length = height;
      this.complete({ kind: 'object', start, members, end });
    } else {
      const elements = height === this.elementStack.length ? NO_ELEMENTS : this.elementStack.slice(height);
      this.elementStack.length = height;
      this.complete({ kind: 'array', start, elements, end });
    }
  }

  private complete(node: JsonNode): void {
    const depth = this.openIsObject.length;
    if (depth === 0) {
      this.document = node;
      this.expect = EXPECT_END;
      return;
    }
    if (this.openIsObject[depth - 1] === true) this.memberStack.push({ key: this.openKey[depth - 1] as string, value: node });
    else this.elementStack.push(node);
    this.expect = EXPECT_COMMA_OR_CLOSE;
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

  private startString(isKey: boolean, at: number): void {
    this.token = TOKEN_STRING;
    this.tokenStart = at;
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
    let value: string;
    if (runStart === this.tokenStart + 1 - this.base) {
      // The whole string is this run: one slice of the piece, which shares its characters.
      value = piece.slice(runStart, quote);
    } else {
      this.appendRun(piece, runStart, quote);
      this.flushUnits();
      value = this.stringHead;
      this.stringHead = '';
    }
    this.token = TOKEN_NONE;
    if (this.stringIsKey) {
      this.openKey[this.openKey.length - 1] = value;
      this.expect = EXPECT_COLON;
    } else {
      this.complete({ kind: 'string', start: this.tokenStart, value, end: this.base + quote + 1 });
    }
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
    const text = this.numberHead + tail;
    this.numberHead = '';
    this.token = TOKEN_NONE;
    this.complete({ kind: 'number', start: this.tokenStart, text, end });
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
      this.complete(wordNode(word, this.tokenStart, this.tokenStart + word.length));
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

/**
 * Reads a request body as it arrives, one piece of `pieceBytes` at a time, so that no step costs more
 * than its piece: a 16 MiB body read in one synchronous call holds the event loop for longer than 100 ms
 * (decoding it alone can take that on a small VM). Smaller chunks are gathered into whole pieces, so a
 * client trickling single bytes cannot turn the text into millions of tiny strings either.
 */
export class GlanceJsonBodyReader {
  private readonly scanner: JsonScanner;
  // ignoreBOM keeps a leading U+FEFF in the text, as Python's 'utf-8' codec does, so json refuses it.
  private readonly decoder = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private text = '';
  private refusal: JsonBodyRefusal | undefined;

  constructor(
    limits: JsonLimits = DEFAULT_JSON_LIMITS,
    private readonly pieceBytes: number = DEFAULT_PIECE_BYTES,
  ) {
    this.scanner = new JsonScanner(limits);
  }

  /** Reads the next chunk of the body. Returns the refusal as soon as the body is refused, then keeps returning it. */
  push(chunk: Buffer): JsonBodyRefusal | undefined {
    if (this.refusal !== undefined) return this.refusal;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes >= this.pieceBytes) this.readPending(false);
    return this.refusal;
  }

  /** The whole body has been pushed: the verdict. */
  end(): JsonBodyResult {
    this.readPending(true);
    if (this.refusal !== undefined) return this.refusal;
    const document = this.attempt(() => {
      this.decodePiece(undefined);
      return this.scanner.finish();
    });
    if (this.refusal !== undefined) return this.refusal;
    return { ok: true, text: this.text, document: document as JsonNode };
  }

  /** Reads the whole pieces gathered so far (at the end, what is left too); a partial piece waits for more. */
  private readPending(last: boolean): void {
    if (this.refusal !== undefined || this.pendingBytes === 0) return;
    const bytes = this.pending.length === 1 ? (this.pending[0] as Buffer) : Buffer.concat(this.pending, this.pendingBytes);
    const ready = last ? bytes.length : bytes.length - (bytes.length % this.pieceBytes);
    const rest = bytes.subarray(ready);
    this.pending = rest.length > 0 ? [rest] : [];
    this.pendingBytes = rest.length;
    this.attempt(() => {
      for (let offset = 0; offset < ready; offset += this.pieceBytes) {
        this.decodePiece(bytes.subarray(offset, Math.min(ready, offset + this.pieceBytes)));
      }
    });
  }

  /** Decodes and reads one piece, or with `undefined` checks that no UTF-8 sequence was left unfinished. */
  private decodePiece(bytes: Buffer | undefined): void {
    let piece: string;
    try {
      piece = bytes === undefined ? this.decoder.decode() : this.decoder.decode(bytes, { stream: true });
    } catch {
      // Glance decodes the body with errors='strict': invalid UTF-8 is a UnicodeDecodeError, a ValueError.
      return malformed();
    }
    if (piece.length === 0) return;
    // A rope: each piece stays one string, and the text is only copied into one if someone reads it so.
    this.text += piece;
    this.scanner.feed(piece);
  }

  private attempt<T>(step: () => T): T | undefined {
    try {
      return step();
    } catch (error) {
      if (!(error instanceof Refused)) throw error;
      this.refusal = error.refusal;
      this.pending = [];
      this.pendingBytes = 0;
      this.text = '';
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
