'use strict';
// What a reconciler sweep costs: creates images on a real Glance straight through its API (a
// one-byte upload each, so they are active), each with cache_raw=True and a raw-cache state of a
// finished conversion (cache_raw_status=Cached, a file copy that exists), the steady state of a
// deployment; then runs the worker's sweep (dist/rawcache/reconciler.js) against them through a
// counting relay, and reports the Glance API calls and seconds, at each size of SIZES (images are
// added between sizes). Prints one JSON line per size.
//
//   usage: node bench/sweep.js SIZES...    e.g. node bench/sweep.js 1000 10000  (needs `npm run build`)
require('./load-harness');

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const http = require('node:http');
const winston = require('winston');
const { startGlance } = require('../test/harness/glance.ts');
const { startGlanceRelay } = require('../test/harness/glance-relay.ts');
const { loadConfig } = require('../dist/config/load');
const { GlanceClient } = require('../dist/rawcache/glance-client');
const { createJobQueue } = require('../dist/rawcache/queue');
const { createRawCopyTarget } = require('../dist/rawcache/targets');
const { sweep } = require('../dist/rawcache/reconciler');

const CREATE_CONCURRENCY = Number(process.env.BENCH_SWEEP_CREATE_CONCURRENCY || 8);
const agent = new http.Agent({ keepAlive: true, maxSockets: CREATE_CONCURRENCY });

function call(method, url, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        if (res.statusCode >= 300) reject(new Error(`${method} ${url}: ${res.statusCode} ${text.slice(0, 200)}`));
        else resolve(text ? JSON.parse(text) : undefined);
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function main() {
  const sizes = process.argv.slice(2).map(Number);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-sweep-'));
  const rawDir = path.join(dir, 'raw');
  fs.mkdirSync(rawDir);
  const logger = winston.createLogger({ silent: true });
  let glance;
  let relay;
  let queue;
  // Stopped by a signal: Glance (a process of its own) goes too.
  for (const signal of ['SIGTERM', 'SIGINT']) {
    process.once(signal, () => {
      Promise.resolve(glance?.stop()).finally(() => {
        fs.rmSync(dir, { recursive: true, force: true });
        process.exit(1);
      });
    });
  }
  try {
    glance = await startGlance();
    relay = await startGlanceRelay(glance.url);
    const base = loadConfig({ overrides: { upstream: relay.url } });
    const config = {
      ...base.rawcache,
      queue: { ...base.rawcache.queue, backend: 'sqlite', sqlite_path: path.join(dir, 'queue.sqlite') },
      target: { ...base.rawcache.target, kind: 'file', file_dir: rawDir },
      worker: { ...base.rawcache.worker, work_dir: path.join(dir, 'work') },
    };
    fs.mkdirSync(config.worker.work_dir);
    queue = await createJobQueue(config.queue, logger);
    const target = createRawCopyTarget(config.target, logger);
    let created = 0;
    for (const size of sizes) {
      const createStarted = performance.now();
      const toCreate = size - created;
      let next = 0;
      const creator = async () => {
        while (next < toCreate) {
          next++;
          const image = await call('POST', `${glance.url}/v2/images`, JSON.stringify({ name: `sweep-${created + next}`, disk_format: 'qcow2', container_format: 'bare', cache_raw: 'True' }), { 'Content-Type': 'application/json' });
          await call('PUT', `${glance.url}/v2/images/${image.id}/file`, 'x', { 'Content-Type': 'application/octet-stream' });
          const url = `file://${path.join(rawDir, `${image.id}.raw`)}`;
          await call(
            'PATCH',
            `${glance.url}/v2/images/${image.id}`,
            JSON.stringify([
              { op: 'add', path: '/cache_raw_status', value: 'Cached' },
              { op: 'add', path: '/cache_raw_url', value: url },
              { op: 'add', path: '/cache_raw_size', value: '1' },
            ]),
            { 'Content-Type': 'application/openstack-images-v2.1-json-patch' },
          );
          fs.writeFileSync(path.join(rawDir, `${image.id}.raw`), 'x');
        }
      };
      await Promise.all(Array.from({ length: CREATE_CONCURRENCY }, creator));
      created = size;
      const createSeconds = (performance.now() - createStarted) / 1000;
      relay.seen.length = 0;
      const glanceClient = new GlanceClient({ baseUrl: relay.url });
      const started = performance.now();
      const result = await sweep({ glance: glanceClient, queue, target, config, logger });
      const seconds = (performance.now() - started) / 1000;
      glanceClient.close();
      const calls = relay.seen.length;
      const lists = relay.seen.filter((s) => s.startsWith('GET /v2/images?')).length;
      process.stdout.write(
        `${JSON.stringify({ images: size, sweep_seconds: Number(seconds.toFixed(2)), glance_calls: calls, list_calls: lists, other_calls: calls - lists, examined: result.examined, requeued: result.requeued.length, orphans: result.orphans.length, images_created: toCreate, create_seconds: Number(createSeconds.toFixed(1)) })}\n`,
      );
    }
  } finally {
    await queue?.close();
    await relay?.close();
    await glance?.stop();
    agent.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench/sweep.js: ${err.stack || err.message}\n`);
  process.exit(1);
});
