import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'amqplib';
import { freePort, isPortFree } from './ports';
import { ServiceProcess, settlesWithin } from './service-process';

/** Debian's rabbitmq-server script itself (the /usr/sbin wrapper would `su` to the rabbitmq user). */
const RABBITMQ_SERVER = '/usr/lib/rabbitmq/bin/rabbitmq-server';
const DEFAULT_START_TIMEOUT_MS = 60_000;

export interface RabbitMQOptions {
  startTimeoutMs?: number;
}

export interface RunningRabbitMQ {
  /** amqp://guest:guest@127.0.0.1:<port>/ (guest may connect from loopback only, which is all we need). */
  readonly url: string;
  readonly port: number;
  readonly nodeName: string;
  readonly workDir: string;
  /** Whether the broker runs now (false between halt() and resume()). */
  isRunning(): boolean;
  /** The tail of the node's log and of its console output. */
  logs(): string;
  /** Stops the broker and keeps its data: SIGTERM shuts it down cleanly, SIGKILL crashes it. */
  halt(signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
  /** Starts the stopped broker again, same ports and data; resolves when it accepts AMQP connections. */
  resume(): Promise<void>;
  restart(signal?: 'SIGTERM' | 'SIGKILL'): Promise<void>;
  /** Stops the broker and its epmd, and removes the data. */
  stop(): Promise<void>;
}

/**
 * Starts a private RabbitMQ (Debian's rabbitmq-server) in a fresh temp dir: its own node name,
 * AMQP port, distribution port and epmd, all on 127.0.0.1, so it clashes with nothing else on the
 * host, and every process lives in a process group that a watchdog ends if the suite dies.
 */
export async function startRabbitMQ(options: RabbitMQOptions = {}): Promise<RunningRabbitMQ> {
  const startTimeoutMs = options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS;
  const workDir = await mkdtemp(join(tmpdir(), 'stx-rabbitmq-'));
  let epmd: ServiceProcess | undefined;
  let broker: ServiceProcess | undefined;
  try {
    if (!existsSync(RABBITMQ_SERVER)) {
      throw new Error(`${RABBITMQ_SERVER} not found; run: bash scripts/ensure-system-deps.sh rabbitmq`);
    }
    const port = await freePort();
    const distPort = await distinctFreePort([port]);
    const epmdPort = await distinctFreePort([port, distPort]);
    const nodeName = `stxtest${port}@localhost`;
    await mkdir(join(workDir, 'mnesia'));
    await mkdir(join(workDir, 'log'));
    writeFileSync(
      join(workDir, 'rabbitmq.conf'),
      [`listeners.tcp.default = 127.0.0.1:${port}`, 'log.console = false', 'log.file.level = info', ''].join('\n'),
    );
    writeFileSync(join(workDir, 'enabled_plugins'), '[].\n');
    writeFileSync(join(workDir, 'rabbitmq-env.conf'), '');

    const env: NodeJS.ProcessEnv = {
      PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin',
      LANG: 'C.UTF-8',
      // The Erlang cookie goes to $HOME.
      HOME: workDir,
      ERL_EPMD_PORT: String(epmdPort),
      ERL_EPMD_ADDRESS: '127.0.0.1',
      RABBITMQ_NODENAME: nodeName,
      RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
      RABBITMQ_NODE_PORT: String(port),
      RABBITMQ_DIST_PORT: String(distPort),
      RABBITMQ_CONFIG_FILE: join(workDir, 'rabbitmq.conf'),
      RABBITMQ_ADVANCED_CONFIG_FILE: join(workDir, 'advanced.config'),
      RABBITMQ_CONF_ENV_FILE: join(workDir, 'rabbitmq-env.conf'),
      RABBITMQ_ENABLED_PLUGINS_FILE: join(workDir, 'enabled_plugins'),
      RABBITMQ_MNESIA_BASE: join(workDir, 'mnesia'),
      RABBITMQ_LOG_BASE: join(workDir, 'log'),
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: '-kernel inet_dist_use_interface {127,0,0,1}',
      // scripts/test.sh finds the processes a run left behind by this mark.
      STX_TEST_RUN: process.env.STX_TEST_RUN,
    };

    // Our own epmd: the one Erlang would start is a daemon that outlives the test run.
    epmd = await ServiceProcess.start('epmd', ['-port', String(epmdPort)], { env, stdio: 'ignore' });
    await waitFor(async () => !(await isPortFree(epmdPort)), 5_000, 'epmd did not listen', epmd);

    const url = `amqp://guest:guest@127.0.0.1:${port}/`;
    const consoleLog = join(workDir, 'console.log');
    const launch = async (): Promise<ServiceProcess> => {
      const fd = openSync(consoleLog, 'a');
      let service: ServiceProcess;
      try {
        service = await ServiceProcess.start(RABBITMQ_SERVER, [], { env, stdio: ['ignore', fd, fd], cwd: workDir });
      } finally {
        closeSync(fd);
      }
      try {
        await waitFor(() => acceptsAmqp(url), startTimeoutMs, 'RabbitMQ did not accept AMQP connections', service);
      } catch (error) {
        await service.stop('SIGKILL', { group: true });
        throw new Error(`${(error as Error).message}\n${tail(workDir, nodeName)}`);
      }
      return service;
    };

    broker = await launch();
    const runningEpmd = epmd;
    let stopping: Promise<void> | undefined;
    const halt = async (signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM') => {
      const current = broker;
      broker = undefined;
      // SIGTERM to the script: it stops the node cleanly. SIGKILL to the group: a crash.
      if (current) await current.stop(signal, { group: signal === 'SIGKILL', graceMs: 30_000 });
    };
    const resume = async () => {
      if (broker) return;
      broker = await launch();
    };
    return {
      url,
      port,
      nodeName,
      workDir,
      isRunning: () => broker !== undefined,
      logs: () => tail(workDir, nodeName),
      halt,
      resume,
      restart: async (signal) => {
        await halt(signal);
        await resume();
      },
      stop: () =>
        (stopping ??= (async () => {
          await halt('SIGTERM');
          await runningEpmd.stop('SIGTERM');
          if (process.env.KEEP_TEST_DIRS !== '1') await rm(workDir, { recursive: true, force: true });
        })()),
    };
  } catch (error) {
    await broker?.stop('SIGKILL', { group: true });
    await epmd?.stop('SIGTERM');
    if (process.env.KEEP_TEST_DIRS !== '1') await rm(workDir, { recursive: true, force: true });
    throw error;
  }
}

async function distinctFreePort(taken: number[]): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (!taken.includes(port)) return port;
  }
}

async function acceptsAmqp(url: string): Promise<boolean> {
  try {
    const connection = await connect(url, { timeout: 2_000 });
    connection.on('error', () => undefined);
    await connection.close();
    return true;
  } catch {
    return false;
  }
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string, service: ServiceProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!service.isRunning()) {
      const status = await service.exited;
      throw new Error(`${what}: it exited (code ${status.code}, signal ${status.signal})`);
    }
    if (await check()) return;
    await settlesWithin(service.exited, 200);
  }
  throw new Error(`${what} within ${timeoutMs} ms`);
}

function tail(workDir: string, nodeName: string): string {
  const lines = (file: string): string => {
    try {
      return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-30).join('\n');
    } catch {
      return '(none)';
    }
  };
  return `--- ${nodeName}.log\n${lines(join(workDir, 'log', `${nodeName}.log`))}\n--- console\n${lines(join(workDir, 'console.log'))}`;
}
