'use strict';
// Starts the project's real Glance (test/harness/glance.ts), prints one JSON line
// {"url","port","pid"} and keeps it running until SIGTERM/SIGINT.
// The harness is TypeScript and ts-node is not installed, so its modules are transpiled
// on require with the project's own typescript; their __dirname stays test/harness.
const fs = require('node:fs');
const ts = require('typescript');

require.extensions['.ts'] = (module, filename) => {
  const { outputText } = ts.transpileModule(fs.readFileSync(filename, 'utf8'), {
    fileName: filename,
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022, esModuleInterop: true },
  });
  module._compile(outputText, filename);
};

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
