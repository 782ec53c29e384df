import http from 'node:http';
import https from 'node:https';
import type { ServiceAuthConfig } from '../config/load';

/**
 * The service identity of the raw-cache worker and reconciler: a Keystone v3 token, obtained with a
 * password or an application credential, kept until shortly before it expires, and the service
 * catalog that came with it (where Glance is). Client tokens never pass through here; the proxy
 * forwards those untouched.
 */
export interface ServiceAuth {
  /** Headers that carry the service token; authenticates first when there is no usable token. */
  authHeaders(): Promise<Record<string, string>>;
  /** Glance's base URL from the token's catalog: the `image` service at the configured interface and region. */
  imageEndpoint(): Promise<string | undefined>;
  /** Forgets the token (Glance answered 401 to it, e.g. after a revocation); the next call authenticates again. */
  invalidate(): void;
}

/** What this module logs through; a winston logger fits. */
export interface ServiceAuthLogger {
  info(message: string, meta?: Record<string, unknown>): unknown;
  warn(message: string, meta?: Record<string, unknown>): unknown;
}

export interface ServiceAuthOptions {
  /** Milliseconds since the epoch; tests move it forward to reach the renewal margin. */
  now?: () => number;
  /** How long one Keystone request may take. */
  timeoutMs?: number;
}

/** A token is renewed this long before it expires (at most a quarter of its lifetime, for short-lived tokens). */
const RENEW_MARGIN_MS = 5 * 60_000;
const DEFAULT_TIMEOUT_MS = 30_000;
/** A token response carries the whole catalog; anything this large is not one. */
const MAX_RESPONSE_BYTES = 8 * 1024 * 1024;

interface CatalogEndpoint {
  interface?: string;
  region?: string | null;
  region_id?: string | null;
  url?: string;
}

interface CatalogService {
  type?: string;
  endpoints?: CatalogEndpoint[];
}

interface TokenBody {
  token?: {
    expires_at?: string;
    issued_at?: string;
    catalog?: CatalogService[];
    user?: { name?: string; domain?: { name?: string } };
    project?: { name?: string; domain?: { name?: string } };
  };
}

interface Session {
  token: string;
  /** Local clock time after which the token is not handed out any more. */
  renewAt: number;
  catalog: CatalogService[];
}

export function createServiceAuth(config: ServiceAuthConfig, logger: ServiceAuthLogger, options: ServiceAuthOptions = {}): ServiceAuth {
  const now = options.now ?? Date.now;
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const tokensUrl = new URL(`${identityV3Url(config.auth_url)}/auth/tokens`);
  const requestBody = JSON.stringify(authRequest(config));
  let session: Session | undefined;
  let pending: Promise<Session> | undefined;
  let missingEndpointReported = false;

  const authenticate = async (): Promise<Session> => {
    const sentAt = now();
    const answer = await postJson(tokensUrl, requestBody, timeoutMs);
    if (answer.status !== 201) {
      throw new Error(`Keystone refused the service credentials at ${tokensUrl.href}: ${answer.status} ${keystoneMessage(answer.body)}`);
    }
    const token = answer.headers['x-subject-token'];
    let body: TokenBody;
    try {
      body = JSON.parse(answer.body) as TokenBody;
    } catch {
      throw new Error(`Keystone answered ${tokensUrl.href} with a body that is not JSON`);
    }
    if (typeof token !== 'string' || token === '' || body.token === undefined) {
      throw new Error(`Keystone answered ${tokensUrl.href} without a token`);
    }
    const { expires_at: expiresAt, issued_at: issuedAt, user, project } = body.token;
    const expires = Date.parse(expiresAt ?? '');
    if (Number.isNaN(expires)) throw new Error(`Keystone answered ${tokensUrl.href} with a token without a valid expires_at`);
    // Both times come from Keystone's clock, so the lifetime holds whatever this host's clock says.
    const issued = Date.parse(issuedAt ?? '');
    const lifetime = Number.isNaN(issued) ? Math.max(0, expires - sentAt) : Math.max(0, expires - issued);
    logger.info('service identity authenticated with Keystone', {
      user: user?.name,
      user_domain: user?.domain?.name,
      project: project?.name,
      project_domain: project?.domain?.name,
      expires_at: expiresAt,
    });
    return { token, renewAt: sentAt + lifetime - Math.min(RENEW_MARGIN_MS, lifetime / 4), catalog: body.token.catalog ?? [] };
  };

  const currentSession = (): Promise<Session> => {
    if (session !== undefined && now() < session.renewAt) return Promise.resolve(session);
    // One authentication at a time: concurrent callers share its answer.
    pending ??= authenticate().then(
      (fresh) => {
        session = fresh;
        pending = undefined;
        return fresh;
      },
      (error: unknown) => {
        pending = undefined;
        throw error;
      },
    );
    return pending;
  };

  return {
    async authHeaders() {
      const { token } = await currentSession();
      return { 'X-Auth-Token': token };
    },

    async imageEndpoint() {
      const { catalog } = await currentSession();
      const url = findEndpoint(catalog, 'image', config.interface, config.region_name);
      if (url === undefined && !missingEndpointReported) {
        missingEndpointReported = true;
        logger.warn('no image endpoint in the service catalog', { interface: config.interface, region: config.region_name });
      }
      return url === undefined ? undefined : glanceBaseUrl(url);
    },

    invalidate() {
      session = undefined;
    },
  };
}

/** The request body of POST /v3/auth/tokens for the configured method. */
function authRequest(config: ServiceAuthConfig): unknown {
  const byPassword = config.username !== undefined || config.password !== undefined;
  const byApplicationCredential = config.application_credential_id !== undefined || config.application_credential_secret !== undefined;
  if (byPassword && byApplicationCredential) {
    throw new Error('service_auth: give either username and password or application_credential_id and application_credential_secret, not both');
  }
  if (byApplicationCredential) {
    if (!config.application_credential_id || !config.application_credential_secret) {
      throw new Error('service_auth: an application credential needs both application_credential_id and application_credential_secret');
    }
    // An application credential is bound to its project; Keystone refuses an explicit scope with it.
    return {
      auth: {
        identity: {
          methods: ['application_credential'],
          application_credential: { id: config.application_credential_id, secret: config.application_credential_secret },
        },
      },
    };
  }
  if (!config.username || !config.password || !config.project_name) {
    throw new Error('service_auth: needs username, password and project_name, or application_credential_id and application_credential_secret');
  }
  return {
    auth: {
      identity: {
        methods: ['password'],
        password: { user: { name: config.username, domain: domain(config.user_domain_id, config.user_domain_name), password: config.password } },
      },
      scope: { project: { name: config.project_name, domain: domain(config.project_domain_id, config.project_domain_name) } },
    },
  };
}

function domain(id: string | undefined, name: string): { id: string } | { name: string } {
  return id ? { id } : { name };
}

/** auth_url as given in clouds.yaml style (with or without /v3) to the v3 base. */
export function identityV3Url(authUrl: string): string {
  const trimmed = authUrl.replace(/\/+$/, '');
  return /\/v3$/.test(trimmed) ? trimmed : `${trimmed}/v3`;
}

/** The first endpoint of `type` at `iface`, in `region` when one is configured (by region id or legacy name). */
export function findEndpoint(catalog: readonly CatalogService[], type: string, iface: string, region: string | null | undefined): string | undefined {
  for (const service of catalog) {
    if (service.type !== type) continue;
    for (const endpoint of service.endpoints ?? []) {
      if (endpoint.interface !== iface || typeof endpoint.url !== 'string') continue;
      if (region && endpoint.region_id !== region && endpoint.region !== region) continue;
      return endpoint.url;
    }
  }
  return undefined;
}

/**
 * Catalogs often list Glance with a version suffix (…/v2); the worker's client adds the API paths
 * itself, so the base it gets ends before the version.
 */
export function glanceBaseUrl(url: string): string {
  return url.replace(/\/+$/, '').replace(/\/v[0-9]+(\.[0-9]+)?$/, '');
}

/** Keystone's JSON error message, or a short plain rendering of whatever came instead. */
function keystoneMessage(body: string): string {
  try {
    const parsed = JSON.parse(body) as { error?: { message?: unknown } };
    if (typeof parsed.error?.message === 'string') return parsed.error.message;
  } catch {
    // not JSON: fall through to the text
  }
  return body.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 200);
}

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

class KeystoneRequestError extends Error {}

function postJson(url: URL, body: string, timeoutMs: number): Promise<Answer> {
  const request = url.protocol === 'https:' ? https.request : http.request;
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'POST',
        agent: false,
        headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'Content-Length': String(Buffer.byteLength(body)) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > MAX_RESPONSE_BYTES) {
            req.destroy(new KeystoneRequestError(`Keystone's answer from ${url.href} is larger than ${MAX_RESPONSE_BYTES} bytes`));
            return;
          }
          chunks.push(chunk);
        });
        res.once('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.once('error', reject);
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new KeystoneRequestError(`Keystone did not answer ${url.href} within ${timeoutMs} ms`)));
    // The request body holds the password or secret: errors name the URL only.
    req.once('error', (error: Error) =>
      reject(error instanceof KeystoneRequestError ? error : new Error(`cannot reach Keystone at ${url.href}: ${error.message}`)),
    );
    req.end(body);
  });
}
