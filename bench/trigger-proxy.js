#!/usr/bin/env node
// The proxy with its raw-cache trigger recording jobs the way it did before the writer thread: one
// SQLite upsert per trigger on the event loop, in autocommit, with synchronous=NORMAL or FULL. For
// bench/durable-trigger.sh only, as the baselines next to `stx-glance-proxy serve` (the writer
// thread). Same proxy, same trigger (spool included), same SQL statement; only the commit differs.
// Needs `npm run build` first.
//
// usage: node bench/trigger-proxy.js normal|full UPSTREAM 127.0.0.1:PORT DIR
'use strict';

const path = require('node:path');
const Database = require('better-sqlite3');
const { loadConfig } = require('../dist/config/load');
const { createProxy } = require('../dist/http/server');
const { createLogger } = require('../dist/ops/log');
const { createJobQueue } = require('../dist/rawcache/queue');
const { ENQUEUE_SQL } = require('../dist/rawcache/queue/sqlite');
const { createRawCacheTrigger } = require('../dist/rawcache/trigger');

const [mode, upstream, listen, dir] = process.argv.slice(2);
if (!['normal', 'full'].includes(mode) || !upstream || !listen || !dir) {
  process.stderr.write('usage: node bench/trigger-proxy.js normal|full UPSTREAM HOST:PORT DIR\n');
  process.exit(2);
}

(async () => {
  const config = loadConfig({ overrides: { upstream, listen } });
  const logger = createLogger(config.log.level);
  const queueConfig = { ...config.rawcache.queue, backend: 'sqlite', sqlite_path: path.join(dir, 'queue.sqlite') };
  // Creates (and migrates) the file; its own connection is not used for the triggers.
  const schema = await createJobQueue(queueConfig, logger);
  const db = new Database(queueConfig.sqlite_path, { timeout: 5000 });
  db.pragma('journal_mode = WAL');
  db.pragma(`synchronous = ${mode === 'full' ? 'FULL' : 'NORMAL'}`);
  const upsert = db.prepare(ENQUEUE_SQL);
  const inline = {
    backend: 'sqlite',
    enqueue: async (imageId, reason) => {
      upsert.run({ imageId, reason, now: Date.now() });
    },
    consume: async () => undefined,
    stopConsuming: async () => undefined,
    health: () => schema.health(),
    close: async () => {
      db.close();
      await schema.close();
    },
  };
  const trigger = createRawCacheTrigger(inline, logger, { ...config.rawcache.trigger, spool_dir: path.join(dir, 'spool') });
  const proxy = createProxy(config, logger, { rawCache: trigger });
  const { host, port } = await proxy.listen();
  logger.info('listening', { address: `${host}:${port}`, mode, synchronous: db.pragma('synchronous', { simple: true }) });
  process.on('SIGTERM', () => process.exit(0));
})().catch((err) => {
  process.stderr.write(`${err.stack}\n`);
  process.exit(1);
});
