import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { ServiceAuthConfig } from '../../src/config/load';
import { requireExecutable } from '../../src/dev/local-glance';
import { startGlance, type GlanceOptions, type RunningGlance } from './glance';
import { fetchOnce, type HttpResponse } from './http';
import { freePort } from './ports';
import { startProxy, type ProxyOptions, type RunningProxy } from './proxy';
import { ServiceProcess, settlesWithin } from './service-process';

/**
 * A real Keystone (Debian's `keystone`, Zed) for the suites that need real tokens: sqlite, fernet
 * keys, a bootstrapped admin, the SQL catalog, all in a temp dir, served on a free 127.0.0.1 port by
 * keystone-wsgi-public (wsgiref: one request at a time, enough for tests). Helpers create projects,
 * users with roles, application credentials and catalog entries through the Identity API, and write
 * the [keystone_authtoken] settings for a keystone-mode Glance.
 *
 * startKeystoneCloud() puts the usual pieces together: Keystone, Glance checking tokens against it,
 * the proxy in front, and a catalog where the image service's public endpoint is the proxy and its
 * internal endpoint is Glance itself (where the raw-cache worker goes).
 */

export const REGION = 'RegionOne';
export const PROPERTY_PROTECTIONS_FILE = resolve(__dirname, '..', '..', 'config', 'glance-property-protections.conf');

const INSTALL_HINT = 'bash scripts/ensure-system-deps.sh keystone';
const PYTHON = '/usr/bin/python3';
const DEFAULT_START_TIMEOUT_MS = 60_000;
const MANAGE_TIMEOUT_MS = 120_000;

/**
 * keystone-manage's steps in one interpreter: each keystone-manage run spends about two seconds
 * importing keystone, four runs would spend eight. The options are parsed anew for every command.
 * The keys belong to whoever runs the tests. The admin password comes from OS_BOOTSTRAP_PASSWORD,
 * not the command line.
 *
 * Then the database goes to WAL journaling. Keystone 22 leaves a read cursor open somewhere after
 * creating an endpoint, and in sqlite's default journal mode that reader blocks the next write: the
 * second POST /v3/endpoints fails with "database is locked" (500 after five seconds), even with a
 * single-threaded server. In WAL mode readers never block a writer.
 */
const MANAGE_SCRIPT = `
import grp, os, pwd, sqlite3, sys
from keystone.cmd import cli
config_file, database, commands = sys.argv[1], sys.argv[2], sys.argv[3:]
owner = ['--keystone-user', pwd.getpwuid(os.getuid()).pw_name, '--keystone-group', grp.getgrgid(os.getgid()).gr_name]
for command in commands:
    args = command.split()
    if args[0] in ('fernet_setup', 'credential_setup'):
        args += owner
    cli.main(argv=['keystone-manage', '--config-file', config_file] + args)
    cli.CONF.reset()
    cli.CONF.clear()
sqlite3.connect(database).execute('PRAGMA journal_mode=WAL').fetchall()
`;

export type EndpointInterface = 'public' | 'internal' | 'admin';

export interface KeystoneProject {
  id: string;
  name: string;
}

/** A user with roles on one project, and what it takes to log in as it. */
export interface KeystoneUser {
  id: string;
  name: string;
  password: string;
  domain: 'Default';
  project: KeystoneProject;
  roles: string[];
}

export interface ApplicationCredential {
  id: string;
  name: string;
  secret: string;
  user: KeystoneUser;
}

export interface UserSpec {
  /** Made unique with a random suffix unless `exactName` is set. */
  name?: string;
  exactName?: boolean;
  /** The project's name; created when missing. */
  project: string;
  /** Role names on the project (created when missing), e.g. ['member'] or ['admin', 'service']. */
  roles: string[];
}

export interface GlanceConfOptions {
  /** Glance's secure RBAC (new default policies), as recent releases enforce; default true. */
  secureRbac?: boolean;
  /** A property protections file (roles format), e.g. PROPERTY_PROTECTIONS_FILE. */
  propertyProtections?: string;
  /** More oslo.config text appended as is (a Ceph backend, for example). */
  append?: string;
}

export interface KeystoneOptions {
  startTimeoutMs?: number;
  /** Token lifetime in seconds ([token] expiration); Keystone's default is 3600. */
  tokenExpiration?: number;
}

export interface RunningKeystone {
  /** http://127.0.0.1:PORT */
  url: string;
  /** url + /v3, what OS_AUTH_URL and service_auth.auth_url take. */
  authUrl: string;
  port: number;
  pid: number;
  workDir: string;
  logFile: string;
  region: string;
  /** The bootstrapped cloud admin (admin role on project admin). */
  admin: KeystoneUser;
  /** How long db_sync, the keys and bootstrap took, and how long until the first answer after that. */
  timings: { manageMs: number; firstAnswerMs: number };
  logs(): string;
  /** An Identity API request with the admin's token; `path` starts with /v3. */
  request(method: string, path: string, body?: unknown): Promise<HttpResponse>;
  ensureProject(name: string): Promise<KeystoneProject>;
  ensureRole(name: string): Promise<string>;
  createUser(spec: UserSpec): Promise<KeystoneUser>;
  /** An application credential the user creates for itself, with all its roles unless `roles` narrows them. */
  createApplicationCredential(user: KeystoneUser, options?: { roles?: string[] }): Promise<ApplicationCredential>;
  /** A project-scoped token for the user (password authentication). */
  issueToken(user: KeystoneUser): Promise<string>;
  /** Points the catalog's `type` endpoint at `url` for one interface, creating the service if needed. */
  setEndpoint(type: string, serviceName: string, iface: EndpointInterface, url: string): Promise<void>;
  /** The image service's endpoints, by interface. */
  setImageEndpoints(urls: Partial<Record<EndpointInterface, string>>): Promise<void>;
  /**
   * Creates Glance's own service user (once) and writes an oslo.config file for startGlance's
   * `extraConf` with auth: 'keystone': [keystone_authtoken] pointing here, plus the options.
   */
  writeGlanceConf(options?: GlanceConfOptions): Promise<string>;
  /** OS_* variables for the openstack CLI acting as `user` (password authentication). */
  openstackEnv(user: KeystoneUser): Record<string, string>;
  /** The service_auth configuration section for an identity: a user (password) or an application credential. */
  serviceAuthConfig(identity: KeystoneUser | ApplicationCredential, overrides?: Partial<ServiceAuthConfig>): ServiceAuthConfig;
  stop(): Promise<void>;
}

/** Starts a real Keystone in a fresh temp dir and bootstraps it; the catalog holds only Keystone itself. */
export async function startKeystone(options: KeystoneOptions = {}): Promise<RunningKeystone> {
  requireExecutable('keystone-wsgi-public', INSTALL_HINT);
  const workDir = await mkdtemp(join(tmpdir(), 'stx-keystone-'));
  const logFile = join(workDir, 'keystone.log');
  let service: ServiceProcess | undefined;
  try {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const authUrl = `${url}/v3`;
    const adminPassword = randomSecret();
    const database = join(workDir, 'keystone.sqlite');
    const configFile = await writeKeystoneConf(workDir, database, options);

    const manageStart = Date.now();
    await manage(workDir, configFile, database, authUrl, adminPassword);
    const manageMs = Date.now() - manageStart;

    const logFd = openSync(logFile, 'a');
    try {
      service = await ServiceProcess.start(PYTHON, ['/usr/bin/keystone-wsgi-public', '--host', '127.0.0.1', '--port', String(port)], {
        env: { ...pythonEnv(), OS_KEYSTONE_CONFIG_FILES: configFile },
        stdio: ['ignore', logFd, logFd],
      });
    } finally {
      closeSync(logFd);
    }
    const answerStart = Date.now();
    await waitForKeystone(authUrl, service, options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS, () => logTail(logFile));
    const firstAnswerMs = Date.now() - answerStart;

    const identity = new IdentityApi(authUrl, { name: 'admin', password: adminPassword, projectName: 'admin' });
    const admin = await identity.describeBootstrapAdmin(adminPassword);
    const running = service;
    let stopping: Promise<void> | undefined;
    let glanceUser: Promise<KeystoneUser> | undefined;
    let confCount = 0;

    const keystone: RunningKeystone = {
      url,
      authUrl,
      port,
      pid: running.pid,
      workDir,
      logFile,
      region: REGION,
      admin,
      timings: { manageMs, firstAnswerMs },
      logs: () => readFileSync(logFile, 'utf8'),
      request: (method, path, body) => identity.request(method, path, body),
      ensureProject: (name) => identity.ensureProject(name),
      ensureRole: (name) => identity.ensureRole(name),
      createUser: (spec) => identity.createUser(spec),
      createApplicationCredential: (user, credentialOptions) => identity.createApplicationCredential(user, credentialOptions?.roles),
      issueToken: (user) => identity.issueToken(user),
      setEndpoint: (type, serviceName, iface, endpointUrl) => identity.setEndpoint(type, serviceName, iface, endpointUrl),
      async setImageEndpoints(urls) {
        for (const [iface, endpointUrl] of Object.entries(urls) as Array<[EndpointInterface, string | undefined]>) {
          if (endpointUrl !== undefined) await identity.setEndpoint('image', 'glance', iface, endpointUrl);
        }
      },
      async writeGlanceConf(confOptions = {}) {
        glanceUser ??= identity.createUser({ name: 'glance', exactName: true, project: 'service', roles: ['service'] });
        const user = await glanceUser;
        const file = join(workDir, `glance-keystone-${++confCount}.conf`);
        await writeFile(file, glanceConf(authUrl, user, confOptions), { mode: 0o600 });
        return file;
      },
      openstackEnv: (user) => ({
        OS_AUTH_TYPE: 'password',
        OS_AUTH_URL: authUrl,
        OS_IDENTITY_API_VERSION: '3',
        OS_USERNAME: user.name,
        OS_PASSWORD: user.password,
        OS_USER_DOMAIN_NAME: user.domain,
        OS_PROJECT_NAME: user.project.name,
        OS_PROJECT_DOMAIN_NAME: 'Default',
        OS_REGION_NAME: REGION,
        OS_INTERFACE: 'public',
      }),
      serviceAuthConfig: (identityOf, overrides = {}) => ({
        auth_url: authUrl,
        user_domain_name: 'Default',
        project_domain_name: 'Default',
        region_name: null,
        interface: 'internal',
        glance_from_catalog: false,
        ...('secret' in identityOf
          ? { application_credential_id: identityOf.id, application_credential_secret: identityOf.secret }
          : { username: identityOf.name, password: identityOf.password, project_name: identityOf.project.name }),
        ...overrides,
      }),
      stop: () => (stopping ??= shutDown(running, workDir)),
    };
    return keystone;
  } catch (error) {
    await shutDown(service, workDir);
    throw error;
  }
}

export type CloudProxyOptions = Omit<ProxyOptions, 'upstream'>;

export interface KeystoneCloudOptions {
  keystone?: KeystoneOptions;
  /** Glance's options other than auth and extraConf. */
  glance?: Omit<GlanceOptions, 'auth' | 'extraConf'>;
  /** The keystone-mode Glance's configuration (property protections, RBAC, more settings). */
  glanceConf?: GlanceConfOptions;
  /**
   * The proxy's options other than its upstream, or a function that makes them once Keystone and
   * Glance run (to write a configuration that names them); false: no proxy, the public endpoint is Glance.
   */
  proxy?: CloudProxyOptions | ((started: { keystone: RunningKeystone; glance: RunningGlance; worker: KeystoneUser }) => CloudProxyOptions | Promise<CloudProxyOptions>) | false;
}

export interface KeystoneCloud {
  keystone: RunningKeystone;
  glance: RunningGlance;
  proxy: RunningProxy | undefined;
  /**
   * The raw-cache worker's identity as an operator would create it: user `stx-glance-proxy` with
   * the admin and service roles in project `service`. keystone.serviceAuthConfig(worker) configures it.
   */
  worker: KeystoneUser;
  /** The extraConf file Glance runs with. */
  glanceConfFile: string;
  /** Stops the proxy, Glance and Keystone, in that order. */
  stop(): Promise<void>;
}

/** Roles of the worker's identity: admin to see and update every project's images, service for the property protections. */
export const WORKER_ROLES = ['admin', 'service'];

/**
 * Keystone, a keystone-mode Glance, the proxy in front of it, and a catalog where the image service's
 * public endpoint is the proxy (what users and their CLIs reach) and its internal and admin endpoints
 * are Glance itself (what the raw-cache worker uses with `glance_from_catalog`, interface internal).
 */
export async function startKeystoneCloud(options: KeystoneCloudOptions = {}): Promise<KeystoneCloud> {
  const keystone = await startKeystone(options.keystone);
  let glance: RunningGlance | undefined;
  let proxy: RunningProxy | undefined;
  const stopAll = async (): Promise<void> => {
    await proxy?.stop();
    await glance?.stop();
    await keystone.stop();
  };
  try {
    const glanceConfFile = await keystone.writeGlanceConf(options.glanceConf);
    const worker = await keystone.createUser({ name: 'stx-glance-proxy', exactName: true, project: 'service', roles: WORKER_ROLES });
    glance = await startGlance({ ...options.glance, auth: 'keystone', extraConf: glanceConfFile });
    if (options.proxy !== false) {
      const proxyOptions = typeof options.proxy === 'function' ? await options.proxy({ keystone, glance, worker }) : options.proxy;
      proxy = await startProxy({ ...proxyOptions, upstream: glance.url });
    }
    await keystone.setImageEndpoints({ public: proxy?.url ?? glance.url, internal: glance.url, admin: glance.url });
    let stopping: Promise<void> | undefined;
    return { keystone, glance, proxy, worker, glanceConfFile, stop: () => (stopping ??= stopAll()) };
  } catch (error) {
    await stopAll();
    throw error;
  }
}

function glanceConf(authUrl: string, user: KeystoneUser, options: GlanceConfOptions): string {
  const secureRbac = (options.secureRbac ?? true) ? 'True' : 'False';
  const lines = [
    '# Written by the test harness for a keystone-mode Glance; read after the dev Glance configuration.',
    '[DEFAULT]',
    // Glance refuses to start when these two disagree.
    `enforce_secure_rbac = ${secureRbac}`,
  ];
  if (options.propertyProtections !== undefined) {
    lines.push(`property_protection_file = ${resolve(options.propertyProtections)}`, 'property_protection_rule_format = roles');
  }
  lines.push(
    '',
    '[oslo_policy]',
    `enforce_new_defaults = ${secureRbac}`,
    '',
    '[keystone_authtoken]',
    `www_authenticate_uri = ${authUrl}`,
    `auth_url = ${authUrl}`,
    'auth_type = password',
    `username = ${user.name}`,
    `password = ${user.password}`,
    'user_domain_name = Default',
    `project_name = ${user.project.name}`,
    'project_domain_name = Default',
    `region_name = ${REGION}`,
    'service_token_roles_required = true',
    // No memcached: keystonemiddleware keeps validated tokens in process memory.
    '',
  );
  if (options.append !== undefined) lines.push(options.append, '');
  return lines.join('\n');
}

async function writeKeystoneConf(workDir: string, database: string, options: KeystoneOptions): Promise<string> {
  // Keystone warns on every request about key repositories others can read.
  for (const dir of ['fernet-keys', 'credential-keys', 'policy.d']) await mkdir(join(workDir, dir), { mode: 0o700 });
  const policyFile = join(workDir, 'policy.yaml');
  await writeFile(policyFile, '# Keystone\'s in-code defaults.\n{}\n');
  const configFile = join(workDir, 'keystone.conf');
  await writeFile(
    configFile,
    `# Written for one run of a test Keystone.
[DEFAULT]
use_stderr = True

[database]
connection = sqlite:///${database}

[token]
provider = fernet
expiration = ${options.tokenExpiration ?? 3600}

[fernet_tokens]
key_repository = ${workDir}/fernet-keys

[fernet_receipts]
key_repository = ${workDir}/fernet-keys

[credential]
key_repository = ${workDir}/credential-keys

[identity]
# bcrypt's cheapest setting: every password login hashes once, and tests log in a lot.
password_hash_rounds = 4

[oslo_policy]
# Absolute paths, so that nothing under /etc/keystone applies to a test run.
policy_file = ${policyFile}
policy_dirs = ${workDir}/policy.d
`,
  );
  return configFile;
}

async function manage(workDir: string, configFile: string, database: string, authUrl: string, adminPassword: string): Promise<void> {
  const logFile = join(workDir, 'keystone-manage.log');
  const commands = [
    'db_sync',
    'fernet_setup',
    'credential_setup',
    // Registers the identity service and its endpoints in the (SQL) catalog.
    `bootstrap --bootstrap-region-id ${REGION} --bootstrap-public-url ${authUrl} --bootstrap-internal-url ${authUrl} --bootstrap-admin-url ${authUrl}`,
  ];
  try {
    const { stdout, stderr } = await promisify(execFile)(PYTHON, ['-c', MANAGE_SCRIPT, configFile, database, ...commands], {
      env: { ...pythonEnv(), OS_BOOTSTRAP_PASSWORD: adminPassword },
      timeout: MANAGE_TIMEOUT_MS,
      maxBuffer: 16 * 1024 * 1024,
    });
    await writeFile(logFile, stdout + stderr);
  } catch (error) {
    const { stdout = '', stderr = '', message } = error as { stdout?: string; stderr?: string; message: string };
    await writeFile(logFile, stdout + stderr);
    const tail = (stdout + stderr).trimEnd().split('\n').slice(-30).join('\n');
    throw new Error(`keystone-manage failed: ${message.split('\n')[0]}\n${tail}`);
  }
}

function pythonEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PYTHONDONTWRITEBYTECODE: '1' };
  // Keystone runs on Debian's /usr/bin/python3; settings meant for another Python, or a user's cloud, must not leak in.
  for (const name of Object.keys(env)) {
    if (name.startsWith('OS_') || name === 'PYTHONHOME' || name === 'PYTHONPATH') delete env[name];
  }
  return env;
}

async function waitForKeystone(authUrl: string, service: ServiceProcess, timeoutMs: number, describeFailure: () => string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!service.isRunning()) throw new Error(`keystone exited before answering:\n${describeFailure()}`);
    try {
      const res = await fetchOnce(authUrl, { timeoutMs: 2_000 });
      if (res.status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`keystone did not answer ${authUrl} within ${timeoutMs} ms:\n${describeFailure()}`);
    await settlesWithin(service.exited, 100);
  }
}

async function shutDown(service: ServiceProcess | undefined, workDir: string): Promise<void> {
  await service?.stop('SIGTERM', { group: true });
  if (process.env.KEEP_TEST_DIRS !== '1') await rm(workDir, { recursive: true, force: true });
}

function logTail(logFile: string): string {
  try {
    return readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-30).join('\n');
  } catch {
    return '(no log)';
  }
}

function randomSecret(): string {
  return randomBytes(16).toString('hex');
}

function uniqueName(name: string): string {
  return `${name}-${randomBytes(4).toString('hex')}`;
}

/** The Identity API as the admin, and as other users where Keystone wants the user itself. */
class IdentityApi {
  private adminToken: Promise<string> | undefined;
  private readonly projects = new Map<string, Promise<KeystoneProject>>();
  private readonly roles = new Map<string, Promise<string>>();

  constructor(
    private readonly authUrl: string,
    private readonly adminLogin: { name: string; password: string; projectName: string },
  ) {}

  async describeBootstrapAdmin(password: string): Promise<KeystoneUser> {
    const { body } = await this.login(this.adminLogin.name, password, this.adminLogin.projectName);
    const token = body.token as { user: { id: string; name: string }; project: KeystoneProject; roles: Array<{ name: string }> };
    return {
      id: token.user.id,
      name: token.user.name,
      password,
      domain: 'Default',
      project: { id: token.project.id, name: token.project.name },
      roles: token.roles.map((role) => role.name),
    };
  }

  async request(method: string, path: string, body?: unknown): Promise<HttpResponse> {
    for (let attempt = 0; ; attempt++) {
      this.adminToken ??= this.login(this.adminLogin.name, this.adminLogin.password, this.adminLogin.projectName).then(
        (answer) => answer.token,
        (error: unknown) => {
          this.adminToken = undefined;
          throw error;
        },
      );
      const token = await this.adminToken;
      const res = await this.send(method, path, body, token);
      if (res.status !== 401 || attempt > 0) return res;
      this.adminToken = undefined;
    }
  }

  ensureProject(name: string): Promise<KeystoneProject> {
    let project = this.projects.get(name);
    if (project === undefined) {
      project = this.findOrCreate('projects', 'project', { name, domain_id: 'default' }, `?name=${encodeURIComponent(name)}`) as Promise<KeystoneProject>;
      this.projects.set(name, project);
      project.catch(() => this.projects.delete(name));
    }
    return project;
  }

  ensureRole(name: string): Promise<string> {
    let role = this.roles.get(name);
    if (role === undefined) {
      role = this.findOrCreate('roles', 'role', { name }, `?name=${encodeURIComponent(name)}`).then((found) => found.id);
      this.roles.set(name, role);
      role.catch(() => this.roles.delete(name));
    }
    return role;
  }

  async createUser(spec: UserSpec): Promise<KeystoneUser> {
    const project = await this.ensureProject(spec.project);
    const name = spec.exactName ? (spec.name ?? 'user') : uniqueName(spec.name ?? 'user');
    const password = randomSecret();
    const created = await this.expect(201, 'POST', '/v3/users', { user: { name, password, domain_id: 'default', enabled: true } });
    const id = (created.user as { id: string }).id;
    for (const role of spec.roles) {
      const roleId = await this.ensureRole(role);
      await this.expect(204, 'PUT', `/v3/projects/${project.id}/users/${id}/roles/${roleId}`);
    }
    return { id, name, password, domain: 'Default', project, roles: [...spec.roles] };
  }

  async createApplicationCredential(user: KeystoneUser, roles?: string[]): Promise<ApplicationCredential> {
    const token = await this.issueToken(user);
    const name = uniqueName(`${user.name}-appcred`);
    const body = { application_credential: { name, ...(roles === undefined ? {} : { roles: roles.map((role) => ({ name: role })) }) } };
    // Keystone lets only the user itself create its application credentials.
    const res = await this.send('POST', `/v3/users/${user.id}/application_credentials`, body, token);
    if (res.status !== 201) throw new Error(`Keystone answered ${res.status} to creating an application credential: ${res.text()}`);
    const credential = res.json().application_credential as { id: string; secret: string };
    return { id: credential.id, name, secret: credential.secret, user };
  }

  async issueToken(user: KeystoneUser): Promise<string> {
    return (await this.login(user.name, user.password, user.project.name)).token;
  }

  async setEndpoint(type: string, serviceName: string, iface: EndpointInterface, url: string): Promise<void> {
    const services = (await this.expect(200, 'GET', `/v3/services?type=${encodeURIComponent(type)}`)).services as Array<{ id: string }>;
    const serviceId =
      services[0]?.id ?? ((await this.expect(201, 'POST', '/v3/services', { service: { type, name: serviceName, enabled: true } })).service as { id: string }).id;
    const query = `?service_id=${serviceId}&interface=${iface}&region_id=${REGION}`;
    const endpoints = (await this.expect(200, 'GET', `/v3/endpoints${query}`)).endpoints as Array<{ id: string }>;
    if (endpoints.length > 0) {
      await this.expect(200, 'PATCH', `/v3/endpoints/${endpoints[0].id}`, { endpoint: { url } });
    } else {
      await this.expect(201, 'POST', '/v3/endpoints', { endpoint: { service_id: serviceId, interface: iface, region_id: REGION, url, enabled: true } });
    }
  }

  private async findOrCreate(collection: string, member: string, body: Record<string, unknown>, query: string): Promise<{ id: string; name: string }> {
    const found = (await this.expect(200, 'GET', `/v3/${collection}${query}`))[collection] as Array<{ id: string; name: string }>;
    if (found.length > 0) return { id: found[0].id, name: found[0].name };
    const created = (await this.expect(201, 'POST', `/v3/${collection}`, { [member]: body }))[member] as { id: string; name: string };
    return { id: created.id, name: created.name };
  }

  private async expect(status: number, method: string, path: string, body?: unknown): Promise<Record<string, unknown>> {
    const res = await this.request(method, path, body);
    if (res.status !== status) throw new Error(`Keystone answered ${res.status} to ${method} ${path}: ${res.text()}`);
    return res.body.length > 0 ? res.json() : {};
  }

  private async login(name: string, password: string, projectName: string): Promise<{ token: string; body: Record<string, unknown> }> {
    const res = await this.send('POST', '/v3/auth/tokens', {
      auth: {
        identity: { methods: ['password'], password: { user: { name, domain: { id: 'default' }, password } } },
        scope: { project: { name: projectName, domain: { id: 'default' } } },
      },
    });
    const token = res.header('x-subject-token');
    if (res.status !== 201 || token === undefined) throw new Error(`Keystone answered ${res.status} to logging in as ${name}: ${res.text()}`);
    return { token, body: res.json() };
  }

  private send(method: string, path: string, body?: unknown, token?: string): Promise<HttpResponse> {
    return fetchOnce(`${this.authUrl}${path.replace(/^\/v3/, '')}`, {
      method,
      headers: { Accept: 'application/json', ...(token === undefined ? {} : { 'X-Auth-Token': token }) },
      json: body,
    });
  }
}
