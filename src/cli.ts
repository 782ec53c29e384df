#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, type ProxyConfig } from './config/load';
import { startLocalGlance, stackInstructions, type LocalStack } from './dev/stack';
import { createProxy } from './http/server';
import { createLogger } from './ops/log';

const USAGE = `usage: stx-glance-proxy <command> [options]

commands:
  serve     run the proxy in front of Glance
  stack     run the proxy; with no upstream configured, also a local real Glance (development)

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

/** Runs the proxy until SIGTERM/SIGINT, then lets requests in flight finish within the grace. */
async function runProxy(config: ProxyConfig, onStopped: () => Promise<void> = async () => undefined): Promise<string> {
  const logger = createLogger(config.log.level);
  const proxy = createProxy(config, logger);
  const { host, port } = await proxy.listen();
  logger.info('listening', { address: `${host}:${port}`, upstream: config.upstream, public_url: config.public_url });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info('stopping: no new connections, requests in flight may finish', { signal, grace_s: config.timeouts.shutdown_grace });
    void proxy
      .shutdown(config.timeouts.shutdown_grace * 1000)
      .then(onStopped)
      .then(() => {
        logger.info('stopped');
        logger.on('finish', () => process.exit(0));
        logger.end();
      });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  return `http://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

async function serve(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: COMMON_OPTIONS, strict: true });
  const config = configFrom(values);
  if (!config.upstream) throw new ConfigError('config: no upstream Glance: give --upstream URL, STX_GLANCE_PROXY_UPSTREAM or upstream in the file');
  await runProxy(config);
}

async function stack(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { ...COMMON_OPTIONS, 'state-dir': { type: 'string' }, 'glance-port': { type: 'string' } },
    strict: true,
  });
  const config = configFrom(values);
  let local: LocalStack | undefined;
  if (!config.upstream) {
    process.stderr.write('No upstream Glance configured: starting a local one...\n');
    local = await startLocalGlance(values['state-dir'] ?? '.stack', Number(values['glance-port'] ?? 19292));
    config.upstream = local.glanceUrl;
  }
  const proxyUrl = await runProxy(config, async () => local?.stop());
  process.stderr.write(stackInstructions(config, proxyUrl, local !== undefined));
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  switch (command) {
    case 'serve':
      return serve(rest);
    case 'stack':
      return stack(rest);
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
  process.stderr.write(`stx-glance-proxy: ${operatorError ? err.message.split('\n')[0] : (err.stack ?? err.message)}\n`);
  process.exit(operatorError ? 2 : 1);
});
