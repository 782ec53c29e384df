#!/usr/bin/env node
// Writes src/config/schema-types.ts, the TypeScript type of the validated configuration, from
// schemas/config.schema.json, so that the type the code reads and the schema the loader validates
// against cannot drift apart.
//   node scripts/gen-config-types.js          rewrite the file
//   node scripts/gen-config-types.js --check  exit 1 when the committed file is stale (npm run build does this)
//
// The loader fills in every default (ajv useDefaults), so a key with a default is always present;
// a key without one is optional unless the schema requires it. Objects named in NAMED become
// interfaces of their own; the others are written inline. Only the schema forms the configuration
// uses are understood (object, array, string, number, integer, boolean, null, enum, a list of
// types); anything else fails loudly rather than being typed `unknown`.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
const SCHEMA_FILE = path.join(ROOT, 'schemas', 'config.schema.json');
const TYPES_FILE = path.join(ROOT, 'src', 'config', 'schema-types.ts');

/** Schema paths whose object gets an interface of its own, and its name. */
const NAMED = { '': 'ProxyConfig', rawcache: 'RawCacheConfig', service_auth: 'ServiceAuthConfig' };

const KNOWN_KEYWORDS = new Set([
  '$schema', '$id', '$comment', 'title', 'description', 'type', 'properties', 'additionalProperties', 'required',
  'default', 'items', 'enum', 'pattern', 'minimum', 'maximum', 'minLength', 'examples', 'format',
]);

function readSchema() {
  return JSON.parse(fs.readFileSync(SCHEMA_FILE, 'utf8'));
}

function comment(text, indent) {
  if (!text) return [];
  const words = String(text).replace(/\*\//g, '*\\/').split(/\s+/);
  const lines = [];
  let line = '';
  for (const word of words) {
    if (line && (indent + 3 + line.length + 1 + word.length) > 100) {
      lines.push(line);
      line = word;
    } else line = line ? `${line} ${word}` : word;
  }
  if (line) lines.push(line);
  const pad = ' '.repeat(indent);
  if (lines.length === 1) return [`${pad}/** ${lines[0]} */`];
  return [`${pad}/**`, ...lines.map((l) => `${pad} * ${l}`), `${pad} */`];
}

function renderConfigTypes(schema) {
  const interfaces = [];

  function typeOf(node, where, indent) {
    for (const key of Object.keys(node)) {
      if (!KNOWN_KEYWORDS.has(key)) throw new Error(`${where || '(root)'}: schema keyword '${key}' is not understood by scripts/gen-config-types.js`);
    }
    const types = Array.isArray(node.type) ? node.type : [node.type];
    const parts = types.map((type) => {
      switch (type) {
        case 'string':
          return node.enum ? node.enum.map((v) => JSON.stringify(v)).join(' | ') : 'string';
        case 'number':
        case 'integer':
          return 'number';
        case 'boolean':
          return 'boolean';
        case 'null':
          return 'null';
        case 'array':
          if (!node.items) throw new Error(`${where}: an array needs 'items'`);
          return `${wrap(typeOf(node.items, `${where}[]`, indent))}[]`;
        case 'object':
          return objectType(node, where, indent);
        default:
          throw new Error(`${where || '(root)'}: type ${JSON.stringify(type)} is not understood by scripts/gen-config-types.js`);
      }
    });
    return parts.join(' | ');
  }

  function wrap(type) {
    return /[|&]/.test(type) ? `(${type})` : type;
  }

  function objectType(node, where, indent) {
    if (node.properties) {
      const name = NAMED[where];
      const inner = name !== undefined ? 2 : indent + 2;
      const required = new Set(node.required ?? []);
      const lines = [];
      for (const [key, child] of Object.entries(node.properties)) {
        const optional = child.default === undefined && !required.has(key);
        lines.push(...comment(child.description, inner));
        lines.push(`${' '.repeat(inner)}${key}${optional ? '?' : ''}: ${typeOf(child, where ? `${where}.${key}` : key, inner)};`);
      }
      if (name !== undefined) {
        interfaces.push([...comment(node.description ?? node.title, 0), `export interface ${name} {`, ...lines, '}'].join('\n'));
        return name;
      }
      return `{\n${lines.join('\n')}\n${' '.repeat(indent)}}`;
    }
    if (node.additionalProperties && typeof node.additionalProperties === 'object') {
      return `Record<string, ${typeOf(node.additionalProperties, `${where}.*`, indent)}>`;
    }
    throw new Error(`${where}: an object needs 'properties' or an 'additionalProperties' schema`);
  }

  typeOf(schema, '', 0);
  return [
    '// Generated from schemas/config.schema.json by scripts/gen-config-types.js: do not edit by hand.',
    '// After changing the schema, run: node scripts/gen-config-types.js (npm run build checks it).',
    '',
    // The root interface last in the traversal: put it first, then the others in schema order.
    ...[interfaces[interfaces.length - 1], ...interfaces.slice(0, -1)].flatMap((text) => [text, '']),
  ].join('\n');
}

module.exports = { renderConfigTypes, readSchema, TYPES_FILE };

if (require.main === module) {
  const text = renderConfigTypes(readSchema());
  if (process.argv.includes('--check')) {
    const current = fs.existsSync(TYPES_FILE) ? fs.readFileSync(TYPES_FILE, 'utf8') : '';
    if (current !== text) {
      process.stderr.write(`${path.relative(ROOT, TYPES_FILE)} does not match ${path.relative(ROOT, SCHEMA_FILE)}: run node scripts/gen-config-types.js\n`);
      process.exit(1);
    }
  } else {
    fs.writeFileSync(TYPES_FILE, text);
  }
}
