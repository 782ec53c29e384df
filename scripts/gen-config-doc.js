#!/usr/bin/env node
// Writes docs/config.md from schemas/config.schema.json and the environment overrides of
// src/config/load.ts.
//   node scripts/gen-config-doc.js          rewrite the doc
//   node scripts/gen-config-doc.js --check  exit 1 when the committed doc is stale
//
// The environment overrides are read from the text of src/config/load.ts, not from dist/: the
// doc must not depend on whether (or how recently) the project was built. The parser accepts only
// the plain `NAME: 'dotted.key',` lines the table is written in and fails loudly on anything else;
// test/unit/config-doc.test.ts checks that what it reads equals the ENV_OVERRIDES the loader uses.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const ROOT = path.join(__dirname, '..');
const SCHEMA_FILE = path.join(ROOT, 'schemas', 'config.schema.json');
const LOADER_FILE = path.join(ROOT, 'src', 'config', 'load.ts');
const DOC_FILE = path.join(ROOT, 'docs', 'config.md');

function readSchema() {
  return JSON.parse(fs.readFileSync(SCHEMA_FILE, 'utf8'));
}

/** ENV_OVERRIDES of src/config/load.ts as { VARIABLE: 'dotted.key' }, parsed from its source text. */
function parseEnvOverrides(source) {
  const start = source.search(/export const ENV_OVERRIDES\b[^=]*=\s*\{/);
  if (start < 0) throw new Error(`${path.relative(ROOT, LOADER_FILE)}: no "export const ENV_OVERRIDES ... = {" found`);
  const open = source.indexOf('{', source.indexOf('=', start));
  const close = source.indexOf('};', open);
  if (close < 0) throw new Error(`${path.relative(ROOT, LOADER_FILE)}: ENV_OVERRIDES has no closing "};"`);
  const overrides = {};
  for (const raw of source.slice(open + 1, close).split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('//')) continue;
    const match = /^([A-Z][A-Z0-9_]*):\s*'([a-z0-9_.]+)',?$/.exec(line);
    if (!match) {
      throw new Error(
        `${path.relative(ROOT, LOADER_FILE)}: cannot read the ENV_OVERRIDES line ${JSON.stringify(line)}; ` +
          "keep one `NAME: 'dotted.key',` per line, or teach scripts/gen-config-doc.js the new form",
      );
    }
    overrides[match[1]] = match[2];
  }
  if (Object.keys(overrides).length === 0) throw new Error(`${path.relative(ROOT, LOADER_FILE)}: ENV_OVERRIDES is empty`);
  return overrides;
}

function readEnvOverrides() {
  return parseEnvOverrides(fs.readFileSync(LOADER_FILE, 'utf8'));
}

function code(text) {
  const body = String(text);
  const fence = body.includes('`') ? '``' : '`';
  const pad = body.startsWith('`') || body.endsWith('`') ? ' ' : '';
  return `${fence}${pad}${body}${pad}${fence}`;
}

/** Text for a Markdown table cell: no pipes that would split the row, no line breaks. */
function cell(text) {
  return String(text).replace(/\|/g, '\\|').replace(/\s*\n\s*/g, ' ');
}

function orList(items) {
  return items.length < 2 ? items.join('') : `${items.slice(0, -1).join(', ')} or ${items[items.length - 1]}`;
}

function typesOf(node) {
  return [].concat(node.type ?? []);
}

function isSection(node) {
  return typesOf(node).includes('object') && node.properties !== undefined;
}

function describeType(node) {
  const types = typesOf(node);
  const nullable = types.includes('null');
  const base = types.filter((t) => t !== 'null');
  let text;
  if (node.enum) {
    text = `one of ${orList(node.enum.map((v) => code(v)))}`;
  } else if (base.length === 1 && base[0] === 'object' && node.additionalProperties && typeof node.additionalProperties === 'object') {
    const values = node.additionalProperties.enum ? orList(node.additionalProperties.enum.map((v) => code(v))) : typesOf(node.additionalProperties).join(' or ');
    text = `map of name to ${values}`;
  } else {
    text = base.join(' or ');
    const bounds = [];
    if (node.minimum !== undefined && node.maximum !== undefined) bounds.push(`${node.minimum} to ${node.maximum}`);
    else if (node.minimum !== undefined) bounds.push(`≥ ${node.minimum}`);
    else if (node.maximum !== undefined) bounds.push(`≤ ${node.maximum}`);
    if (node.minLength !== undefined && node.minLength > 0) bounds.push('not empty');
    if (bounds.length > 0) text += `, ${bounds.join(', ')}`;
    if (node.pattern) text += ` matching ${code(node.pattern)}`;
  }
  return nullable ? `${text}, or ${code('null')}` : text;
}

function describeDefault(node) {
  if (!('default' in node)) return 'none';
  const value = node.default;
  if (typeof value === 'string') return code(value);
  if (value !== null && typeof value === 'object' && !Array.isArray(value)) {
    const entries = Object.entries(value);
    if (entries.length === 0) return 'none';
    return entries.map(([k, v]) => code(`${k}: ${v}`)).join(', ');
  }
  return code(JSON.stringify(value));
}

function envFor(dotted, envByKey) {
  const names = envByKey.get(dotted) ?? [];
  return names.length === 0 ? '' : names.map((n) => code(n)).join(', ');
}

function keyTable(rows, envByKey) {
  return [
    '| key | type | default | environment | description |',
    '|---|---|---|---|---|',
    ...rows.map(([dotted, node]) =>
      `| ${code(dotted)} | ${cell(describeType(node))} | ${cell(describeDefault(node))} | ${envFor(dotted, envByKey)} | ${cell(node.description ?? '')} |`,
    ),
  ];
}

/** The constraints between keys of one section, in words. */
function sectionRules(prefix, node) {
  const lines = [];
  for (const key of node.required ?? []) lines.push(`- ${code(`${prefix}.${key}`)} is required when ${code(prefix)} is given.`);
  for (const [key, needs] of Object.entries(node.dependencies ?? {})) {
    if (Array.isArray(needs)) lines.push(`- ${code(`${prefix}.${key}`)} needs ${orList(needs.map((n) => code(`${prefix}.${n}`))).replace(/ or ([^,]*)$/, ' and $1')}.`);
  }
  return lines;
}

function renderSection(prefix, node, depth, envByKey) {
  const lines = [`${'#'.repeat(depth)} ${prefix}`, ''];
  if (node.description) lines.push(node.description, '');
  const types = typesOf(node);
  if (types.includes('null')) lines.push(`The whole section may be ${code('null')} (the default is ${describeDefault(node)}).`, '');
  const entries = Object.entries(node.properties);
  const leaves = entries.filter(([, child]) => !isSection(child)).map(([key, child]) => [`${prefix}.${key}`, child]);
  if (leaves.length > 0) lines.push(...keyTable(leaves, envByKey), '');
  const rules = sectionRules(prefix, node);
  if (rules.length > 0) lines.push(...rules, '');
  for (const [key, child] of entries.filter(([, c]) => isSection(c))) lines.push(...renderSection(`${prefix}.${key}`, child, depth + 1, envByKey));
  return lines;
}

/** Every key the schema declares, dotted, for checking the override table against it. */
function schemaKeys(node, prefix = '', keys = new Set()) {
  for (const [key, child] of Object.entries(node.properties ?? {})) {
    const dotted = prefix ? `${prefix}.${key}` : key;
    keys.add(dotted);
    schemaKeys(child, dotted, keys);
  }
  return keys;
}

function renderConfigDoc(schema, envOverrides) {
  const known = schemaKeys(schema);
  const envByKey = new Map();
  for (const [name, dotted] of Object.entries(envOverrides)) {
    if (!known.has(dotted)) throw new Error(`${name} overrides '${dotted}', which schemas/config.schema.json does not declare`);
    envByKey.set(dotted, [...(envByKey.get(dotted) ?? []), name]);
  }
  const entries = Object.entries(schema.properties);
  const topLevel = entries.filter(([, node]) => !isSection(node));
  const sections = entries.filter(([, node]) => isSection(node));
  return [
    `# ${schema.title}`,
    '',
    '<!-- Generated by scripts/gen-config-doc.js from schemas/config.schema.json and src/config/load.ts. Do not edit. -->',
    '',
    'Every command of `stx-glance-proxy` (`serve`, `worker`, `reconcile`, ...) reads the same configuration, in this',
    'order, each layer winning over the one before:',
    '',
    '1. the defaults below;',
    '2. a YAML or JSON file: `--config FILE`, or the file named by `STX_GLANCE_PROXY_CONFIG`;',
    '3. the `STX_GLANCE_PROXY_*` environment variables in the **environment** column;',
    '4. the flags `--upstream`, `--listen`, `--public-url` and `--log-level`.',
    '',
    'The result is validated against `schemas/config.schema.json` before anything starts. An unknown key, a value',
    'of the wrong type or out of range, or a missing required key stops the command with one line naming it',
    '(exit status 2), for example `config: unknown key \'rawcache.target.pool\' in /etc/stx-glance-proxy/stx-glance-proxy.yaml`.',
    '',
    'Environment variables and flags are strings: a number is read as a number where the key takes one, and an',
    'empty string sets a key that may be `null` to `null`. Durations are in seconds and sizes in bytes unless the',
    'description says otherwise. A section given in the file replaces its defaults key by key; a map such as',
    '`store_types` given in the file replaces the default map as a whole.',
    '',
    'The two secret variables only complete a `service_auth` section that the file has, and every command validates',
    'that section, `serve` included. So give each process the variable of the method the file uses and no other: with',
    'an application credential in the file, a `STX_GLANCE_PROXY_SERVICE_PASSWORD` in the environment fails the start',
    '(`\'service_auth\' must have property username when property password is present`), and so does either variable',
    'when the file has no `service_auth` (`must have required property \'auth_url\'`).',
    '',
    'Examples that load without error (a unit test checks it): `config/stx-glance-proxy.example.yaml` (the proxy',
    'alone) and `config/starlingx-example.yaml` (proxy and raw-cache worker on a StarlingX-like cloud with Ceph',
    'and RabbitMQ). Deployment: [deploy.md](deploy.md).',
    '',
    '## Top-level keys',
    '',
    ...keyTable(topLevel.map(([key, node]) => [key, node]), envByKey),
    '',
    ...sections.flatMap(([key, node]) => renderSection(key, node, 2, envByKey)),
    '## Environment variables',
    '',
    '| variable | sets |',
    '|---|---|',
    '| `STX_GLANCE_PROXY_CONFIG` | the configuration file to read, when `--config` is not given |',
    ...Object.entries(envOverrides).map(([name, dotted]) => `| ${code(name)} | ${code(dotted)} |`),
    '',
  ].join('\n');
}

module.exports = { renderConfigDoc, readSchema, readEnvOverrides, parseEnvOverrides, DOC_FILE };

if (require.main === module) {
  const doc = renderConfigDoc(readSchema(), readEnvOverrides());
  if (process.argv.includes('--check')) {
    const current = fs.existsSync(DOC_FILE) ? fs.readFileSync(DOC_FILE, 'utf8') : '';
    if (current !== doc) {
      process.stderr.write(`${path.relative(ROOT, DOC_FILE)} is stale: run node scripts/gen-config-doc.js\n`);
      process.exit(1);
    }
  } else {
    fs.mkdirSync(path.dirname(DOC_FILE), { recursive: true });
    fs.writeFileSync(DOC_FILE, doc);
  }
}
