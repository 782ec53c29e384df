'use strict';
// A stand-in for Glance that costs almost nothing, so the proxy's own overhead shows:
//   GET /v2/images/{id}          a fixed ~1 KB image document (shaped like Glance's)
//   GET /v2/images/{id}/file     ?bytes=N zeros (default 1 GiB), streamed with backpressure
//   PUT /v2/images/{id}/file     drains the body, answers 204
// usage: node bench/fast-upstream.js PORT
const http = require('node:http');

const port = Number(process.argv[2]);
const id = 'b0d57dd6-d5e0-4e55-bbf5-5c32deddfecd';
// Spaced like Python's json.dumps, as Glance sends it.
const image = Buffer.from(JSON.stringify({
  cache_raw: 'True', hw_wrs_live_migration_timeout: '400', os_distro: 'cirros', os_version: '0.6.2',
  name: 'cirros-test', disk_format: 'qcow2', container_format: 'bare', visibility: 'public',
  size: 196616, virtual_size: 16777216, status: 'active', checksum: '37c6e1dc70aaf136834e92bf9637f613',
  protected: false, min_ram: 0, min_disk: 0, owner: 'test-project', os_hidden: false, os_hash_algo: 'sha512',
  os_hash_value: 'db0fb0265046dadb77d98e6a5149e3bfda6a2aea2c16e1644d3ea4ccd99fa168cf50ecd70536b1ef1099043ed1e25f3bdc742d1950b9fca394b9af91e736d909',
  id, created_at: '2026-11-27T00:36:29Z', updated_at: '2026-11-27T00:36:29Z',
  locations: [{ url: `file:///var/lib/glance/images/${id}`, metadata: { store: 'fs' } }],
  direct_url: `file:///var/lib/glance/images/${id}`, tags: ['a', 'b'],
  self: `/v2/images/${id}`, file: `/v2/images/${id}/file`, schema: '/v2/schemas/image', stores: 'fs',
}).replace(/":/g, '": ').replace(/,"/g, ', "'));
const zeros = Buffer.alloc(1 << 20);
const IMAGE = /^\/v2\/images\/[^/]+$/;
const FILE = /^\/v2\/images\/[^/]+\/file$/;

function sendZeros(res, total) {
  res.writeHead(200, { 'Content-Type': 'application/octet-stream', 'Content-Length': total });
  let left = total;
  const pump = () => {
    while (left > 0) {
      const chunk = left >= zeros.length ? zeros : zeros.subarray(0, left);
      left -= chunk.length;
      if (!res.write(chunk)) return res.once('drain', pump);
    }
    res.end();
  };
  pump();
}

const server = http.createServer({ requestTimeout: 0, keepAliveTimeout: 65_000 }, (req, res) => {
  const url = new URL(req.url, 'http://x');
  if (req.method === 'GET' && IMAGE.test(url.pathname)) {
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': image.length });
    res.end(image);
  } else if (req.method === 'GET' && FILE.test(url.pathname)) {
    sendZeros(res, Number(url.searchParams.get('bytes') ?? 1 << 30));
  } else if (req.method === 'PUT' && FILE.test(url.pathname)) {
    req.on('data', () => {});
    req.on('end', () => res.writeHead(204, { 'Content-Length': 0 }).end());
  } else {
    res.writeHead(404, { 'Content-Type': 'text/plain', 'Content-Length': 9 }).end('Not Found');
  }
});
server.listen(port, '127.0.0.1');
process.on('SIGTERM', () => process.exit(0));
