import { spawn, type ChildProcess } from 'node:child_process';
import { openSync, closeSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ConfigError, type ProxyConfig } from '../config/load';
import { splitHostPort } from '../http/server';
import { prepareLocalGlance, waitForGlance } from './local-glance';

/**
 * `stack`: when no upstream Glance is configured, a local real Glance is started beside the proxy
 * (data kept in STATE_DIR between runs), so that one command gives a working image endpoint.
 */
export interface LocalStack {
  glanceUrl: string;
  stop(): Promise<void>;
}

/** 127.0.0.0/8, ::1 and localhost: addresses no other host can reach. */
export function isLoopbackHost(host: string): boolean {
  const name = host.toLowerCase();
  if (name === 'localhost' || name === '::1' || name === '0:0:0:0:0:0:0:1') return true;
  const v4 = /^(?:::ffff:)?127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(name);
  return v4 !== null && v4.slice(1).every((octet) => Number(octet) <= 255);
}

/**
 * The local development Glance takes every caller for an admin of a test project (its paste
 * pipeline stands in for Keystone): a stack that starts one serves this host only.
 */
export function assertStackServesThisHostOnly(config: Pick<ProxyConfig, 'listen' | 'metrics'>): void {
  const listeners = [
    ['listen', config.listen],
    ['metrics.listen', config.metrics.listen],
    ['metrics.worker_listen', config.metrics.worker_listen],
  ] as const;
  for (const [what, address] of listeners) {
    if (address !== null && !isLoopbackHost(splitHostPort(address).host)) {
      throw new ConfigError(
        `config: ${what} ${address} is not a loopback address: the local development Glance treats every caller as an admin, so the stack serves this host only; configure an upstream Glance to listen elsewhere`,
      );
    }
  }
}

export async function startLocalGlance(stateDir: string, port: number): Promise<LocalStack> {
  const workDir = resolve(stateDir, 'glance');
  const launch = await prepareLocalGlance(workDir, port);
  const logFile = join(workDir, 'glance-api.log');
  const logFd = openSync(logFile, 'a');
  let child: ChildProcess;
  try {
    // Its own process group, so that stopping the stack also stops anything glance-api started.
    child = spawn(launch.command, launch.args, { env: launch.env, stdio: ['ignore', logFd, logFd], detached: true });
  } finally {
    closeSync(logFd);
  }
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-child.pid!, 'SIGTERM');
    } catch {
      return;
    }
    const timer = setTimeout(() => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }, 10_000);
    await exited;
    clearTimeout(timer);
  };
  // Whatever ends this process ends Glance too.
  process.once('exit', () => {
    try {
      process.kill(-child.pid!, 'SIGTERM');
    } catch {
      /* already gone */
    }
  });
  const glanceUrl = `http://127.0.0.1:${port}`;
  try {
    await waitForGlance(glanceUrl, exited, 90_000, () => readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-30).join('\n'));
  } catch (error) {
    await stop();
    throw error;
  }
  return { glanceUrl, stop };
}

/**
 * Turns the raw cache on for a local stack (queue, copies and scratch space under the state dir),
 * writes the whole configuration there, and starts `stx-glance-proxy worker` with it.
 */
export async function startStackWorker(config: ProxyConfig, stateDir: string): Promise<{ stop(): Promise<void> }> {
  const dir = resolve(stateDir);
  config.rawcache.enabled = true;
  config.rawcache.queue.backend = 'sqlite';
  config.rawcache.queue.sqlite_path = join(dir, 'rawcache.sqlite');
  config.rawcache.target.kind = 'file';
  config.rawcache.target.file_dir = join(dir, 'raw');
  config.rawcache.worker.work_dir = join(dir, 'work');
  await mkdir(config.rawcache.target.file_dir, { recursive: true });
  const configFile = join(dir, 'stack-config.json');
  await writeFile(configFile, `${JSON.stringify(config, null, 2)}\n`);
  const child = spawn(process.execPath, [join(__dirname, '..', 'cli.js'), 'worker', '--config', configFile], { stdio: ['ignore', 'inherit', 'inherit'] });
  const exited = new Promise<void>((done) => child.once('exit', () => done()));
  process.once('exit', () => child.kill('SIGTERM'));
  return {
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await exited;
    },
  };
}

/** What a person can paste into a shell to use the endpoint, as the stack prints it. */
export function stackInstructions(config: ProxyConfig, proxyUrl: string, local: boolean): string {
  const identity = local
    ? [
        'Identity: TEST IDENTITY. The local Glance treats every request as project "test-project" with',
        'the admin role and ignores the token (config/dev-glance/fake_identity.py). Never expose it.',
      ]
    : ['Identity: tokens pass through to the configured Glance, which checks them as usual.'];
  return [
    '',
    `Image endpoint (StarlingX extensions): ${proxyUrl}`,
    `Glance behind it:                      ${config.upstream}`,
    ...identity,
    '',
    'Try it (openstack CLI):',
    `  export OS_AUTH_TYPE=admin_token OS_ENDPOINT=${proxyUrl}/v2 OS_TOKEN=test-token`,
    '  qemu-img create -f qcow2 /tmp/demo.qcow2 64M',
    '  openstack image create --disk-format qcow2 --container-format bare --property cache_raw=True \\',
    '      --property hw_wrs_live_migration_timeout=400 --file /tmp/demo.qcow2 demo',
    '  openstack image list',
    '  openstack image show demo     # store, and cache_raw_status Queued, then Cached (a RAW copy in .stack/raw)',
    '',
    'glance CLI (python-glanceclient 4.1 caches the image schema in ~/.glanceclient and then rejects',
    'its own --stores option; a fresh HOME per command avoids that client bug):',
    `  export OS_IMAGE_URL=${proxyUrl} OS_AUTH_TOKEN=test-token`,
    '  HOME=$(mktemp -d) glance image-create --name demo2 --disk-format qcow2 --container-format bare \\',
    '      --property cache_raw=true --property sw_wrs_auto_recovery=false --file /tmp/demo.qcow2',
    '  HOME=$(mktemp -d) glance image-list',
    '',
    'Stop with Ctrl-C.',
    '',
  ].join('\n');
}
