'use strict';
// Starts the project's real Glance (test/harness/glance.ts), prints one JSON line
// {"url","port","pid"} and keeps it running until SIGTERM/SIGINT.
require('./load-harness');

const { startGlance } = require('../test/harness/glance.ts');

async function main() {
  const glance = await startGlance();
  // The harness unrefs its child; this timer is what keeps this holder alive.
  const keepAlive = setInterval(() => {}, 1 << 30);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    clearInterval(keepAlive);
    await glance.stop();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(`${JSON.stringify({ url: glance.url, port: glance.port, pid: glance.pid })}\n`);
}

main().catch((err) => {
  process.stderr.write(`bench/glance.js: ${err.stack || err.message}\n`);
  process.exit(1);
});
