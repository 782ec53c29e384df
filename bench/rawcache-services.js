'use strict';
// Starts a single-node Ceph (test/harness/ceph.ts) and a real Glance whose default backend `ceph`
// stores images in its pool `images`, next to a file backend `fs` (test/harness/glance.ts), prints
// one JSON line {"glance_url","store_dir" (the file backend's directory),"fsid","ceph_conf","pool","user"} and keeps both running until
// SIGTERM/SIGINT, then stops them. Used by bench/rawcache.sh.
require('./load-harness');

const { startCeph, writeGlanceRbdConf } = require('../test/harness/ceph.ts');
const { startGlance } = require('../test/harness/glance.ts');

async function main() {
  let ceph;
  let glance;
  let stopping;
  const stop = () =>
    (stopping ??= (async () => {
      await glance?.stop();
      await ceph?.stop();
    })());
  const onSignal = () => stop().then(() => process.exit(0));
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  try {
    // 16 GiB of memstore: a 1 GiB image, its raw copy and a baseline copy at once, with room to spare.
    ceph = await startCeph({ osdBytes: 16 * 1024 ** 3 });
    glance = await startGlance({ store: 'rbd', extraConf: await writeGlanceRbdConf(ceph) });
  } catch (err) {
    await stop();
    throw err;
  }
  // The harness unrefs its children; this timer is what keeps this holder alive.
  setInterval(() => {}, 1 << 30);
  process.stdout.write(
    `${JSON.stringify({ glance_url: glance.url, store_dir: glance.storeDir, fsid: ceph.fsid, ceph_conf: ceph.confPath, pool: ceph.pool, user: ceph.user })}\n`,
  );
}

main().catch((err) => {
  process.stderr.write(`bench/rawcache-services.js: ${err.stack || err.message}\n`);
  process.exit(1);
});
