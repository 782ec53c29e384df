'use strict';
// Trigger-to-job-start latency with an idle worker, on both queue backends: a consumer in a
// process of its own (the built queue code, concurrency 1, a handler that completes at once)
// and this process enqueuing one trigger every 200 ms, as the proxy would. Latency is from the
// enqueue call until the consumer's handler starts (both read the same clock). Prints one JSON
// line per backend: {"backend","n","p50_ms","p95_ms","max_ms"}.
//
//   usage: node bench/capacity-wakeup.js AMQP_URL   (needs `npm run build`; run by bench/capacity.sh)
const { spawn } = require('node:child_process');
const { randomUUID } = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const winston = require('winston');
const { createJobQueue } = require('../dist/rawcache/queue');

const TRIGGERS = Number(process.env.BENCH_WAKEUP_TRIGGERS || 40);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const quiet = winston.createLogger({ silent: true });

const CONSUMER = `
  const winston = require('winston');
  const { createJobQueue } = require(${JSON.stringify(path.resolve(__dirname, '..', 'dist', 'rawcache', 'queue'))});
  (async () => {
    const queue = await createJobQueue(JSON.parse(process.env.QUEUE_CONFIG), winston.createLogger({ silent: true }));
    await queue.consume(async (job) => {
      process.stdout.write(JSON.stringify({ id: job.imageId, at: performance.timeOrigin + performance.now() }) + '\\n');
      await job.complete();
    }, { concurrency: 1 });
    process.stdout.write('ready\\n');
  })().catch((err) => { process.stderr.write(String(err.stack) + '\\n'); process.exit(1); });
`;

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

async function measure(backend, config) {
  const child = spawn(process.execPath, ['-e', CONSUMER], { env: { ...process.env, QUEUE_CONFIG: JSON.stringify(config) }, stdio: ['ignore', 'pipe', 'inherit'] });
  const starts = new Map();
  let ready;
  const isReady = new Promise((resolve) => (ready = resolve));
  let buffer = '';
  child.stdout.on('data', (chunk) => {
    buffer += chunk;
    let nl;
    while ((nl = buffer.indexOf('\n')) >= 0) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 1);
      if (line === 'ready') ready();
      else if (line) {
        const { id, at } = JSON.parse(line);
        if (!starts.has(id)) starts.set(id, at);
      }
    }
  });
  const producer = await createJobQueue(config, quiet);
  try {
    await isReady;
    await sleep(500);
    const latencies = [];
    for (let i = 0; i < TRIGGERS; i++) {
      const id = randomUUID();
      const sent = performance.timeOrigin + performance.now();
      await producer.enqueue(id, 'upload');
      const deadline = Date.now() + 10_000;
      while (!starts.has(id) && Date.now() < deadline) await sleep(1);
      if (!starts.has(id)) throw new Error(`${backend}: job ${id} did not start within 10 s`);
      latencies.push(starts.get(id) - sent);
      await sleep(200);
    }
    const sorted = [...latencies].sort((a, b) => a - b);
    const r = (v) => Number(v.toFixed(1));
    return { backend, n: sorted.length, p50_ms: r(percentile(sorted, 50)), p95_ms: r(percentile(sorted, 95)), max_ms: r(sorted[sorted.length - 1]) };
  } finally {
    child.kill('SIGKILL');
    await producer.close();
  }
}

async function main() {
  const amqpUrl = process.argv[2];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-wakeup-'));
  try {
    const sqlite = { backend: 'sqlite', sqlite_path: path.join(dir, 'queue.sqlite'), amqp_url: null, amqp_queue: 'unused', amqp_partitions: 1, lease_seconds: 60 };
    process.stdout.write(`${JSON.stringify(await measure('sqlite', sqlite))}\n`);
    if (amqpUrl) {
      const amqp = { backend: 'amqp', sqlite_path: '', amqp_url: amqpUrl, amqp_queue: `bench-wakeup-${process.pid}.rawcache`, amqp_partitions: 8, lease_seconds: 60 };
      process.stdout.write(`${JSON.stringify(await measure('amqp', amqp))}\n`);
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`bench/capacity-wakeup.js: ${err.stack || err.message}\n`);
    process.exit(1);
  },
);
