import type { JsonNode, TextEdit } from './glance-json';
import { jsonIntegerValue, parsePythonInt } from './python-int';
import { pythonStr } from './python-repr';
import { invalidValueMessage, isCanonicalValue, type WritablePropertyRule } from './rules';

export type PropertyValueResult = { ok: true; canonical: string } | { ok: false; message: string };

/**
 * The stored form of a value a client sent for a writable extension property, or StarlingX's 400
 * message. An empty string is refused: StarlingX skipped validation for "" and stored it, which left
 * values no consumer could read.
 */
export function normalizePropertyValue(rule: WritablePropertyRule, value: JsonNode): PropertyValueResult {
  const candidate = rule.input === 'boolean' ? booleanCandidate(rule, value) : integerCandidate(value);
  if (candidate !== undefined && isCanonicalValue(rule.name, candidate)) return { ok: true, canonical: candidate };
  return { ok: false, message: invalidValueMessage(rule, pythonStr(value)) };
}

/** The edit that stores `canonical` in place of `value`, or none when Glance would already read it so. */
export function canonicalEdit(value: JsonNode, canonical: string): TextEdit[] {
  if (value.kind === 'string' && value.value === canonical) return [];
  return [{ start: value.start, end: value.end, text: JSON.stringify(canonical) }];
}

function booleanCandidate(rule: WritablePropertyRule, value: JsonNode): string | undefined {
  let spelled: string;
  if (value.kind === 'string') spelled = value.value;
  else if (value.kind === 'boolean') spelled = String(value.value);
  else return undefined;
  return rule.canonicalValues?.find((canonical) => canonical.toLowerCase() === spelled.toLowerCase());
}

function integerCandidate(value: JsonNode): string | undefined {
  if (value.kind === 'string') return parsePythonInt(value.value);
  if (value.kind === 'number') return jsonIntegerValue(value.text);
  return undefined;
}
