import YAML from 'yaml';
import type { ProxyConfig } from './load';

const MASK = '*****';
/** Keys whose value is a secret wherever they appear. */
const SECRET_KEY = /password|secret|token|credential_secret/i;

/** The password of a URL's userinfo, masked (amqp://user:pass@host/...); anything else as it is. */
function maskUrlPassword(value: string): string {
  const match = /^([a-z][a-z0-9+.-]*:\/\/[^:/?#@]*:)([^@/?#]*)@/i.exec(value);
  return match ? `${match[1]}${MASK}@${value.slice(match[0].length)}` : value;
}

function masked(value: unknown, key: string): unknown {
  if (value === null || value === undefined) return value;
  if (SECRET_KEY.test(key) && typeof value === 'string') return MASK;
  if (typeof value === 'string') return maskUrlPassword(value);
  if (Array.isArray(value)) return value.map((item) => masked(item, key));
  if (typeof value === 'object') {
    return Object.fromEntries(Object.entries(value as Record<string, unknown>).map(([k, v]) => [k, masked(v, k)]));
  }
  return value;
}

/**
 * The effective configuration (every default filled in, the environment and flags applied) as YAML
 * or JSON, with secrets masked: passwords, application credential secrets, and the password in a
 * URL such as rawcache.queue.amqp_url.
 */
export function renderEffectiveConfig(config: ProxyConfig, format: 'yaml' | 'json'): string {
  const shown = masked(config, '');
  return format === 'json' ? `${JSON.stringify(shown, null, 2)}\n` : YAML.stringify(shown);
}
