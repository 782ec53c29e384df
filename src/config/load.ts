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
  /** Peers whose Forwarded / X-Forwarded-* headers are kept (addresses or CIDR blocks). */
  trusted_proxies: string[];
  limits: {
    max_json_request: number;
    max_json_response: number;
    json_depth: number;
    json_members: number;
    json_elements: number;
    json_values: number;
    json_string: number;
  };
  store_types: Record<string, 'file' | 'rbd'>;
  log: { level: 'error' | 'warn' | 'info' | 'debug' };
  rawcache: RawCacheConfig;
  /** The worker's own Keystone identity; null when Glance runs without Keystone. */
  service_auth: ServiceAuthConfig | null;
  health: { disable_by_file: string | null };
  /** `listen`: the proxy's ops listener (/metrics, detailed /healthcheck); null disables it. */
  metrics: { enabled: boolean; listen: string | null; worker_listen: string | null };
}

export interface RawCacheConfig {
  enabled: boolean;
  glance_url: string | null;
  queue: {
    backend: 'sqlite' | 'amqp';
    sqlite_path: string;
    amqp_url: string | null;
    amqp_queue: string;
    amqp_partitions: number;
    lease_seconds: number;
  };
  /** The proxy's side: how long an answer waits for the queue, and where jobs go when it does not confirm. */
  trigger: { queue_wait_seconds: number; spool_dir: string | null };
  target: {
    kind: 'file' | 'rbd';
    file_dir: string;
    rbd_pool: string;
    rbd_user: string;
    ceph_conf: string;
    reserve_bytes: number;
    max_virtual_size_bytes: number;
    rbd_source_pools: string[] | null;
    file_source_dirs: string[];
  };
  worker: {
    concurrency: number;
    work_dir: string;
    max_attempts: number;
    retry_base_seconds: number;
    retry_max_seconds: number;
    step_timeout_seconds: number;
    stall_timeout_seconds: number;
    data_wait_seconds: number;
    reconcile_interval_seconds: number;
    stuck_after_seconds: number;
    leftover_stale_seconds: number;
  };
}

/**
 * How the raw-cache worker authenticates to Keystone (src/auth/keystone.ts): username and password
 * scoped to a project, or an application credential.
 */
export interface ServiceAuthConfig {
  auth_url: string;
  username?: string;
  password?: string;
  user_domain_name: string;
  user_domain_id?: string;
  project_name?: string;
  project_domain_name: string;
  project_domain_id?: string;
  application_credential_id?: string;
  application_credential_secret?: string;
  region_name: string | null;
  interface: 'public' | 'internal' | 'admin';
  /** Find Glance in the token's catalog instead of rawcache.glance_url / upstream. */
  glance_from_catalog: boolean;
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
