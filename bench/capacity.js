'use strict';
// Raw-cache capacity: 8 qcow2 images converted by 1 worker, then by 2 workers (concurrency 1
// each), with the SQLite queue and with the RabbitMQ queue, against a real Glance (file store)
// and the file target, in one run. The images are uploaded straight to Glance (no trigger), then
// cache_raw=True is patched onto all 8 through the proxy: the time is from the first PATCH until
// Glance shows all 8 Cached. Also checks the fence: each image converted exactly once.
// Prints one JSON line per run, then a JSON summary {runs: [...]}.
//
//   usage: node bench/capacity.js   (run by bench/capacity.sh; needs `npm run build`)
//   knobs: BENCH_CAPACITY_ROUNDS (1), BENCH_CAPACITY_IMAGE_MIB (256), BENCH_CAPACITY_DATA_MIB (96)
require('./load-harness');

const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startGlance } = require('../test/harness/glance.ts');
const { startRabbitMQ } = require('../test/harness/rabbitmq.ts');
const { startProxy, startWorker } = require('../test/harness/proxy.ts');
const { freePort } = require('../test/harness/ports.ts');

const IMAGES = 8;
const ROUNDS = Number(process.env.BENCH_CAPACITY_ROUNDS || 1);
const IMAGE_MIB = Number(process.env.BENCH_CAPACITY_IMAGE_MIB || 256);
const DATA_MIB = Number(process.env.BENCH_CAPACITY_DATA_MIB || 96);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function call(method, url, body, headers = {}) {
  const res = await fetch(url, { method, body, headers, duplex: 'half' });
  const text = await res.text();
  if (res.status >= 300) throw new Error(`${method} ${url}: ${res.status} ${text.slice(0, 200)}`);
  return text ? JSON.parse(text) : undefined;
}

async function main() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-capacity-'));
  const sources = [];
  for (let i = 0; i < IMAGES; i++) {
    const file = path.join(dir, `source-${i}.qcow2`);
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', file, `${IMAGE_MIB}M`]);
    execFileSync('qemu-io', ['-f', 'qcow2', '-c', `write -q -P ${0x31 + i} 1M ${DATA_MIB}M`, file]);
    sources.push(file);
  }
  let glance;
  let rabbit;
  const running = [];
  const stopAll = async () => {
    while (running.length) await running.pop().stop().catch(() => undefined);
  };
  try {
    [glance, rabbit] = await Promise.all([startGlance(), startRabbitMQ()]);
    // Trigger-to-job-start latency with an idle worker, both backends (bench/capacity-wakeup.js).
    const wakeup = execFileSync(process.execPath, [path.join(__dirname, 'capacity-wakeup.js'), rabbit.url], { encoding: 'utf8' })
      .split('\n')
      .filter(Boolean)
      .map((line) => JSON.parse(line));
    process.stderr.write(`${JSON.stringify(wakeup)}\n`);
    const runs = [];
    let serial = 0;
    for (let round = 0; round < ROUNDS; round++) {
      for (const backend of ['sqlite', 'amqp']) {
        for (const workers of [1, 2]) {
          const runDir = path.join(dir, `run-${++serial}`);
          fs.mkdirSync(runDir);
          const queue =
            backend === 'sqlite'
              ? { backend: 'sqlite', sqlite_path: path.join(runDir, 'queue.sqlite') }
              : { backend: 'amqp', amqp_url: rabbit.url, amqp_queue: `bench-capacity-${serial}.rawcache`, amqp_partitions: 8 };
          const config = path.join(runDir, 'config.json');
          fs.writeFileSync(
            config,
            JSON.stringify({
              upstream: glance.url,
              rawcache: {
                enabled: true,
                queue,
                target: { kind: 'file', file_dir: path.join(runDir, 'raw') },
                worker: { concurrency: 1, work_dir: path.join(runDir, 'work'), reconcile_interval_seconds: 0 },
                trigger: { spool_dir: path.join(runDir, 'spool') },
              },
            }),
          );
          // Uploaded straight to Glance: no trigger yet.
          const ids = [];
          for (let i = 0; i < IMAGES; i++) {
            const image = await call('POST', `${glance.url}/v2/images`, JSON.stringify({ name: `capacity-${serial}-${i}`, disk_format: 'qcow2', container_format: 'bare' }), {
              'Content-Type': 'application/json',
            });
            await call('PUT', `${glance.url}/v2/images/${image.id}/file`, fs.createReadStream(sources[i]), { 'Content-Type': 'application/octet-stream' });
            ids.push(image.id);
          }
          const proxy = await startProxy({ upstream: glance.url, config });
          running.push(proxy);
          const pool = [];
          for (let n = 0; n < workers; n++) {
            const worker = await startWorker({ config, opsPort: await freePort() });
            running.push(worker);
            pool.push(worker);
          }
          const started = performance.now();
          for (const id of ids) {
            await call('PATCH', `${proxy.url}/v2/images/${id}`, JSON.stringify([{ op: 'add', path: '/cache_raw', value: 'True' }]), {
              'Content-Type': 'application/openstack-images-v2.1-json-patch',
            });
          }
          const waiting = new Set(ids);
          while (waiting.size > 0) {
            for (const id of [...waiting]) {
              const image = await call('GET', `${glance.url}/v2/images/${id}`);
              if (image.cache_raw_status === 'Cached') waiting.delete(id);
              else if (image.cache_raw_status === 'Error') throw new Error(`image ${id} ended in Error: ${image.cache_raw_error}`);
            }
            if (waiting.size > 0) await sleep(50);
            if (performance.now() - started > 600_000) throw new Error('not all Cached within 10 minutes');
          }
          const seconds = (performance.now() - started) / 1000;
          const conversions = pool.flatMap((w, n) =>
            w
              .logs()
              .split('\n')
              .filter((l) => l.includes('"message":"converting to RAW"'))
              .map((l) => ({ worker: n, id: JSON.parse(l).image_id })),
          );
          const perImage = ids.map((id) => conversions.filter((c) => c.id === id).length);
          const perWorker = pool.map((_, n) => conversions.filter((c) => c.worker === n).length);
          const run = { round, backend, workers, seconds: Number(seconds.toFixed(2)), conversions_per_image: perImage, conversions_per_worker: perWorker, fence_ok: perImage.every((n) => n === 1) };
          process.stderr.write(`${JSON.stringify(run)}\n`);
          runs.push(run);
          await stopAll();
          for (const id of ids) await call('DELETE', `${glance.url}/v2/images/${id}`).catch(() => undefined);
          fs.rmSync(runDir, { recursive: true, force: true });
        }
      }
    }
    process.stdout.write(`${JSON.stringify({ images: IMAGES, image_mib: IMAGE_MIB, data_mib: DATA_MIB, wakeup, runs })}\n`);
  } finally {
    await stopAll();
    await glance?.stop();
    await rabbit?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  process.stderr.write(`bench/capacity.js: ${err.stack || err.message}\n`);
  process.exit(1);
});
