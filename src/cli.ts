#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { ConfigError, configProblems, loadConfig, type ProxyConfig } from './config/load';
import { renderEffectiveConfig } from './config/show';
import { assertStackServesThisHostOnly, startLocalGlance, stackInstructions, startStackWorker, type LocalStack } from './dev/stack';
import { createProxy } from './http/server';
import { createLogger, type ProcessLogger } from './ops/log';
import { Metrics } from './ops/metrics';
import { sweep } from './rawcache/reconciler';
import { openQueue, openRawCacheRuntime } from './rawcache/runtime';
import { fetchProgress, formatDetail, formatTable, listCache, retryCache, showCache, watchCache } from './ops/cache-commands';
import { createHealth, glanceCheck, queueCheck } from './ops/health';
import { startOpsServer, startProxyOpsServer } from './ops/ops-server';
import { createRawCacheTrigger } from './rawcache/trigger';
import { RawCacheWorker } from './rawcache/worker';
import { VolumeFromImageError, volumeBytesOf } from './consumer/clone-source';
import { volumeFromImage } from './consumer/volume-from-image';
import { serviceGlanceClient } from './rawcache/runtime';
import { GlanceHttpError } from './rawcache/glance-client';
import { RawCacheError } from './rawcache/types';
import { ProgressBoard } from './rawcache/progress';

const USAGE = `usage: stx-glance-proxy <command> [options]

commands:
  serve     run the proxy in front of Glance
  worker    run raw-cache conversions (and the periodic sweep) until SIGTERM
  reconcile sweep once: requeue images whose raw copy is missing, stuck or orphaned [--json]
  cache list [--status S] [--json]   images with a raw cache and their state
  cache show IMAGE [--json]          one image's raw-cache state and whether its copy is there
  cache show IMAGE --watch           follow a conversion (a bar on a terminal) until Cached (exit 0) or Error (1)
  cache retry IMAGE                  queue the image again (also from Error)
  stack     run the proxy; with no upstream configured, also a local real Glance and a worker
  config check [FILE]                every problem of a configuration, one line each naming the key
  config show [--json]               the effective configuration (defaults, environment, flags), secrets masked
  volume-from-image IMAGE --pool POOL --name NAME [--size GIB] [--fallback] [--json]
            make an RBD volume from an image as Cinder does: clone its cached RAW copy
            (rbd://<fsid>/<pool>/<id>_raw/snap); --fallback: download + convert + import
            when it has none. --ceph-user, --ceph-conf (default rawcache.target.rbd_user,
            ceph_conf), --image-pools P1,P2 (pools a copy may be cloned from; default
            rawcache.target.rbd_pool)

options (serve, stack):
  --upstream URL     the real Glance API (e.g. http://127.0.0.1:19292)
  --listen HOST:PORT where to listen (default 127.0.0.1:9292)
  --public-url URL   how clients reach the proxy, for absolute links
  --config FILE      YAML or JSON configuration (see config/stx-glance-proxy.example.yaml)
  --log-level LEVEL  error, warn, info or debug
options (stack):
  --state-dir DIR    where the local Glance keeps its database and images (default .stack)
  --glance-port N    port of the local Glance on 127.0.0.1 (default 19292)

Precedence: configuration file < STX_GLANCE_PROXY_* environment variables < flags.`;

const COMMON_OPTIONS = {
  upstream: { type: 'string' },
  listen: { type: 'string' },
  'public-url': { type: 'string' },
  config: { type: 'string' },
  'log-level': { type: 'string' },
} as const;

function configFrom(values: Record<string, string | boolean | undefined>): ProxyConfig {
  const flag = (name: string) => (typeof values[name] === 'string' ? (values[name] as string) : undefined);
  return loadConfig({
    file: flag('config'),
    overrides: { upstream: flag('upstream'), listen: flag('listen'), public_url: flag('public-url'), 'log.level': flag('log-level') },
  });
}

/** Stops on SIGTERM/SIGINT: `stop` finishes the work, then the log is flushed and the process exits 0. */
function onTermination(logger: ProcessLogger, stop: (signal: string) => Promise<void>): void {
  let stopping = false;
  const handler = (signal: string) => {
    if (stopping) return;
    stopping = true;
    void stop(signal).then(() => {
      logger.info('stopped');
      void logger.close().then(() => process.exit(0));
    });
  };
  process.on('SIGTERM', () => handler('SIGTERM'));
  process.on('SIGINT', () => handler('SIGINT'));
}

/**
 * Runs the proxy (and its ops listener, for /metrics and the detailed /healthcheck) until
 * SIGTERM/SIGINT, then lets requests in flight finish within the grace.
 */
async function runProxy(config: ProxyConfig, onStopped: () => Promise<void> = async () => undefined): Promise<string> {
  const logger = createLogger(config.log.level);
  const queue = config.rawcache.enabled ? await openQueue(config, logger) : undefined;
  const metrics = config.metrics.enabled ? new Metrics('proxy') : undefined;
  const trigger = queue && createRawCacheTrigger(queue, logger, config.rawcache.trigger);
  const proxy = createProxy(config, logger, { metrics, rawCache: trigger });
  // The ops listener first: once the API answers, so does it.
  const ops = await startProxyOpsServer(config, metrics, queue);
  const { host, port } = await proxy.listen();
  logger.info('listening', { address: `${host}:${port}`, ops: ops?.address ?? null, upstream: config.upstream, public_url: config.public_url });
  onTermination(logger, async (signal) => {
    logger.info('stopping: no new connections, requests in flight may finish', { signal, grace_s: config.timeouts.shutdown_grace });
    await proxy.shutdown(config.timeouts.shutdown_grace * 1000);
    // Last, so that Prometheus sees the drain.
    await ops?.close();
    await trigger?.close();
    await queue?.close();
    await onStopped();
  });
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

async function serve(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: COMMON_OPTIONS, strict: true });
  const config = configFrom(values);
  if (!config.upstream) throw new ConfigError('config: no upstream Glance: give --upstream URL, STX_GLANCE_PROXY_UPSTREAM or upstream in the file');
  await runProxy(config);
}

async function worker(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: COMMON_OPTIONS, strict: true });
  const config = configFrom(values);
  const logger = createLogger(config.log.level, 'stx-glance-proxy-worker');
  const runtime = await openRawCacheRuntime(config, logger);
  const metrics = new Metrics('worker');
  const progress = new ProgressBoard();
  const rawCacheWorker = new RawCacheWorker({
    ...runtime,
    config: config.rawcache,
    logger,
    progress,
    onConversion: (outcome, seconds) => {
      metrics.conversions.inc({ outcome });
      metrics.conversionDuration.observe({ outcome }, seconds);
    },
  });
  const ops = config.metrics.worker_listen
    ? await startOpsServer(
        config.metrics.worker_listen,
        metrics,
        createHealth({ disableByFile: config.health.disable_by_file, checks: [glanceCheck(runtime.glance.baseUrl), queueCheck(() => runtime.queue.health(), true)] }),
        async () => {
          const h = await runtime.queue.health().catch(() => undefined);
          if (h?.depth !== undefined) metrics.queueDepth.set(h.depth);
          metrics.setConversionsInFlight(progress.snapshot());
        },
        () => ({ conversions: progress.snapshot() }),
      )
    : undefined;
  await runtime.removeLeftovers();
  await rawCacheWorker.start();
  const interval = config.rawcache.worker.reconcile_interval_seconds;
  let sweeping: Promise<unknown> = Promise.resolve();
  const timer =
    interval > 0
      ? setInterval(() => {
          sweeping = sweep({ ...runtime, config: config.rawcache, logger }).catch((err: Error) => logger.error('sweep failed', { error: err.message }));
        }, interval * 1000)
      : undefined;
  logger.info('worker started', { queue: runtime.queue.backend, target: runtime.target.kind, concurrency: config.rawcache.worker.concurrency, ops: ops?.address });
  onTermination(logger, async (signal) => {
    logger.info('stopping: no new jobs, running conversions may finish', { signal, grace_s: config.timeouts.shutdown_grace });
    clearInterval(timer);
    await rawCacheWorker.stop(config.timeouts.shutdown_grace * 1000);
    await sweeping;
    await ops?.close();
    await runtime.close();
  });
}

async function reconcile(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { ...COMMON_OPTIONS, json: { type: 'boolean' } }, strict: true });
  const config = configFrom(values);
  const logger = createLogger(values.json ? 'error' : config.log.level, 'stx-glance-proxy-reconcile');
  const runtime = await openRawCacheRuntime(config, logger);
  try {
    // One mark per image on a terminal: '.' looked at, '+' requeued.
    const progress = values.json || !process.stderr.isTTY ? undefined : (_image: { id: string }, requeued: boolean) => process.stderr.write(requeued ? '+' : '.');
    const result = await sweep({ ...runtime, config: config.rawcache, logger, onImage: progress });
    if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
    else process.stdout.write(`\nexamined ${result.examined} images; requeued ${result.requeued.length}; orphan copies ${result.orphans.length}\n`);
  } finally {
    await runtime.close();
  }
}

async function cache(argv: string[]): Promise<void> {
  const [action, ...rest] = argv;
  const { values, positionals } = parseArgs({
    args: rest,
    options: { ...COMMON_OPTIONS, json: { type: 'boolean' }, status: { type: 'string' }, watch: { type: 'boolean' } },
    allowPositionals: true,
    strict: true,
  });
  const config = configFrom(values);
  const logger = createLogger('error', 'stx-glance-proxy-cache');
  const runtime = await openRawCacheRuntime(config, logger);
  const print = (text: string) => process.stdout.write(`${text}\n`);
  // The workers whose conversions in flight are shown (their ops listeners' /progress).
  const workers = [...(config.metrics.worker_listen ? [config.metrics.worker_listen] : []), ...config.metrics.worker_progress_from];
  try {
    if (values.watch && action !== 'show') throw new ConfigError('--watch is for cache show IMAGE');
    if (action === 'list') {
      const tty = process.stderr.isTTY && !values.json;
      const inFlight = await fetchProgress(workers);
      const entries = await listCache(runtime, values.status, tty ? (n) => process.stderr.write(`\rreading images: ${n}`) : undefined, inFlight);
      if (tty) process.stderr.write('\n');
      print(values.json ? JSON.stringify(entries) : formatTable(entries));
      return;
    }
    const imageId = positionals[0];
    if ((action === 'show' || action === 'retry') && !imageId) throw new ConfigError(`cache ${action} needs an IMAGE id`);
    if (action === 'show' && values.watch) {
      if (values.json) throw new ConfigError('--watch prints lines; it does not go with --json');
      // Ctrl-C on a terminal: end the bar's line, so the shell's prompt starts on a line of its own.
      if (process.stdout.isTTY) {
        process.once('SIGINT', () => {
          process.stdout.write('\n');
          process.exit(130);
        });
      }
      process.exitCode = await watchCache(runtime, imageId, workers, process.stdout);
      return;
    }
    if (action === 'show') {
      const detail = await showCache(runtime, imageId, await fetchProgress(workers));
      if (!detail) throw new ConfigError(`no image ${imageId} in Glance`);
      print(values.json ? JSON.stringify(detail) : formatDetail(detail));
      return;
    }
    if (action === 'retry') {
      const outcome = await retryCache(runtime, imageId);
      if (outcome === 'not-found') throw new ConfigError(`no image ${imageId} in Glance`);
      print(values.json ? JSON.stringify({ id: imageId, queued: true }) : `image ${imageId} queued for the raw-cache worker`);
      return;
    }
    throw new ConfigError(`unknown cache action '${action ?? ''}' (list, show IMAGE, retry IMAGE)`);
  } finally {
    await runtime.close();
  }
}

/**
 * `config check [FILE]`: exit 0 and one OK line, or exit 1 and one line per problem (all of them, not
 * the first). `config show`: the configuration serve and worker would run with, secrets masked.
 */
async function config(argv: string[]): Promise<void> {
  const [action, ...rest] = argv;
  if (action === 'check') {
    const { values, positionals } = parseArgs({ args: rest, options: { config: { type: 'string' } }, allowPositionals: true, strict: true });
    if (positionals.length > 1) throw new ConfigError('config check takes one FILE');
    const file = positionals[0] ?? values.config ?? process.env.STX_GLANCE_PROXY_CONFIG;
    const problems = configProblems({ file });
    if (problems.length === 0) {
      process.stdout.write(`${file ?? 'the configuration (defaults and environment)'}: OK\n`);
      return;
    }
    process.stdout.write(problems.map((line) => `${line}\n`).join(''));
    process.exitCode = 1;
    return;
  }
  if (action === 'show') {
    const { values } = parseArgs({ args: rest, options: { ...COMMON_OPTIONS, json: { type: 'boolean' } }, strict: true });
    process.stdout.write(renderEffectiveConfig(configFrom(values), values.json ? 'json' : 'yaml'));
    return;
  }
  throw new ConfigError(`unknown config action '${action ?? ''}' (check [FILE], show)`);
}

async function volumeFromImageCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: {
      ...COMMON_OPTIONS,
      pool: { type: 'string' },
      name: { type: 'string' },
      size: { type: 'string' },
      'image-pools': { type: 'string' },
      'ceph-user': { type: 'string' },
      'ceph-conf': { type: 'string' },
      fallback: { type: 'boolean' },
      json: { type: 'boolean' },
    },
    allowPositionals: true,
    strict: true,
  });
  const [imageId, ...extra] = positionals;
  if (!imageId || extra.length > 0) throw new ConfigError('volume-from-image needs one IMAGE id');
  if (!values.pool || !values.name) throw new ConfigError('volume-from-image needs --pool POOL and --name NAME (e.g. --pool volumes --name volume-<uuid>)');
  const config = configFrom(values);
  const logger = createLogger(values.json ? 'error' : 'warn', 'stx-glance-proxy-volume-from-image');
  const target = config.rawcache.target;
  const glance = await serviceGlanceClient(config, logger);
  const controller = new AbortController();
  const abort = () => controller.abort(new Error('interrupted'));
  process.once('SIGINT', abort);
  process.once('SIGTERM', abort);
  try {
    const made = await volumeFromImage(
      { imageId, volumePool: values.pool, volumeName: values.name, sizeBytes: volumeBytesOf(values.size), fallback: values.fallback === true },
      {
        glance,
        cephUser: values['ceph-user'] ?? target.rbd_user,
        cephConf: values['ceph-conf'] ?? target.ceph_conf,
        imagePools: (values['image-pools'] ?? target.rbd_pool).split(',').map((pool) => pool.trim()).filter((pool) => pool !== ''),
        workDir: config.rawcache.worker.work_dir,
        logger,
      },
      controller.signal,
    );
    const how = made.method === 'clone' ? `cloned from ${made.parent}` : `imported from Glance (no clone: ${made.why})`;
    process.stdout.write(values.json ? `${JSON.stringify({ image: imageId, ...made })}\n` : `volume ${made.volume} (${made.sizeBytes} bytes) ${how}\n`);
  } catch (error) {
    // The raw-cache helpers' failures (a bad download, an image attack refused, ceph unreachable) are refusals here too.
    if (error instanceof RawCacheError || error instanceof GlanceHttpError) throw new VolumeFromImageError(error.message);
    throw error;
  } finally {
    process.off('SIGINT', abort);
    process.off('SIGTERM', abort);
    glance.close();
  }
}

async function stack(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { ...COMMON_OPTIONS, 'state-dir': { type: 'string' }, 'glance-port': { type: 'string' } },
    strict: true,
  });
  const config = configFrom(values);
  const stateDir = values['state-dir'] ?? '.stack';
  let local: LocalStack | undefined;
  let stackWorker: { stop(): Promise<void> } | undefined;
  if (!config.upstream) {
    assertStackServesThisHostOnly(config);
    process.stderr.write('No upstream Glance configured: starting a local one and a raw-cache worker...\n');
    local = await startLocalGlance(stateDir, Number(values['glance-port'] ?? 19292));
    config.upstream = local.glanceUrl;
    stackWorker = await startStackWorker(config, stateDir);
  }
  const proxyUrl = await runProxy(config, async () => {
    await stackWorker?.stop();
    await local?.stop();
  });
  process.stderr.write(stackInstructions(config, proxyUrl, local !== undefined));
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  switch (command) {
    case 'serve':
      return serve(rest);
    case 'stack':
      return stack(rest);
    case 'worker':
      return worker(rest);
    case 'reconcile':
      return reconcile(rest);
    case 'cache':
      return cache(rest);
    case 'config':
      return config(rest);
    case 'volume-from-image':
      return volumeFromImageCommand(rest);
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stdout.write(`${USAGE}\n`);
      return;
    default:
      throw new ConfigError(`unknown command '${command}' (try --help)`);
  }
}

main().catch((err: Error & { code?: string }) => {
  // One clear line for an operator; a stack trace only for what is really a bug.
  const operatorError =
    err instanceof ConfigError ||
    ['ERR_PARSE_ARGS_UNKNOWN_OPTION', 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE', 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL', 'EADDRINUSE', 'EACCES'].includes(err.code ?? '');
  // A refused volume-from-image is one line too, with exit code 1 (2 stays for bad usage).
  const refusal = err instanceof VolumeFromImageError;
  process.stderr.write(`stx-glance-proxy: ${operatorError || refusal ? err.message.split('\n')[0] : (err.stack ?? err.message)}\n`);
  process.exit(operatorError ? 2 : 1);
});
