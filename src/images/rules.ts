import fs from 'node:fs';
import path from 'node:path';
import Ajv, { type ValidateFunction } from 'ajv';

export type InputForm = 'boolean' | 'integer';

interface PropertyRuleBase {
  readonly name: string;
  readonly description: string;
  /** False keeps the property out of GET /v2/schemas/image (see the table's $comment). */
  readonly inImageSchema: boolean;
}

export interface WritablePropertyRule extends PropertyRuleBase {
  readonly access: 'writable';
  readonly input: InputForm;
  /** The stored forms of a boolean-like property, e.g. ["True", "False"]. */
  readonly canonicalValues: readonly string[] | undefined;
  /** The 400 message, with `{value}` standing for the value as the client sent it. */
  readonly invalidMessage: string;
}

export interface ValueList {
  readonly separator: string;
  readonly values: readonly string[];
}

export interface ReadOnlyPropertyRule extends PropertyRuleBase {
  readonly access: 'read-only';
  readonly allowedValues: readonly string[] | undefined;
  readonly list: ValueList | undefined;
  readonly derivedFrom: 'image-locations' | undefined;
}

export type PropertyRule = WritablePropertyRule | ReadOnlyPropertyRule;

interface TableProperty {
  description: string;
  readOnly?: boolean;
  enum?: string[];
  pattern?: string;
  stxInput?: InputForm;
  stxInvalidMessage?: string;
  stxList?: { separator: string; enum: string[] };
  stxDerivedFrom?: 'image-locations';
  stxInImageSchema?: boolean;
}

interface Table {
  $id: string;
  properties: Record<string, TableProperty>;
}

const TABLE_FILE = path.join(__dirname, '..', '..', 'schemas', 'stx-image-properties.json');

function createValidator(): Ajv {
  const ajv = new Ajv({ strict: true });
  ajv.addKeyword({ keyword: 'stxInput', schemaType: 'string', metaSchema: { enum: ['boolean', 'integer'] } });
  ajv.addKeyword({
    keyword: 'stxInvalidMessage',
    schemaType: 'string',
    metaSchema: { type: 'string', pattern: '\\{value\\}' },
  });
  ajv.addKeyword({ keyword: 'stxDerivedFrom', schemaType: 'string', metaSchema: { enum: ['image-locations'] } });
  ajv.addKeyword({ keyword: 'stxInImageSchema', schemaType: 'boolean' });
  ajv.addKeyword({
    keyword: 'stxList',
    type: 'string',
    schemaType: 'object',
    metaSchema: {
      type: 'object',
      required: ['separator', 'enum'],
      additionalProperties: false,
      properties: {
        separator: { type: 'string', minLength: 1 },
        enum: { type: 'array', items: { type: 'string' }, minItems: 1, uniqueItems: true },
      },
    },
    errors: false,
    validate: (list: { separator: string; enum: string[] }, data: string) =>
      data.split(list.separator).every((item) => list.enum.includes(item)),
  });
  return ajv;
}

function toRule(name: string, property: TableProperty): PropertyRule {
  const common = { name, description: property.description, inImageSchema: property.stxInImageSchema ?? true };
  if (property.readOnly === true) {
    return Object.freeze({
      ...common,
      access: 'read-only',
      allowedValues: property.enum && Object.freeze([...property.enum]),
      list: property.stxList && Object.freeze({ separator: property.stxList.separator, values: Object.freeze([...property.stxList.enum]) }),
      derivedFrom: property.stxDerivedFrom,
    });
  }
  const { stxInput: input, stxInvalidMessage: invalidMessage } = property;
  const wellFormed =
    invalidMessage !== undefined &&
    ((input === 'boolean' && property.enum !== undefined) || (input === 'integer' && property.pattern !== undefined));
  if (!wellFormed) {
    throw new Error(`${TABLE_FILE}: writable property ${name} needs stxInvalidMessage and, for its stxInput, enum or pattern`);
  }
  return Object.freeze({
    ...common,
    access: 'writable',
    input,
    canonicalValues: property.enum && Object.freeze([...property.enum]),
    invalidMessage,
  });
}

const table = JSON.parse(fs.readFileSync(TABLE_FILE, 'utf8')) as Table;
const validator = createValidator();
validator.compile(table);

/** Every property of the table, in table order. */
export const propertyRules: readonly PropertyRule[] = Object.freeze(
  Object.entries(table.properties).map(([name, property]) => toRule(name, property)),
);

export const writableRules: readonly WritablePropertyRule[] = Object.freeze(
  propertyRules.filter((rule): rule is WritablePropertyRule => rule.access === 'writable'),
);

export const readOnlyRules: readonly ReadOnlyPropertyRule[] = Object.freeze(
  propertyRules.filter((rule): rule is ReadOnlyPropertyRule => rule.access === 'read-only'),
);

const byName = new Map<string, PropertyRule>(propertyRules.map((rule) => [rule.name, rule]));

const canonicalValidators = new Map<string, ValidateFunction>(
  writableRules.map((rule) => {
    const validate = validator.getSchema(`${table.$id}#/properties/${rule.name}`);
    if (validate === undefined) throw new Error(`${TABLE_FILE}: cannot compile property ${rule.name}`);
    return [rule.name, validate];
  }),
);

/** The read-only property the proxy computes from where the image data lives (`store`). */
export const storeRule: ReadOnlyPropertyRule & { readonly list: ValueList } = (() => {
  const rule = readOnlyRules.find((candidate) => candidate.derivedFrom === 'image-locations');
  if (rule?.list === undefined) throw new Error(`${TABLE_FILE}: no stxList property derived from image-locations`);
  return rule as ReadOnlyPropertyRule & { readonly list: ValueList };
})();

export function findRule(name: string): PropertyRule | undefined {
  return byName.get(name);
}

export function findWritableRule(name: string): WritablePropertyRule | undefined {
  const rule = byName.get(name);
  return rule?.access === 'writable' ? rule : undefined;
}

export function isReadOnlyProperty(name: string): boolean {
  return byName.get(name)?.access === 'read-only';
}

/** True when `value` is the stored form the table declares for the writable property `name`. */
export function isCanonicalValue(name: string, value: string): boolean {
  const validate = canonicalValidators.get(name);
  return validate !== undefined && validate(value) === true;
}

export function invalidValueMessage(rule: WritablePropertyRule, shownValue: string): string {
  return rule.invalidMessage.replace('{value}', () => shownValue);
}
