import { readFileSync } from 'node:fs';
import path from 'node:path';
import Ajv, { type ErrorObject } from 'ajv';
import YAML from 'yaml';

/** The validated configuration, with every default filled in (schemas/config.schema.json). */
export interface ProxyConfig {
  listen: string;
  upstream?: string;
  public_url: string | null;
  timeouts: { client_idle: number; upstream_idle: number; request_headers: number; keep_alive: number; shutdown_grace: number };
  upstream_pool: { max_sockets: number; max_free_sockets: number };
  limits: { max_json_request: number; max_json_response: number };
  store_types: Record<string, 'file' | 'rbd'>;
  log: { level: 'error' | 'warn' | 'info' | 'debug' };
}

export class ConfigError extends Error {}

export const CONFIG_SCHEMA_PATH = path.join(__dirname, '..', '..', 'schemas', 'config.schema.json');
const schema = JSON.parse(readFileSync(CONFIG_SCHEMA_PATH, 'utf8'));
const validate = new Ajv({ useDefaults: true, allErrors: false, strict: true }).compile(schema);

/** Environment variables that override the file; each maps to one dotted key. */
export const ENV_OVERRIDES: Record<string, string> = {
  STX_GLANCE_PROXY_LISTEN: 'listen',
  STX_GLANCE_PROXY_UPSTREAM: 'upstream',
  STX_GLANCE_PROXY_PUBLIC_URL: 'public_url',
  STX_GLANCE_PROXY_LOG_LEVEL: 'log.level',
};

type Tree = Record<string, unknown>;

function setDotted(tree: Tree, dotted: string, value: unknown): void {
  const keys = dotted.split('.');
  let node = tree;
  for (const key of keys.slice(0, -1)) {
    if (typeof node[key] !== 'object' || node[key] === null) node[key] = {};
    node = node[key] as Tree;
  }
  node[keys[keys.length - 1]] = value;
}

function describe(error: ErrorObject, source: string): string {
  const where = error.instancePath.replace(/^\//, '').replace(/\//g, '.');
  if (error.keyword === 'additionalProperties') {
    const key = where ? `${where}.${error.params.additionalProperty}` : error.params.additionalProperty;
    return `config: unknown key '${key}' in ${source}`;
  }
  return `config: '${where || '(top level)'}' ${error.message} in ${source}`;
}

function readFile(file: string): Tree {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`config: cannot read ${file}: ${(err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = YAML.parse(text);
  } catch (err) {
    throw new ConfigError(`config: ${file} is not valid YAML or JSON: ${(err as Error).message.split('\n')[0]}`);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(`config: ${file} must hold a mapping of keys`);
  return parsed as Tree;
}

/** Coerces env/flag strings to the type the schema expects at that key. */
function coerce(dotted: string, value: string): unknown {
  let node: { type?: string | string[]; properties?: Tree } = schema;
  for (const key of dotted.split('.')) node = (node.properties?.[key] ?? {}) as typeof node;
  const types = ([] as string[]).concat(node.type ?? 'string');
  if ((types.includes('number') || types.includes('integer')) && /^\s*-?\d+(\.\d+)?\s*$/.test(value)) return Number(value);
  if (types.includes('null') && value === '') return null;
  return value;
}

export interface LoadOptions {
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Dotted keys from command-line flags; they win over the file and the environment. */
  overrides?: Record<string, string | undefined>;
}

/** file < environment < flags, then validated against the schema (which also fills defaults). */
export function loadConfig(options: LoadOptions = {}): ProxyConfig {
  const env = options.env ?? process.env;
  const file = options.file ?? env.STX_GLANCE_PROXY_CONFIG;
  const tree: Tree = file ? readFile(file) : {};
  const source = file ?? 'the configuration';
  for (const [name, dotted] of Object.entries(ENV_OVERRIDES)) {
    const value = env[name];
    if (value !== undefined) setDotted(tree, dotted, coerce(dotted, value));
  }
  for (const [dotted, value] of Object.entries(options.overrides ?? {})) {
    if (value !== undefined) setDotted(tree, dotted, coerce(dotted, value));
  }
  if (!validate(tree)) throw new ConfigError(describe(validate.errors![0], source));
  const config = tree as unknown as ProxyConfig;
  if (config.upstream) config.upstream = config.upstream.replace(/\/$/, '');
  return config;
}
