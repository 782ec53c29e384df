'use strict';
// The least a Node relay can do: every request streamed to the upstream with http.request and a
// keep-alive agent, and the answer streamed back with pipeline. The baseline the proxy's streams
// are measured against (bench/run.sh).
// usage: node bench/bare-relay.js PORT UPSTREAM_URL
const http = require('node:http');
const { pipeline } = require('node:stream');

const [port, upstream] = [Number(process.argv[2]), new URL(process.argv[3])];
const agent = new http.Agent({ keepAlive: true });
http.createServer((req, res) => {
  const out = http.request({ host: upstream.hostname, port: upstream.port, method: req.method, path: req.url, headers: req.headers, agent }, (up) => {
    res.writeHead(up.statusCode, up.headers);
    pipeline(up, res, () => {});
  });
  out.on('error', () => res.destroy());
  pipeline(req, out, () => {});
}).listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
