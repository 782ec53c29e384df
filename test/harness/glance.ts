import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareLocalGlance, waitForGlance, type LocalGlanceOptions } from '../../src/dev/local-glance';
import { freePort } from './ports';
import { ServiceProcess } from './service-process';

export interface GlanceOptions extends LocalGlanceOptions {
  /** 'rbd' needs `extraConf` with the Ceph backend (enabled_backends, default_backend, [ceph]). */
  store?: 'file' | 'rbd';
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

const DEFAULT_START_TIMEOUT_MS = 60_000;

/** Starts a real glance-api (Debian's package) with its own database and store in a fresh temp dir. */
export async function startGlance(options: GlanceOptions = {}): Promise<RunningGlance> {
  if (options.store === 'rbd' && options.extraConf === undefined) {
    throw new Error("store 'rbd' needs extraConf: a config file that defines the Ceph backend");
  }
  if (options.auth === 'keystone' && options.extraConf === undefined) {
    throw new Error("auth 'keystone' needs extraConf: a config file with [keystone_authtoken]");
  }
  const workDir = await mkdtemp(join(tmpdir(), 'stx-glance-'));
  const logFile = join(workDir, 'glance-api.log');
  let service: ServiceProcess | undefined;
  try {
    const port = await freePort();
    const launch = await prepareLocalGlance(workDir, port, options);
    const logFd = openSync(logFile, 'a');
    try {
      service = await ServiceProcess.start(launch.command, launch.args, { env: launch.env, stdio: ['ignore', logFd, logFd] });
    } finally {
      closeSync(logFd);
    }
    const url = `http://127.0.0.1:${port}`;
    await waitForGlance(url, service.exited, options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS, () => logTail(logFile));

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

async function shutDown(service: ServiceProcess | undefined, workDir: string): Promise<void> {
  await service?.stop('SIGTERM', { group: true });
  if (process.env.KEEP_TEST_DIRS !== '1') {
    await rm(workDir, { recursive: true, force: true });
  }
}

function logTail(logFile: string): string {
  try {
    return readFileSync(logFile, 'utf8').trimEnd().split('\n').slice(-30).join('\n');
  } catch {
    return '(no log)';
  }
}
