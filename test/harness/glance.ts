import { execFile } from 'node:child_process';
import { accessSync, closeSync, constants, openSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { fetchOnce } from './http';
import { freePort } from './ports';
import { ServiceProcess, settlesWithin } from './service-process';

export interface GlanceOptions {
  /** 'rbd' needs `extraConf` with the Ceph backend (enabled_backends, default_backend, [ceph]). */
  store?: 'file' | 'rbd';
  /** An oslo.config file read after every other one, so it overrides them. */
  extraConf?: string;
  /**
   * fake-identity: a fixed admin identity unless the request sends X-Identity-Status itself.
   * trusted-headers: identity only from the request's X-Identity-Status/X-Project-Id/X-Roles, else 401.
   * keystone: real keystonemiddleware; needs `extraConf` with [keystone_authtoken].
   */
  auth?: 'fake-identity' | 'trusted-headers' | 'keystone';
  debug?: boolean;
  startTimeoutMs?: number;
}

export interface RunningGlance {
  url: string;
  port: number;
  pid: number;
  workDir: string;
  logFile: string;
  /** Where the `fs` backend keeps image data. */
  storeDir: string;
  logs(): string;
  stop(): Promise<void>;
}

const ETC_DIR = join(__dirname, 'glance-etc');
const INSTALL_HINT = 'bash scripts/ensure-system-deps.sh glance';
const DEFAULT_START_TIMEOUT_MS = 60_000;
const DB_SYNC_TIMEOUT_MS = 120_000;

/** Starts a real glance-api (Debian's package) with its own database and store in a fresh temp dir. */
export async function startGlance(options: GlanceOptions = {}): Promise<RunningGlance> {
  const extraConf = checkedExtraConf(options);
  const glanceApi = requireExecutable('glance-api');
  const glanceManage = requireExecutable('glance-manage');

  const workDir = await mkdtemp(join(tmpdir(), 'stx-glance-'));
  const logFile = join(workDir, 'glance-api.log');
  let service: ServiceProcess | undefined;
  try {
    const port = await freePort();
    const configArgs = await writeRuntimeConfig(workDir, port, options, extraConf);
    const env = glanceEnv();
    await syncDatabase(glanceManage, configArgs, env, workDir);

    const logFd = openSync(logFile, 'a');
    try {
      service = await ServiceProcess.start(glanceApi, configArgs, { env, stdio: ['ignore', logFd, logFd] });
    } finally {
      closeSync(logFd);
    }
    const url = `http://127.0.0.1:${port}`;
    await waitUntilAnswering(url, service, logFile, options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);

    const running = service;
    let stopping: Promise<void> | undefined;
    return {
      url,
      port,
      pid: running.pid,
      workDir,
      logFile,
      storeDir: join(workDir, 'images'),
      logs: () => readFileSync(logFile, 'utf8'),
      stop: () => (stopping ??= shutDown(running, workDir)),
    };
  } catch (error) {
    await shutDown(service, workDir);
    throw error;
  }
}

function checkedExtraConf(options: GlanceOptions): string | undefined {
  const extraConf = options.extraConf === undefined ? undefined : resolve(options.extraConf);
  if (extraConf !== undefined) accessSync(extraConf, constants.R_OK);
  if (options.store === 'rbd' && extraConf === undefined) {
    throw new Error("store 'rbd' needs extraConf: a config file that defines the Ceph backend");
  }
  if (options.auth === 'keystone' && extraConf === undefined) {
    throw new Error("auth 'keystone' needs extraConf: a config file with [keystone_authtoken]");
  }
  return extraConf;
}

function requireExecutable(name: string): string {
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
  throw new Error(`${name} is not installed; run: ${INSTALL_HINT}`);
}

/** Writes the per-run settings and returns the oslo.config arguments every Glance command gets. */
async function writeRuntimeConfig(
  workDir: string,
  port: number,
  options: GlanceOptions,
  extraConf: string | undefined,
): Promise<string[]> {
  for (const dir of ['images', 'staging', 'tasks', 'locks', 'policy.d', 'conf.d']) {
    await mkdir(join(workDir, dir));
  }
  const runtimeConf = join(workDir, 'glance-runtime.conf');
  await writeFile(runtimeConf, runtimeConfig(workDir, port, options));
  return [
    '--config-file',
    join(ETC_DIR, 'glance-api.conf'),
    '--config-file',
    runtimeConf,
    ...(extraConf === undefined ? [] : ['--config-file', extraConf]),
    // An empty config dir of our own, or oslo.config would also read /etc/glance/glance-api.conf.d.
    '--config-dir',
    join(workDir, 'conf.d'),
  ];
}

function runtimeConfig(workDir: string, port: number, options: GlanceOptions): string {
  return `# Written by test/harness/glance.ts for one run; read after glance-etc/glance-api.conf.
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
policy_file = ${join(ETC_DIR, 'policy.yaml')}
# Must name an existing, empty directory. Left empty, it resolves to the config-file directory and
# oslo.policy parses every file there as policy, the Glance log included: HTTP 500 on the first check.
policy_dirs = ${workDir}/policy.d

[paste_deploy]
config_file = ${join(ETC_DIR, 'glance-api-paste.ini')}
flavor = ${options.auth ?? 'fake-identity'}
`;
}

function glanceEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  // Glance runs on Debian's /usr/bin/python3; a PYTHONHOME or PYTHONPATH meant for another Python breaks it.
  delete env.PYTHONHOME;
  // The fake-identity paste filter is imported from glance-etc; keep Python from writing caches there.
  env.PYTHONPATH = ETC_DIR;
  env.PYTHONDONTWRITEBYTECODE = '1';
  return env;
}

async function syncDatabase(glanceManage: string, configArgs: string[], env: NodeJS.ProcessEnv, workDir: string): Promise<void> {
  const logFile = join(workDir, 'db_sync.log');
  try {
    const { stdout, stderr } = await promisify(execFile)(glanceManage, [...configArgs, 'db_sync'], {
      env,
      timeout: DB_SYNC_TIMEOUT_MS,
    });
    await writeFile(logFile, stdout + stderr);
  } catch (error) {
    const { stdout = '', stderr = '', message } = error as { stdout?: string; stderr?: string; message: string };
    await writeFile(logFile, stdout + stderr);
    throw new Error(`glance-manage db_sync failed: ${message.split('\n')[0]}\n${lastLines(stdout + stderr)}`);
  }
}

async function waitUntilAnswering(url: string, service: ServiceProcess, logFile: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!service.isRunning()) {
      const { code, signal } = await service.exited;
      throw new Error(`glance-api exited (code ${code}, signal ${signal}) before answering:\n${logTail(logFile)}`);
    }
    try {
      // The paste app is loaded before the socket is served, so any answer means ready.
      await fetchOnce(`${url}/versions`, { timeoutMs: 2_000 });
      return;
    } catch {
      if (Date.now() > deadline) {
        throw new Error(`glance-api did not answer ${url}/versions within ${timeoutMs} ms:\n${logTail(logFile)}`);
      }
      await settlesWithin(service.exited, 100);
    }
  }
}

async function shutDown(service: ServiceProcess | undefined, workDir: string): Promise<void> {
  await service?.stop('SIGTERM', { group: true });
  if (process.env.KEEP_TEST_DIRS !== '1') {
    await rm(workDir, { recursive: true, force: true });
  }
}

function logTail(logFile: string): string {
  try {
    return lastLines(readFileSync(logFile, 'utf8'));
  } catch {
    return '(no log)';
  }
}

function lastLines(text: string, count = 30): string {
  return text.trimEnd().split('\n').slice(-count).join('\n');
}
