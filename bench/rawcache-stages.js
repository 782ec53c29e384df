'use strict';
// Times the stages of one raw-cache conversion with the worker's own code (dist/), on an image
// that Glance already holds, and prints {"fetch_s","inspect_s","write_s","verified_by"}:
//   fetch    the source read into the work dir (Glance's API for the file target, `rbd export`
//            for the rbd target, as the worker chooses) while hashing it against os_hash_value
//   inspect  inspectImage: header checks, `qemu-img info` and `qemu-img check` under prlimit
//   write    target.write: the convert into the target and what the target does around it
//            (file: fsync and rename; rbd: rbd info/snap ls, snap create + protect, rename)
// The copy is written under a fresh id and removed at the end; the image is left as it was.
//
//   usage: node bench/rawcache-stages.js CONFIG_JSON IMAGE_ID
//   (CONFIG_JSON: the worker's configuration file, for rawcache.target, work_dir and upstream)
const { randomUUID } = require('node:crypto');
const fs = require('node:fs');
const winston = require('winston');
const { GlanceClient } = require('../dist/rawcache/glance-client');
const { fetchVerifiedSource, rbdExportReader } = require('../dist/rawcache/source');
const { inspectImage } = require('../dist/rawcache/inspect');
const { createRawCopyTarget } = require('../dist/rawcache/targets');
const { rbdLocationOf } = require('../dist/rawcache/worker');

async function main() {
  const [configFile, imageId] = process.argv.slice(2);
  const config = JSON.parse(fs.readFileSync(configFile, 'utf8'));
  const { target: targetConfig, worker } = config.rawcache;
  const glance = new GlanceClient({ baseUrl: config.upstream });
  const target = createRawCopyTarget(
    { file_dir: '', rbd_pool: 'images', rbd_user: 'glance', ceph_conf: '/etc/ceph/ceph.conf', ...targetConfig },
    winston.createLogger({ silent: true }),
  );
  const signal = new AbortController().signal;
  const seconds = (since) => Number(((performance.now() - since) / 1000).toFixed(3));
  const copyId = randomUUID();
  let sourcePath;
  try {
    const image = await glance.getImage(imageId);
    if (!image || image.status !== 'active') throw new Error(`image ${imageId} is not active`);
    const rbd = rbdLocationOf(image);

    let started = performance.now();
    const source = await fetchVerifiedSource(
      { imageId, checksum: image.checksum ?? null, osHashAlgo: image.os_hash_algo ?? null, osHashValue: image.os_hash_value ?? null, size: image.size ?? null },
      (s) => (rbd && target.kind === 'rbd' ? rbdExportReader(rbd.pool, rbd.image, rbd.snap, targetConfig.rbd_user, targetConfig.ceph_conf, s) : glance.download(imageId, s)),
      worker.work_dir,
      signal,
    );
    sourcePath = source.path;
    const fetch = seconds(started);

    started = performance.now();
    const info = await inspectImage(source.path, String(image.disk_format), signal);
    const inspect = seconds(started);

    started = performance.now();
    await target.write(copyId, { path: source.path, format: info.format, virtualSize: info.virtualSize }, signal);
    const write = seconds(started);
    process.stdout.write(`${JSON.stringify({ fetch_s: fetch, inspect_s: inspect, write_s: write, verified_by: source.verifiedBy })}\n`);
  } finally {
    await target.remove(copyId).catch(() => undefined);
    if (sourcePath) fs.rmSync(sourcePath, { force: true });
    glance.close();
  }
}

main().catch((err) => {
  process.stderr.write(`bench/rawcache-stages.js: ${err.stack || err.message}\n`);
  process.exit(1);
});
