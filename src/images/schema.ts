import { propertyRules, type PropertyRule } from './rules';

type JsonObject = { [key: string]: unknown };

function isJsonObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * GET /v2/schemas/image with the extension properties added after Glance's own. What Glance declares
 * (including a property an operator already put in schema-image.json, and additionalProperties) is
 * left exactly as it is.
 *
 * python-glanceclient validates against this schema, client side, every value a user sets (warlock, on
 * image-create and image-update) and, on image-update, the whole image it read back first. So:
 * - writable properties carry no constraint beyond `type: string`: a pattern or an enum would make
 *   glanceclient refuse a value itself, printing a jsonschema dump instead of StarlingX's 400 message,
 *   and refuse inputs the proxy accepts and normalizes (`true`, ` +400 `); the proxy judges every value,
 *   and an image still carrying a value StarlingX once stored unchecked stays updatable;
 * - read-only fields carry no constraint beyond the table's (readOnly is an annotation to jsonschema), so
 *   an image holding them validates, and glanceclient never sends them back unless a user sets them;
 * - every property is `is_base: false`, as Glance marks schema-image.json properties, so that
 *   glanceclient adds a missing one with "add" rather than "replace" (which Glance answers with 409);
 * - `store` is left out (stxInImageSchema: false): glanceclient turns each property into a command-line
 *   option, and its own --store option would then clash.
 */
export function extendImageSchema(glanceSchema: unknown): unknown {
  const schema = structuredClone(glanceSchema);
  if (!isJsonObject(schema) || !isJsonObject(schema.properties)) return schema;
  const properties = schema.properties;
  for (const rule of propertyRules) {
    if (rule.inImageSchema && !Object.hasOwn(properties, rule.name)) properties[rule.name] = publishedProperty(rule);
  }
  return schema;
}

/** GET /v2/schemas/images: its `properties.images.items` is the image schema. */
export function extendImagesSchema(glanceSchema: unknown): unknown {
  const schema = structuredClone(glanceSchema);
  if (!isJsonObject(schema) || !isJsonObject(schema.properties) || !isJsonObject(schema.properties.images)) return schema;
  const images = schema.properties.images;
  if (isJsonObject(images.items)) images.items = extendImageSchema(images.items);
  return schema;
}

function publishedProperty(rule: PropertyRule): JsonObject {
  const property: JsonObject = { type: 'string', description: rule.description };
  if (rule.access === 'read-only') {
    property.readOnly = true;
    if (rule.allowedValues !== undefined) property.enum = [...rule.allowedValues];
  }
  property.is_base = false;
  return property;
}
