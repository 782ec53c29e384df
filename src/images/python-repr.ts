import type { JsonNode } from './glance-json';
import { jsonIntegerValue } from './python-int';

/**
 * How Python prints a value decoded from JSON, so that a message quoting a client's value reads the way
 * StarlingX's did (`value: True`, `value: None`, `value: ['a']`).
 */
export function pythonStr(node: JsonNode): string {
  return node.kind === 'string' ? node.value : pythonRepr(node, 0);
}

/** Deeper than Python's json module can even read (its recursion limit is 1000), so never shown by StarlingX. */
const MAX_DEPTH = 1000;

function pythonRepr(node: JsonNode, depth: number): string {
  if (depth > MAX_DEPTH) return '...';
  const nested = (child: JsonNode) => pythonRepr(child, depth + 1);
  switch (node.kind) {
    case 'string':
      return stringRepr(node.value);
    case 'boolean':
      return node.value ? 'True' : 'False';
    case 'null':
      return 'None';
    case 'constant':
      return { NaN: 'nan', Infinity: 'inf', '-Infinity': '-inf' }[node.text];
    case 'number':
      return jsonIntegerValue(node.text) ?? floatRepr(Number(node.text));
    case 'array':
      return `[${node.elements.map(nested).join(', ')}]`;
    case 'object': {
      // A dict keeps the position of a key's first occurrence and the value of its last.
      const entries = new Map<string, JsonNode>();
      for (const member of node.members) entries.set(member.key, member.value);
      return `{${[...entries].map(([key, value]) => `${stringRepr(key)}: ${nested(value)}`).join(', ')}}`;
    }
  }
}

/** Python's repr() of a float: shortest round-trip digits, exponent form below 1e-4 and from 1e16. */
function floatRepr(value: number): string {
  if (Number.isNaN(value)) return 'nan';
  if (!Number.isFinite(value)) return value > 0 ? 'inf' : '-inf';
  if (value === 0) return Object.is(value, -0) ? '-0.0' : '0.0';
  const sign = value < 0 ? '-' : '';
  const [mantissa = '', exponentText = '0'] = Math.abs(value).toExponential().split('e');
  const digits = mantissa.replace('.', '');
  const exponent = Number(exponentText);
  const pointPosition = exponent + 1;
  if (pointPosition <= -4 || pointPosition > 16) {
    const fraction = digits.length > 1 ? `.${digits.slice(1)}` : '';
    const exponentSign = exponent < 0 ? '-' : '+';
    return `${sign}${digits.charAt(0)}${fraction}e${exponentSign}${String(Math.abs(exponent)).padStart(2, '0')}`;
  }
  if (pointPosition <= 0) return `${sign}0.${'0'.repeat(-pointPosition)}${digits}`;
  if (pointPosition >= digits.length) return `${sign}${digits}${'0'.repeat(pointPosition - digits.length)}.0`;
  return `${sign}${digits.slice(0, pointPosition)}.${digits.slice(pointPosition)}`;
}

const NOT_PRINTABLE = /[\p{Cc}\p{Cf}\p{Cs}\p{Co}\p{Cn}\p{Zl}\p{Zp}\p{Zs}]/u;
const NAMED_ESCAPES: Readonly<Record<string, string>> = { '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' };

function stringRepr(text: string): string {
  const quote = text.includes("'") && !text.includes('"') ? '"' : "'";
  let body = '';
  for (const char of text) {
    const named = NAMED_ESCAPES[char];
    if (named !== undefined) body += named;
    else if (char === quote) body += `\\${char}`;
    else if (char === ' ' || !NOT_PRINTABLE.test(char)) body += char;
    else body += codePointEscape(char.codePointAt(0) ?? 0);
  }
  return `${quote}${body}${quote}`;
}

function codePointEscape(codePoint: number): string {
  const hex = codePoint.toString(16);
  if (codePoint <= 0xff) return `\\x${hex.padStart(2, '0')}`;
  if (codePoint <= 0xffff) return `\\u${hex.padStart(4, '0')}`;
  return `\\U${hex.padStart(8, '0')}`;
}
