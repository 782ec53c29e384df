import { createWriteStream, existsSync, type WriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { fetchOnce } from './http';
import { freePort } from './ports';
import { ServiceProcess, settlesWithin, type ExitStatus } from './service-process';

export interface ProxyOptions {
  /** The Glance the proxy forwards to, e.g. RunningGlance.url. */
  upstream: string;
  /** Passed as --config FILE. */
  config?: string;
  /** More arguments after the standard ones. */
  args?: string[];
  /** Added to (or, when undefined, removed from) the test process's environment. */
  env?: Record<string, string | undefined>;
  startTimeoutMs?: number;
  /** The CLI script to run; the built dist/cli.js unless a test needs another. */
  cli?: string;
}

export interface RunningProxy {
  url: string;
  port: number;
  /**
   * The ops listener (/metrics, detailed /healthcheck): the proxy's own, on a port of its own; for a
   * worker, the same as `url`. Undefined when the test sets STX_GLANCE_PROXY_OPS_LISTEN in `env`
   * to '' (off) or to undefined (from its config file, or the default 127.0.0.1:9293).
   */
  opsUrl: string | undefined;
  pid: number;
  logFile: string;
  /** Everything the proxy wrote to stdout and stderr so far, in arrival order. */
  logs(): string;
  /** Resolves with the first log line matching `pattern`, waiting for it if it has not come yet. */
  waitForLog(pattern: RegExp | string, timeoutMs?: number): Promise<string>;
  /** Sends `signal` (default SIGTERM) to the proxy, waits for it to exit, SIGKILLs after `graceMs`. */
  stop(signal?: NodeJS.Signals, graceMs?: number): Promise<ExitStatus>;
  /** Sends a signal without waiting. */
  kill(signal: NodeJS.Signals): void;
  exited: Promise<ExitStatus>;
}

const CLI = resolve(__dirname, '..', '..', 'dist', 'cli.js');
const DEFAULT_START_TIMEOUT_MS = 20_000;
const DEFAULT_STOP_GRACE_MS = 15_000;
const DEFAULT_LOG_WAIT_MS = 10_000;

/** Runs `node dist/cli.js serve` against `upstream` on a free 127.0.0.1 port and waits until it answers. */
export async function startProxy(options: ProxyOptions): Promise<RunningProxy> {
  const port = await freePort();
  const args = ['serve', '--upstream', options.upstream, '--listen', `127.0.0.1:${port}`];
  // Each proxy gets its own ops listener port, so that several proxies run side by side. The
  // environment wins over a config file's metrics.listen; a test sets it in `env` to choose.
  const chosen = options.env !== undefined && 'STX_GLANCE_PROXY_OPS_LISTEN' in options.env;
  const opsListen = chosen ? options.env!.STX_GLANCE_PROXY_OPS_LISTEN : `127.0.0.1:${await freePort()}`;
  options = { ...options, env: { ...options.env, STX_GLANCE_PROXY_OPS_LISTEN: opsListen } };
  if (options.config !== undefined) args.push('--config', options.config);
  args.push(...(options.args ?? []));
  const opsUrl = opsListen ? `http://${opsListen}` : undefined;
  return startCliService(args, `http://127.0.0.1:${port}`, '/versions', opsUrl, options);
}

export interface WorkerOptions {
  /** The worker's configuration file (rawcache.*, upstream or rawcache.glance_url). */
  config: string;
  /** Where its /healthcheck and /metrics listen (overrides metrics.worker_listen in the file). */
  opsPort: number;
  env?: Record<string, string | undefined>;
  startTimeoutMs?: number;
}

/** Runs `node dist/cli.js worker --config FILE` and waits until its ops listener answers. */
export async function startWorker(options: WorkerOptions): Promise<RunningProxy> {
  const env = { STX_GLANCE_PROXY_WORKER_LISTEN: `127.0.0.1:${options.opsPort}`, ...options.env };
  const url = `http://127.0.0.1:${options.opsPort}`;
  return startCliService(['worker', '--config', options.config], url, '/healthcheck', url, { ...options, env });
}

/** A `stx-glance-proxy` process with its output captured, ready once `url``readyPath` answers. */
async function startCliService(
  cliArgs: string[],
  url: string,
  readyPath: string,
  opsUrl: string | undefined,
  options: { env?: Record<string, string | undefined>; startTimeoutMs?: number; cli?: string },
): Promise<RunningProxy> {
  const cli = options.cli ?? CLI;
  if (!existsSync(cli)) throw new Error(`${cli} is missing; run: npm run build`);
  const port = Number(new URL(url).port);
  const logDir = await mkdtemp(join(tmpdir(), 'stx-proxy-'));
  const logFile = join(logDir, 'proxy.log');
  const output = new ProxyOutput(logFile);

  let service: ServiceProcess | undefined;
  try {
    service = await ServiceProcess.start(process.execPath, [cli, ...cliArgs], {
      env: proxyEnv(options.env),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    output.capture(service.child.stdout, service.child.stderr);
    await waitUntilAnswering(url, readyPath, service, output, options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS);

    const running = service;
    // A process that ends any other way than stop() (killed by a test, crashed) leaves no log dir either.
    let cleaned: Promise<void> | undefined;
    const cleanUp = (): Promise<void> => (cleaned ??= output.close().then(() => removeUnlessKept(logDir)));
    void running.exited.then(cleanUp, cleanUp);
    return {
      url,
      port,
      opsUrl,
      pid: running.pid,
      logFile,
      logs: () => output.text,
      waitForLog: (pattern, timeoutMs) => output.waitFor(pattern, timeoutMs ?? DEFAULT_LOG_WAIT_MS),
      stop: async (signal = 'SIGTERM', graceMs = DEFAULT_STOP_GRACE_MS) => {
        const status = await running.stop(signal, { graceMs });
        await cleanUp();
        return status;
      },
      kill: (signal) => running.signal(signal),
      exited: running.exited,
    };
  } catch (error) {
    await service?.stop('SIGKILL');
    await output.close();
    await removeUnlessKept(logDir);
    throw error;
  }
}

function proxyEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env };
  for (const [name, value] of Object.entries(extra)) {
    if (value === undefined) delete env[name];
    else env[name] = value;
  }
  return env;
}

async function waitUntilAnswering(url: string, readyPath: string, service: ServiceProcess, output: ProxyOutput, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!service.isRunning()) {
      const { code, signal } = await service.exited;
      await output.close();
      throw new Error(`proxy exited (code ${code}, signal ${signal}) before answering:\n${output.tail()}`);
    }
    try {
      // Any HTTP status will do: the upstream may refuse, but the proxy is listening.
      await fetchOnce(`${url}${readyPath}`, { timeoutMs: 2_000 });
      return;
    } catch {
      if (Date.now() > deadline) {
        throw new Error(`proxy did not answer ${url}${readyPath} within ${timeoutMs} ms:\n${output.tail()}`);
      }
      await settlesWithin(service.exited, 100);
    }
  }
}

async function removeUnlessKept(dir: string): Promise<void> {
  if (process.env.KEEP_TEST_DIRS !== '1') await rm(dir, { recursive: true, force: true });
}

/** The proxy's stdout and stderr, interleaved as they arrive, kept in memory and in a log file. */
class ProxyOutput {
  text = '';
  private readonly file: WriteStream;
  private readonly streamsEnded: Promise<void>[] = [];
  private readonly waiters = new Set<() => void>();
  private closing: Promise<void> | undefined;

  constructor(logFile: string) {
    this.file = createWriteStream(logFile);
  }

  capture(...streams: Array<Readable | null>): void {
    for (const stream of streams) {
      if (stream === null) continue;
      stream.setEncoding('utf8');
      // Unreferenced, a forgotten proxy does not keep jest alive; the watchdog ends it when jest exits.
      (stream as unknown as { unref(): void }).unref();
      stream.on('data', (chunk: string) => {
        this.text += chunk;
        this.file.write(chunk);
        for (const wake of this.waiters) wake();
      });
      this.streamsEnded.push(new Promise((done) => stream.once('close', done)));
    }
  }

  waitFor(pattern: RegExp | string, timeoutMs: number): Promise<string> {
    return new Promise((resolve, reject) => {
      const check = (): void => {
        const line = this.text.split('\n').find((l) => (typeof pattern === 'string' ? l.includes(pattern) : pattern.test(l)));
        if (line === undefined) return;
        finish();
        resolve(line);
      };
      const timer = setTimeout(() => {
        finish();
        reject(new Error(`no proxy log line matched ${String(pattern)} within ${timeoutMs} ms:\n${this.tail()}`));
      }, timeoutMs);
      const finish = (): void => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  tail(count = 30): string {
    return this.text.trimEnd().split('\n').slice(-count).join('\n');
  }

  /** Waits (briefly) for the last output to arrive, then flushes the log file. */
  close(): Promise<void> {
    this.closing ??= settlesWithin(Promise.all(this.streamsEnded), 2_000).then(
      () => new Promise<void>((done) => this.file.end(done)),
    );
    return this.closing;
  }
}
