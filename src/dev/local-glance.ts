import { execFile } from 'node:child_process';
import { accessSync, constants } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import http from 'node:http';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { promisify } from 'node:util';

/**
 * A real Glance (Debian's glance-api) run by hand in a directory of its own: sqlite database,
 * file store, staging for glance-direct import, no Keystone unless asked. Used by `stack` for a
 * local endpoint and by the test harness; neither is meant for production.
 */

/** Static settings: glance-api.conf, the paste pipelines, the test identity filter, policy, schema. */
export const DEV_GLANCE_ETC = resolve(__dirname, '..', '..', 'config', 'dev-glance');
const INSTALL_HINT = 'bash scripts/ensure-system-deps.sh glance';
const DB_SYNC_TIMEOUT_MS = 120_000;

export interface LocalGlanceOptions {
  /** An oslo.config file read after every other one, so it overrides them (extra stores, keystone). */
  extraConf?: string;
  /**
   * fake-identity: a fixed admin identity unless the request sends X-Identity-Status itself.
   * trusted-headers: identity only from the request's X-Identity-Status/X-Project-Id/X-Roles, else 401.
   * keystone: real keystonemiddleware; needs `extraConf` with [keystone_authtoken].
   */
  auth?: 'fake-identity' | 'trusted-headers' | 'keystone';
  debug?: boolean;
}

export interface GlanceLaunch {
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
}

export function requireExecutable(name: string, hint = INSTALL_HINT): string {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!isAbsolute(dir)) continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      continue;
    }
  }
  throw new Error(`${name} is not installed; run: ${hint}`);
}

/**
 * Lays out `workDir` (kept if it exists: the database and images survive a restart), writes the
 * runtime settings, brings the database schema up to date, and returns how to start glance-api.
 */
export async function prepareLocalGlance(workDir: string, port: number, options: LocalGlanceOptions = {}): Promise<GlanceLaunch> {
  const glanceApi = requireExecutable('glance-api');
  const glanceManage = requireExecutable('glance-manage');
  for (const dir of ['images', 'staging', 'tasks', 'locks', 'policy.d', 'conf.d']) {
    await mkdir(join(workDir, dir), { recursive: true });
  }
  const runtimeConf = join(workDir, 'glance-runtime.conf');
  await writeFile(runtimeConf, runtimeConfig(workDir, port, options));
  const args = [
    '--config-file',
    join(DEV_GLANCE_ETC, 'glance-api.conf'),
    '--config-file',
    runtimeConf,
    ...(options.extraConf === undefined ? [] : ['--config-file', resolve(options.extraConf)]),
    // An empty config dir of our own, or oslo.config would also read /etc/glance/glance-api.conf.d.
    '--config-dir',
    join(workDir, 'conf.d'),
  ];
  const env = glanceEnv();
  await syncDatabase(glanceManage, args, env, workDir);
  return { command: glanceApi, args, env };
}

function runtimeConfig(workDir: string, port: number, options: LocalGlanceOptions): string {
  return `# Written for one run of a local Glance; read after ${join(DEV_GLANCE_ETC, 'glance-api.conf')}.
[DEFAULT]
bind_host = 127.0.0.1
bind_port = ${port}
debug = ${options.debug ? 'True' : 'False'}
# Only read when an extra config switches back to the legacy single-store mode.
node_staging_uri = file://${workDir}/staging

[database]
connection = sqlite:///${workDir}/glance.sqlite

[fs]
filesystem_store_datadir = ${workDir}/images/

[glance_store]
filesystem_store_datadir = ${workDir}/images/

[os_glance_staging_store]
filesystem_store_datadir = ${workDir}/staging/

[os_glance_tasks_store]
filesystem_store_datadir = ${workDir}/tasks/

[task]
work_dir = ${workDir}/tasks

[oslo_concurrency]
lock_path = ${workDir}/locks

[oslo_policy]
policy_file = ${join(DEV_GLANCE_ETC, 'policy.yaml')}
# Must name an existing, empty directory. Left empty, it resolves to the config-file directory and
# oslo.policy parses every file there as policy, the Glance log included: HTTP 500 on the first check.
policy_dirs = ${workDir}/policy.d

[paste_deploy]
config_file = ${join(DEV_GLANCE_ETC, 'glance-api-paste.ini')}
flavor = ${options.auth ?? 'fake-identity'}
`;
}

function glanceEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // Glance runs on Debian's /usr/bin/python3; a PYTHONHOME or PYTHONPATH meant for another Python breaks it.
  delete env.PYTHONHOME;
  // The fake-identity paste filter is imported from the etc dir; keep Python from writing caches there.
  env.PYTHONPATH = DEV_GLANCE_ETC;
  env.PYTHONDONTWRITEBYTECODE = '1';
  return env;
}

async function syncDatabase(glanceManage: string, configArgs: string[], env: NodeJS.ProcessEnv, workDir: string): Promise<void> {
  const logFile = join(workDir, 'db_sync.log');
  try {
    const { stdout, stderr } = await promisify(execFile)(glanceManage, [...configArgs, 'db_sync'], { env, timeout: DB_SYNC_TIMEOUT_MS });
    await writeFile(logFile, stdout + stderr);
  } catch (error) {
    const { stdout = '', stderr = '', message } = error as { stdout?: string; stderr?: string; message: string };
    await writeFile(logFile, stdout + stderr);
    const tail = (stdout + stderr).trimEnd().split('\n').slice(-30).join('\n');
    throw new Error(`glance-manage db_sync failed: ${message.split('\n')[0]}\n${tail}`);
  }
}

/** Resolves once `url`/versions answers at all; rejects when `exited` settles first or time runs out. */
export async function waitForGlance(url: string, exited: Promise<unknown>, timeoutMs: number, describeFailure: () => string): Promise<void> {
  let gone = false;
  void exited.then(() => (gone = true));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (gone) throw new Error(`glance-api exited before answering:\n${describeFailure()}`);
    // The paste app is loaded before the socket is served, so any answer means ready.
    if (await answers(`${url}/versions`)) return;
    if (Date.now() > deadline) throw new Error(`glance-api did not answer ${url}/versions within ${timeoutMs} ms:\n${describeFailure()}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function answers(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: 2000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.once('timeout', () => req.destroy());
    req.once('error', () => resolve(false));
  });
}
