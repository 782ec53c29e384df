'use strict';
// Times the stages of one raw-cache conversion with the worker's own code (dist/), on an image
// that Glance already holds, and prints {"fetch_s","inspect_s","write_s","verified_by","in_place"}.
// Where the worker converts in place (an rbd target and the image in its Ceph pool; a file target
// sharing Glance's file store, rawcache.target.file_source_dirs):
//   fetch    the verifying read alone (rbd export, or the store's file, hashed against
//            os_hash_value): in the worker it runs beside inspect + write, not before them
//   inspect  inspectImage on the image in place (rbd: the header from the verifying read)
//   write    target.write from the image in place: the convert into the target and what the target
//            does around it (file: fsync and rename; rbd: snap create + protect, rename)
// Otherwise (the fallback):
//   fetch    the source read into the work dir through Glance's API while hashing it
//   inspect  inspectImage on the downloaded file
//   write    target.write from the downloaded file
// The copy is written under a fresh id and removed at the end; the image is left as it was.
//
//   usage: node bench/rawcache-stages.js CONFIG_JSON IMAGE_ID
//   (CONFIG_JSON: the worker's configuration file, for rawcache.target, work_dir and upstream)
const { randomUUID } = require('node:crypto');
const fs = require('node:fs');
const winston = require('winston');
const { GlanceClient } = require('../dist/rawcache/glance-client');
const { chooseFileSource, dataRecordOf, fetchVerifiedSource, rbdExportReader, readAndVerify } = require('../dist/rawcache/source');
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
    const record = dataRecordOf(image);
    // Where the worker reads it: the same choices as RawCacheWorker.chooseDataSource.
    let inPlace;
    if (target.kind === 'rbd') {
      const rbd = rbdLocationOf(image);
      if (rbd) {
        inPlace = {
          open: (s) => rbdExportReader(rbd.pool, rbd.image, rbd.snap, target.user, target.cephConf, s),
          qemuSource: target.qemuSourceSpec(rbd.pool, rbd.image, rbd.snap),
          headOnly: true,
        };
      }
    } else {
      const urls = [...(image.locations ?? []).map((l) => l.url), image.direct_url].filter((u) => typeof u === 'string');
      const choice = await chooseFileSource(imageId, urls, targetConfig.file_source_dirs ?? []);
      if (choice.from === 'file') inPlace = { open: () => fs.createReadStream(choice.path, { highWaterMark: 1024 * 1024 }), qemuSource: choice.path, headOnly: false };
    }

    let started = performance.now();
    let source;
    let head;
    let verifiedBy;
    if (inPlace) {
      const read = readAndVerify(record, inPlace.open, signal);
      head = await read.head;
      verifiedBy = (await read.verified).verifiedBy;
      source = inPlace.qemuSource;
    } else {
      const fetched = await fetchVerifiedSource(record, (s) => glance.download(imageId, s), worker.work_dir, signal);
      sourcePath = fetched.path;
      source = fetched.path;
      verifiedBy = fetched.verifiedBy;
    }
    const fetch = seconds(started);

    started = performance.now();
    const info = await inspectImage(source, String(image.disk_format), signal, inPlace?.headOnly ? { head } : undefined);
    const inspect = seconds(started);

    started = performance.now();
    await target.write(copyId, { path: source, format: info.format, virtualSize: info.virtualSize }, signal);
    const write = seconds(started);
    process.stdout.write(`${JSON.stringify({ fetch_s: fetch, inspect_s: inspect, write_s: write, verified_by: verifiedBy, in_place: Boolean(inPlace) })}\n`);
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
