'use strict';
// The second load generator of bench/eventloop.sh: PUT /v2/images/<new id>/file with a body of
// BYTES, RATE times a minute, for SECONDS, each on its own connection and not waiting for the
// previous one. Each upload through a proxy with the raw cache on records a trigger.
// Prints {"uploads","failed","p50_ms","max_ms"} at the end.
//
//   usage: node bench/eventloop-uploads.js URL RATE_PER_MINUTE SECONDS [BYTES]
const http = require('node:http');
const { randomUUID } = require('node:crypto');

const [url, rate, seconds, bytes = String(64 * 1024)] = process.argv.slice(2);
const body = Buffer.alloc(Number(bytes), 0x61);
const interval = 60_000 / Number(rate);
const until = Date.now() + Number(seconds) * 1000;
const times = [];
let failed = 0;
let inFlight = 0;

function upload() {
  const started = performance.now();
  inFlight++;
  const req = http.request(`${url}/v2/images/${randomUUID()}/file`, { method: 'PUT', agent: false, headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': body.length } }, (res) => {
    res.resume();
    res.on('end', () => {
      inFlight--;
      if (res.statusCode === 204) times.push(performance.now() - started);
      else failed++;
    });
  });
  req.on('error', () => {
    inFlight--;
    failed++;
  });
  req.end(body);
}

const timer = setInterval(() => {
  if (Date.now() >= until) {
    clearInterval(timer);
    const finish = setInterval(() => {
      if (inFlight > 0) return;
      clearInterval(finish);
      const sorted = times.sort((a, b) => a - b);
      const at = (p) => (sorted.length ? Number(sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)].toFixed(1)) : null);
      process.stdout.write(`${JSON.stringify({ uploads: sorted.length, failed, p50_ms: at(0.5), max_ms: at(1) })}\n`);
    }, 20);
    return;
  }
  upload();
}, interval);
upload();
