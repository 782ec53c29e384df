import { readFileSync } from 'node:fs';
import path from 'node:path';
import Ajv, { type ErrorObject } from 'ajv';
import YAML from 'yaml';
import type { ProxyConfig } from './schema-types';

/**
 * The validated configuration, with every default filled in: its type is generated from
 * schemas/config.schema.json (scripts/gen-config-types.js), so the two cannot drift apart.
 */
export type { ProxyConfig, RawCacheConfig, ServiceAuthConfig } from './schema-types';

export class ConfigError extends Error {}

export const CONFIG_SCHEMA_PATH = path.join(__dirname, '..', '..', 'schemas', 'config.schema.json');
const schema = JSON.parse(readFileSync(CONFIG_SCHEMA_PATH, 'utf8'));
const validate = new Ajv({ useDefaults: true, allErrors: false, strict: true }).compile(schema);
const validateAll = new Ajv({ useDefaults: true, allErrors: true, strict: true }).compile(schema);

/** Environment variables that override the file; each maps to one dotted key. */
export const ENV_OVERRIDES: Record<string, string> = {
  STX_GLANCE_PROXY_LISTEN: 'listen',
  STX_GLANCE_PROXY_UPSTREAM: 'upstream',
  STX_GLANCE_PROXY_PUBLIC_URL: 'public_url',
  STX_GLANCE_PROXY_LOG_LEVEL: 'log.level',
  STX_GLANCE_PROXY_WORKER_LISTEN: 'metrics.worker_listen',
  STX_GLANCE_PROXY_OPS_LISTEN: 'metrics.listen',
  STX_GLANCE_PROXY_AMQP_URL: 'rawcache.queue.amqp_url',
  // Secrets of the worker's service identity, so that they need not sit in the file.
  STX_GLANCE_PROXY_SERVICE_PASSWORD: 'service_auth.password',
  STX_GLANCE_PROXY_SERVICE_APPLICATION_CREDENTIAL_SECRET: 'service_auth.application_credential_secret',
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

/** The configuration as given (file < environment < flags), not yet validated, and where it came from. */
function gather(options: LoadOptions): { tree: Tree; source: string } {
  const env = options.env ?? process.env;
  const file = options.file ?? env.STX_GLANCE_PROXY_CONFIG;
  const tree: Tree = file ? readFile(file) : {};
  for (const [name, dotted] of Object.entries(ENV_OVERRIDES)) {
    const value = env[name];
    if (value !== undefined) setDotted(tree, dotted, coerce(dotted, value));
  }
  for (const [dotted, value] of Object.entries(options.overrides ?? {})) {
    if (value !== undefined) setDotted(tree, dotted, coerce(dotted, value));
  }
  return { tree, source: file ?? 'the configuration' };
}

/** file < environment < flags, then validated against the schema (which also fills defaults). */
export function loadConfig(options: LoadOptions = {}): ProxyConfig {
  const { tree, source } = gather(options);
  if (!validate(tree)) throw new ConfigError(describe(validate.errors![0], source));
  const config = tree as unknown as ProxyConfig;
  if (config.upstream) config.upstream = config.upstream.replace(/\/$/, '');
  return config;
}

/**
 * Every problem of a configuration, one line each naming the key, instead of the first one only
 * (loadConfig stops there): what `stx-glance-proxy config check` prints. Empty when it loads.
 */
export function configProblems(options: LoadOptions = {}): string[] {
  let gathered: { tree: Tree; source: string };
  try {
    gathered = gather(options);
  } catch (err) {
    if (err instanceof ConfigError) return [err.message];
    throw err;
  }
  if (validateAll(gathered.tree)) return [];
  return validateAll.errors!.map((error) => describe(error, gathered.source));
}
