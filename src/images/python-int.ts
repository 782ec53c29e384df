/**
 * Python's reading of numbers and whitespace, which StarlingX's validation and Glance's JSON-pointer
 * decoding rely on.
 */

/** The characters Python's str.strip() removes (str.isspace()). */
const PYTHON_SPACE = '\t\n\u000b\f\r\u001c\u001d\u001e\u001f \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000';

/** int() strips the same set except the four information separators U+001C..U+001F. */
const INT_SPACE = PYTHON_SPACE.replace(/[\u001c-\u001f]/g, '');

function stripChars(text: string, chars: string): string {
  let start = 0;
  let end = text.length;
  while (start < end && chars.includes(text.charAt(start))) start += 1;
  while (end > start && chars.includes(text.charAt(end - 1))) end -= 1;
  return text.slice(start, end);
}

/** Python's `text.strip()`. */
export function pythonStrip(text: string): string {
  return stripChars(text, PYTHON_SPACE);
}

/**
 * The plain decimal form of `text` read as a base-10 integer the way Python's int() reads it
 * (surrounding whitespace, an optional sign and leading zeros allowed), or undefined when it is not one.
 * Stricter than Python 3 on two points: ASCII digits only, and no `_` between digits; StarlingX ran
 * these checks on Python 2.7, whose int() refused underscores too.
 */
export function parsePythonInt(text: string): string | undefined {
  const match = /^([+-]?)([0-9]+)$/.exec(stripChars(text, INT_SPACE));
  if (match === null) return undefined;
  return canonicalInteger(match[1] === '-', match[2] ?? '');
}

/** The plain decimal form of a JSON integer literal such as `400` or `-0`. */
export function jsonIntegerValue(literal: string): string | undefined {
  const match = /^(-?)([0-9]+)$/.exec(literal);
  if (match === null) return undefined;
  return canonicalInteger(match[1] === '-', match[2] ?? '');
}

function canonicalInteger(negative: boolean, digits: string): string {
  const magnitude = digits.replace(/^0+(?=[0-9])/, '');
  return negative && magnitude !== '0' ? `-${magnitude}` : magnitude;
}
