#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig } from './config/load';
import { createProxy } from './http/server';
import { createLogger } from './ops/log';

const USAGE = `usage: stx-glance-proxy <command> [options]

commands:
  serve     run the proxy in front of Glance
            --upstream URL     the real Glance API (e.g. http://127.0.0.1:19292)
            --listen HOST:PORT where to listen (default 127.0.0.1:9292)
            --public-url URL   how clients reach the proxy, for absolute links
            --config FILE      YAML or JSON configuration (see config/stx-glance-proxy.example.yaml)
            --log-level LEVEL  error, warn, info or debug

Precedence: configuration file < STX_GLANCE_PROXY_* environment variables < flags.`;

async function serve(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: {
      upstream: { type: 'string' },
      listen: { type: 'string' },
      'public-url': { type: 'string' },
      config: { type: 'string' },
      'log-level': { type: 'string' },
    },
    strict: true,
  });
  const config = loadConfig({
    file: values.config,
    overrides: { upstream: values.upstream, listen: values.listen, public_url: values['public-url'], 'log.level': values['log-level'] },
  });
  if (!config.upstream) throw new ConfigError('config: no upstream Glance: give --upstream URL, STX_GLANCE_PROXY_UPSTREAM or upstream in the file');
  const logger = createLogger(config.log.level);
  const proxy = createProxy(config, logger);
  const { host, port } = await proxy.listen();
  logger.info('listening', { address: `${host}:${port}`, upstream: config.upstream, public_url: config.public_url });

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info('stopping: no new connections, requests in flight may finish', { signal, grace_s: config.timeouts.shutdown_grace });
    void proxy.shutdown(config.timeouts.shutdown_grace * 1000).then(() => {
      logger.info('stopped');
      logger.on('finish', () => process.exit(0));
      logger.end();
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

async function main(): Promise<void> {
  const [command, ...rest] = process.argv.slice(2);
  switch (command) {
    case 'serve':
      return serve(rest);
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
  if (err instanceof ConfigError || err.code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' || err.code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' || err.code === 'EADDRINUSE' || err.code === 'EACCES') {
    process.stderr.write(`stx-glance-proxy: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`stx-glance-proxy: ${err.stack ?? err.message}\n`);
  process.exit(1);
});
