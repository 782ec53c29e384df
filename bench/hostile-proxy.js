#!/usr/bin/env node
// Hostile JSON request bodies THROUGH THE PROXY PROCESS: the built proxy (`node dist/cli.js serve`, default
// configuration: limits.max_json_request 16 MiB, default JSON limits) in front of a trivial upstream (a
// Node http server that drains every request and answers 201 `{"id": "...", "name": "x"}`; it stands in
// for Glance, only the proxy is measured). One POST /v2/images per proxy process, for bodies of 1, 4 and
// 16 MiB (the shapes of bench/hostile-json.js, accepted ones as image objects) and one just over 16 MiB,
// sent with Content-Length and chunked. For each request:
//   answer     the proxy's status, and the time from the first byte sent to the answer's status line
//   peak RSS   /proc/PID/status VmHWM after the request minus VmRSS when idle (after start, a warm-up of
//              small requests and a rest): the proxy's peak over idle while it handled the body
//   delay      the proxy's own monitorEventLoopDelay, read from its /metrics (prom-client's
//              nodejs_eventloop_lag_max_seconds), scraped right before and right after the request
//   ping       the longest answer to GET /healthcheck on the API port, asked back to back from outside
//              while the body is sent and handled (a second, independent look at the same stalls)
//   GC         the proxy's nodejs_gc_duration_seconds_sum over the request (all kinds)
// Each run is a fresh proxy process; each case runs 3 times (HOSTILE_PROXY_ROUNDS).
// Writes the "Through the proxy process" part of the hostile-json section of bench/RESULTS.md.
// Needs `npm run build` first.
//
// usage: node bench/hostile-proxy.js [--sizes 1,4,16] [--no-write] [--only REGEX] [--framing content-length|chunked]
//        HOSTILE_PROXY_ROUNDS=3 HOSTILE_PROXY_NODE_ARGS='--cpu-prof --cpu-prof-dir=/tmp/prof' (node options for the proxy)
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { spawn } = require('node:child_process');
const { once } = require('node:events');
const { setTimeout: sleep } = require('node:timers/promises');
const { BODIES, repeated, writePart } = require('./hostile-json.js');

const MiB = 1024 * 1024;
const CHUNK = 64 * 1024;
const LIMIT = 16 * MiB; // limits.max_json_request, default
const CLI = path.join(__dirname, '..', 'dist', 'cli.js');
const METRIC_PREFIX = 'stx_glance_proxy_proxy_';
/** Rest between the warm-up and the idle reading, and around the request (>= 2 ticks of the 10 ms monitor). */
const REST_MS = 300;
const AROUND_MS = 50;
const IMAGE_ID = 'b0d57dd6-d5e0-4e55-bbf5-5c32deddfecd';

/** `{"name": "x"<extra>, "p0000": "<first>a…a", ...}`: strings of 65535 UTF-16 units, as many as fit. */
function imageStringsBody(size, first, extra = '') {
  const string = `"${first}${'a'.repeat(65535 - first.length)}"`;
  const parts = [`{"name": "x"${extra}`];
  let length = Buffer.byteLength(parts[0]);
  for (let i = 0; ; i += 1) {
    const member = `, "p${String(i).padStart(4, '0')}": ${string}`;
    const bytes = Buffer.byteLength(member);
    if (length + bytes + 1 > size) break;
    parts.push(member);
    length += bytes;
  }
  const text = Buffer.from(`${parts.join('')}}`);
  const body = Buffer.alloc(size, ' ');
  text.copy(body);
  return body;
}

const CASES = [
  // Refused by the JSON reader while the body streams in (the shapes of bench/hostile-json.js).
  ...BODIES.filter((body) => !body.name.startsWith('accepted')),
  // Within every limit, so read whole, checked and forwarded: image objects, as POST /v2/images needs.
  { name: 'accepted: long strings', shape: '`{"name": "x", "p0000": "a…a", ...}` 65535 units each', make: (size) => imageStringsBody(size, '') },
  { name: 'accepted: long strings, non-Latin-1', shape: 'the same, each starting with `Ā`', make: (size) => imageStringsBody(size, 'Ā') },
  {
    name: 'accepted and rewritten: non-Latin-1 + `cache_raw`',
    shape: 'the same with `"cache_raw": true` (the proxy forwards `"True"`: a new body)',
    make: (size) => imageStringsBody(size, 'Ā', ', "cache_raw": true'),
  },
  { name: 'accepted: whitespace', shape: '`{}` then spaces', make: (size) => repeated(size, '{}', ' ', ' ') },
  { name: 'accepted: one long float', shape: '`{"x_float": 0.111...1}`', make: (size) => repeated(size, '{"x_float": 0.', '1', '1}') },
];
const OVER_LIMIT = { name: 'over the limit', shape: '`{}` then spaces, 16 MiB + 1 byte', make: () => repeated(LIMIT + 1, '{}', ' ', ' ') };

// ---------------------------------------------------------------------------------------------------
// The upstream: a trivial stand-in for Glance, in its own process.

function upstreamMain() {
  const image = Buffer.from(`{"id": "${IMAGE_ID}", "name": "x"}`);
  const server = http.createServer({ requestTimeout: 0, keepAliveTimeout: 65_000 }, (req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(201, { 'Content-Type': 'application/json', 'Content-Length': image.length }).end(image));
  });
  server.listen(0, '127.0.0.1', () => process.stdout.write(`${server.address().port}\n`));
  process.on('SIGTERM', () => process.exit(0));
}

// ---------------------------------------------------------------------------------------------------
// Processes, /proc and /metrics.

/** Resolves with the first line `stream` writes, and keeps draining it (a full pipe would block the writer). */
function firstLine(stream, matches) {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const onData = (data) => {
      buffered += data;
      for (const line of buffered.split('\n')) {
        if (matches(line)) {
          stream.off('data', onData);
          stream.resume();
          resolve(line);
          return;
        }
      }
      buffered = buffered.slice(buffered.lastIndexOf('\n') + 1);
    };
    stream.setEncoding('utf8');
    stream.on('data', onData);
    stream.once('end', () => reject(new Error('exited before listening')));
  });
}

async function startUpstream() {
  const child = spawn(process.execPath, [__filename, '--upstream'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = Number(await firstLine(child.stdout, (line) => /^\d+$/.test(line)));
  return { child, url: `http://127.0.0.1:${port}` };
}

async function startProxy(upstreamUrl) {
  const nodeArgs = (process.env.HOSTILE_PROXY_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const child = spawn(process.execPath, [...nodeArgs, CLI, 'serve', '--upstream', upstreamUrl, '--listen', '127.0.0.1:0'], {
    env: { ...process.env, STX_GLANCE_PROXY_OPS_LISTEN: '127.0.0.1:0' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (data) => (stderr = `${stderr}${data}`.slice(-2000)));
  let line;
  try {
    line = await firstLine(child.stdout, (text) => text.includes('"listening"'));
  } catch (error) {
    throw new Error(`proxy did not start: ${stderr}`);
  }
  const { address, ops } = JSON.parse(line);
  return { child, pid: child.pid, api: `http://${address}`, ops: `http://${ops}`, agent: new http.Agent({ keepAlive: true, maxSockets: 1 }) };
}

/** Stops one process we started, by its PID: SIGTERM, then SIGKILL if it has not gone after 3 s. */
async function stop(child) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(timer);
}

function procStatus(pid) {
  const text = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (field) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)[1]);
  return { rss: kib('VmRSS') * 1024, hwm: kib('VmHWM') * 1024 };
}

/** utime + stime of the process, in ms. */
function cpuMs(pid) {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

/** Resets VmHWM to the current RSS (Linux >= 4.0); false when the kernel or the sandbox does not allow it. */
function resetPeak(pid) {
  try {
    fs.writeFileSync(`/proc/${pid}/clear_refs`, '5');
    return true;
  } catch {
    return false;
  }
}

function request(url, { method = 'GET', agent, headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, agent, headers }, (res) => {
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function scrape(proxy) {
  const { body } = await request(`${proxy.ops}/metrics`, { agent: proxy.agent });
  /** The sum of the metric over its label sets; `absent` when it has none yet (a histogram before its first sample). */
  const value = (name, absent = NaN) => {
    let sum = 0;
    let found = false;
    for (const match of body.matchAll(new RegExp(`^${METRIC_PREFIX}${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))) {
      sum += Number(match[1]);
      found = true;
    }
    return found ? sum : absent;
  };
  return {
    lagMaxMs: value('nodejs_eventloop_lag_max_seconds') * 1000,
    lagP99Ms: value('nodejs_eventloop_lag_p99_seconds') * 1000,
    gcMs: value('nodejs_gc_duration_seconds_sum', 0) * 1000,
  };
}

const SMALL_CREATE = Buffer.from(
  JSON.stringify({ name: 'cirros-warm-up', disk_format: 'qcow2', container_format: 'bare', visibility: 'private', cache_raw: true, tags: ['a', 'b'], os_distro: 'cirros' }),
);

/** A few small requests, as a proxy that has served some traffic has seen, and one scrape. */
async function warmUp(proxy) {
  for (let i = 0; i < 5; i += 1) {
    const { status } = await request(`${proxy.api}/v2/images`, { method: 'POST', agent: proxy.agent, headers: { 'Content-Type': 'application/json' }, body: SMALL_CREATE });
    if (status !== 201) throw new Error(`warm-up POST /v2/images answered ${status}`);
  }
  await request(`${proxy.api}/healthcheck`, { agent: proxy.agent });
  await scrape(proxy);
}

/** GET /healthcheck back to back (5 ms apart) until stopped; the longest answer. */
function startPinger(proxy) {
  let running = true;
  let longest = 0;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const loop = (async () => {
    await request(`${proxy.api}/healthcheck`, { agent }); // connect before the measurement
    while (running) {
      const started = process.hrtime.bigint();
      await request(`${proxy.api}/healthcheck`, { agent });
      longest = Math.max(longest, Number(process.hrtime.bigint() - started) / 1e6);
      if (running) await sleep(5);
    }
  })();
  return async () => {
    running = false;
    await loop;
    agent.destroy();
    return longest;
  };
}

/** Sends `body` as POST /v2/images; resolves once the answer is read and the whole body is sent (or refused). */
function sendHostile(proxy, body, framing) {
  return new Promise((resolve) => {
    const headers = { 'Content-Type': 'application/json', Accept: 'text/plain' };
    if (framing === 'content-length') headers['Content-Length'] = String(body.length);
    const started = process.hrtime.bigint();
    let answerMs;
    let status;
    let message = '';
    let responseDone = false;
    let requestDone = false;
    let error;
    const finish = () => {
      if ((responseDone || error) && requestDone) resolve({ status, message, answerMs, doneMs: Number(process.hrtime.bigint() - started) / 1e6, error });
    };
    const req = http.request(`${proxy.api}/v2/images`, { method: 'POST', agent: false, headers }, (res) => {
      answerMs = Number(process.hrtime.bigint() - started) / 1e6;
      status = res.statusCode;
      const chunks = [];
      res.on('data', (chunk) => chunks.push(chunk));
      res.on('end', () => {
        // Glance's plain-text error: status line, blank line, explanation.
        const text = Buffer.concat(chunks).toString('utf8');
        message = status >= 300 ? text.split('\n').map((line) => line.trim()).filter(Boolean).slice(1).join(' ') : '';
        responseDone = true;
        finish();
      });
      res.on('error', () => {});
    });
    // After a refusal the proxy may close the connection while the rest of the body is still on its way.
    req.on('error', (err) => {
      if (status === undefined) error = err.code ?? err.message;
      requestDone = true;
      finish();
    });
    req.on('finish', () => {
      requestDone = true;
      finish();
    });
    req.on('close', () => {
      requestDone = true;
      if (!responseDone && !error && status === undefined) error = 'closed without an answer';
      finish();
    });
    if (framing === 'content-length') {
      req.end(body);
      return;
    }
    (async () => {
      for (let offset = 0; offset < body.length; offset += CHUNK) {
        if (req.destroyed) return;
        if (!req.write(body.subarray(offset, offset + CHUNK))) {
          await new Promise((resolve) => {
            const done = () => {
              req.off('drain', done);
              req.off('close', done);
              resolve();
            };
            req.on('drain', done);
            req.on('close', done);
          });
        }
      }
      if (!req.destroyed) req.end();
    })();
  });
}

/** One fresh, warmed-up, idle proxy; one hostile request; its measurements. */
async function measure(proxy, body, framing) {
  const idle = procStatus(proxy.pid);
  const reset = resetPeak(proxy.pid);
  const before = await scrape(proxy);
  const cpuBefore = cpuMs(proxy.pid);
  await sleep(AROUND_MS);
  const stopPinger = startPinger(proxy);
  const sent = await sendHostile(proxy, body, framing);
  const pingMaxMs = await stopPinger();
  await sleep(AROUND_MS);
  const after = await scrape(proxy);
  const cpuAfter = cpuMs(proxy.pid);
  const end = procStatus(proxy.pid);
  // VmHWM counts from the reset at idle; without the reset, from the start (the brief's definition is
  // max of both, which is what `peakSinceStart` keeps).
  return {
    status: sent.status,
    message: sent.message,
    error: sent.error,
    answerMs: sent.answerMs,
    doneMs: sent.doneMs,
    idleMiB: idle.rss / MiB,
    startupPeakOverIdleMiB: (idle.hwm - idle.rss) / MiB,
    peakOverIdleMiB: (end.hwm - idle.rss) / MiB,
    peakSinceStartOverIdleMiB: (Math.max(end.hwm, idle.hwm) - idle.rss) / MiB,
    peakReset: reset,
    rssAfterOverIdleMiB: (end.rss - idle.rss) / MiB,
    lagMaxMs: after.lagMaxMs,
    lagP99Ms: after.lagP99Ms,
    gcMs: after.gcMs - before.gcMs,
    cpuMs: cpuAfter - cpuBefore,
    pingMaxMs,
  };
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

const format = (value, digits = 1) => (Number.isFinite(value) ? value.toFixed(digits) : 'n/a');

/**
 * Runs every case. All runs of one (body, size) start their proxies together (a start costs about a
 * second of CPU, and idle proxies cost nothing); each proxy is then measured alone and stopped.
 */
async function run({ sizes, rounds, log, only = /(?:)/, framings = ['content-length', 'chunked'] }) {
  if (!fs.existsSync(CLI)) throw new Error(`${CLI} is missing: run npm run build first`);
  const upstream = await startUpstream();
  const live = new Set();
  const rows = [];
  const raw = [];
  const started = Date.now();
  const onSignal = () => {
    for (const child of live) child.kill('SIGKILL');
    upstream.child.kill('SIGKILL');
    process.exit(130);
  };
  process.once('SIGINT', onSignal);
  try {
    const plan = [];
    for (const testCase of CASES) for (const size of sizes) plan.push({ testCase, size, bytes: size * MiB, label: String(size) });
    plan.push({ testCase: OVER_LIMIT, size: 16, bytes: LIMIT + 1, label: '16 + 1 B' });
    for (const { testCase, size, bytes, label } of plan.filter((entry) => only.test(entry.testCase.name))) {
      const body = testCase.make(bytes);
      if (body.length !== bytes) throw new Error(`${testCase.name}: ${body.length} bytes, not ${bytes}`);
      const jobs = [];
      for (let round = 0; round < rounds; round += 1) for (const framing of framings) jobs.push({ framing, round });
      const proxies = await Promise.all(
        jobs.map(async () => {
          const proxy = await startProxy(upstream.url);
          live.add(proxy.child);
          return proxy;
        }),
      );
      for (const proxy of proxies) await warmUp(proxy);
      await sleep(REST_MS);
      const results = Object.fromEntries(framings.map((framing) => [framing, []]));
      for (let i = 0; i < jobs.length; i += 1) {
        const proxy = proxies[i];
        const result = await measure(proxy, body, jobs[i].framing);
        proxy.agent.destroy();
        await stop(proxy.child);
        live.delete(proxy.child);
        results[jobs[i].framing].push(result);
        raw.push({ body: testCase.name, size: label, framing: jobs[i].framing, ...result });
      }
      for (const framing of framings) {
        const runs = results[framing];
        const pick = (field) => runs.map((r) => r[field]);
        const answers = [...new Set(runs.map((r) => (r.error ? `error: ${r.error}` : r.message ? `${r.status}: ${r.message}` : String(r.status))))];
        const row = {
          name: testCase.name,
          shape: testCase.shape,
          size: label,
          framing,
          answer: answers.join(' / '),
          answerMs: median(pick('answerMs')),
          answerMaxMs: Math.max(...pick('answerMs')),
          peakMiB: median(pick('peakOverIdleMiB')),
          peakMaxMiB: Math.max(...pick('peakOverIdleMiB')),
          peakSinceStartMaxMiB: Math.max(...pick('peakSinceStartOverIdleMiB')),
          lagMs: median(pick('lagMaxMs')),
          lagMaxMs: Math.max(...pick('lagMaxMs')),
          pingMs: median(pick('pingMaxMs')),
          pingMaxMs: Math.max(...pick('pingMaxMs')),
          gcMs: median(pick('gcMs')),
          cpuMs: median(pick('cpuMs')),
          idleMiB: median(pick('idleMiB')),
          peakReset: runs.every((r) => r.peakReset),
        };
        rows.push(row);
        log(
          `${row.name} ${label}${label.includes('B') ? '' : ' MiB'} ${framing}: ${row.answer.slice(0, 60)} in ${format(row.answerMs)} ms (max ${format(row.answerMaxMs)}), ` +
            `+${format(row.peakMiB)} MiB (max ${format(row.peakMaxMiB)}), loop delay ${format(row.lagMs)} ms (max ${format(row.lagMaxMs)}), ` +
            `ping ${format(row.pingMs)} ms (max ${format(row.pingMaxMs)}), GC ${format(row.gcMs)} ms, CPU ${format(row.cpuMs, 0)} ms  [${Math.round((Date.now() - started) / 1000)} s]\n`,
        );
      }
    }
  } finally {
    for (const child of live) await stop(child);
    await stop(upstream.child);
    process.off('SIGINT', onSignal);
  }
  return { rows, raw, rounds, sizes: sizes.join(','), seconds: (Date.now() - started) / 1000 };
}

function part({ rows, rounds, sizes, seconds }) {
  const when = new Date().toISOString().slice(0, 10);
  const cpus = os.cpus();
  const load = os.loadavg().map((value) => value.toFixed(1)).join(', ');
  const reset = rows.every((row) => row.peakReset);
  const lines = [
    `Run ${when} on ${cpus.length} vCPUs (${cpus[0]?.model.trim() ?? 'unknown CPU'}), Node ${process.version}, load average ${load} at the end`,
    `(other work shared the machine), in ${Math.round(seconds)} s, with`,
    '',
    '```sh',
    `npm run build && node bench/hostile-proxy.js --sizes ${sizes}`,
    '```',
    '',
    'The built proxy (`node dist/cli.js serve`, default configuration: `limits.max_json_request` 16 MiB, default',
    'JSON limits) in front of a trivial upstream (a Node http server that drains the request and answers',
    '201 `{"id": "...", "name": "x"}`; it stands in for Glance, only the proxy is measured). Every run is a',
    'fresh proxy process: started, warmed up with 5 small `POST /v2/images`, left idle for 0.3 s or more, then',
    'sent one hostile `POST /v2/images`, with `Content-Length` (one write) or chunked (64 KiB writes), on a',
    'new connection. The bodies are those of `bench/hostile-json.js`; the accepted ones are image objects',
    '(a top-level array gets 400 before Glance), and the rewritten one makes the proxy build a new body.',
    '',
    '- *answer*: the proxy\'s status (and message), and the time from the first byte sent to its status line;',
    `- *peak RSS over idle*: \`/proc/PID/status\` VmHWM after the request minus VmRSS when idle${reset ? ' (VmHWM reset to' : ''}`,
    reset
      ? '  the idle RSS by `echo 5 > /proc/PID/clear_refs` at that moment, so it is the request\'s own peak);'
      : '  (VmHWM since the start: `clear_refs` was not writable);',
    '- *loop delay*: the proxy\'s own `monitorEventLoopDelay` (resolution 10 ms: an idle loop reads about',
    '  10 ms), as prom-client exports it: `stx_glance_proxy_proxy_nodejs_eventloop_lag_max_seconds` from',
    '  `/metrics` on the ops listener. prom-client reads the histogram and resets it on every scrape, so the',
    '  script scrapes, waits 50 ms (the monitor needs a tick after a reset before it records anything),',
    '  sends the request, waits for the answer and the end of the body, waits 50 ms and scrapes again: the',
    '  second value is the longest gap between two ticks while the proxy handled the body;',
    '- *ping*: the longest answer to `GET /healthcheck` on the API port, asked back to back (5 ms apart)',
    '  from the bench process during the same time: the stall a concurrent client sees. It can exceed the',
    '  loop delay: a ping that arrives during one long turn may be served only after the body\'s next batch;',
    '- *GC*: `nodejs_gc_duration_seconds_sum` over the request; *CPU*: the proxy\'s utime + stime.',
    '',
    `Each cell is the median of ${rounds} runs, with the largest of them in parentheses. The times are wall`,
    'clock and grow when other processes want the CPU (see the load average above); *CPU* does not.',
    '',
    'Unlike the reader alone (one 64 KiB chunk per turn), a socket hands the proxy up to 32 reads of 64 KiB',
    '(2 MiB) in one event-loop turn (libuv reads a readable stream up to 32 times before it moves on), and',
    'each read runs the body reader synchronously: one turn can read up to 8 of the reader\'s 256 KiB pieces.',
    '',
    '| body | MiB | framing | answer | answer ms | peak RSS over idle MiB | loop delay max ms | ping max ms | GC ms | CPU ms |',
    '|---|---:|---|---|---:|---:|---:|---:|---:|---:|',
  ];
  const both = (value, max) => `${format(value)} (${format(max)})`;
  for (const row of rows) {
    lines.push(
      `| ${row.name}: ${row.shape} | ${row.size} | ${row.framing} | ${row.answer} | ${both(row.answerMs, row.answerMaxMs)} | ${both(row.peakMiB, row.peakMaxMiB)} | ${both(row.lagMs, row.lagMaxMs)} | ${both(row.pingMs, row.pingMaxMs)} | ${format(row.gcMs)} | ${format(row.cpuMs, 0)} |`,
    );
  }
  const worst = (field, filter = () => true) => rows.filter(filter).reduce((best, row) => (row[field] > best[field] ? row : best));
  const describe = (row) => `${row.name}, ${row.size} MiB, ${row.framing}`;
  const fat = worst('peakMaxMiB');
  const slow = worst('lagMaxMs');
  const slowPing = worst('pingMaxMs');
  const overRss = rows.filter((row) => row.peakMaxMiB > 64);
  const overLag = rows.filter((row) => row.lagMaxMs > 100);
  const idle = median(rows.map((row) => row.idleMiB));
  const sinceStart = Math.max(...rows.map((row) => row.peakSinceStartMaxMiB - row.peakMaxMiB));
  const list = (selected, field) => selected.map((row) => `  - ${row.name}, ${row.size} MiB, ${row.framing}: ${format(row[field])}`);
  lines.push(
    '',
    'Reading (against the requirement, the largest of the runs counts).',
    `- Idle RSS of a fresh proxy: ${format(idle)} MiB (median). Peak RSS over idle was at most ${format(fat.peakMaxMiB)} MiB`,
    `  (${describe(fat)}).${reset ? ` Counting VmHWM from the process start instead adds at most ${format(sinceStart)} MiB to any row.` : ''}`,
    ...(overRss.length === 0
      ? ['  Every body stayed within 64 MiB.']
      : [`  Over 64 MiB in ${overRss.length} of ${rows.length} rows:`, ...list(overRss, 'peakMaxMiB')]),
    `- The longest event-loop delay was ${format(slow.lagMaxMs)} ms (${describe(slow)}); the longest ping`,
    `  ${format(slowPing.pingMaxMs)} ms (${describe(slowPing)}).`,
    ...(overLag.length === 0
      ? ['  No body stalled the loop for more than 100 ms.']
      : [`  Over 100 ms in ${overLag.length} of ${rows.length} rows:`, ...list(overLag, 'lagMaxMs')]),
  );
  return lines.join('\n');
}

async function main() {
  if (process.argv[2] === '--upstream') return upstreamMain();
  const args = process.argv.slice(2);
  const sizes = (args.includes('--sizes') ? args[args.indexOf('--sizes') + 1] : '1,4,16').split(',').map(Number);
  const rounds = Number(process.env.HOSTILE_PROXY_ROUNDS ?? 3);
  // For profiling one case (HOSTILE_PROXY_NODE_ARGS='--cpu-prof --cpu-prof-dir=DIR'): --only REGEX,
  // --framing content-length|chunked. A partial run is never written into RESULTS.md.
  const only = args.includes('--only') ? new RegExp(args[args.indexOf('--only') + 1]) : undefined;
  const framings = args.includes('--framing') ? [args[args.indexOf('--framing') + 1]] : undefined;
  const measured = await run({ sizes, rounds, only, framings, log: (text) => process.stderr.write(text) });
  const rawFile = path.join(os.tmpdir(), `hostile-proxy-${process.pid}.json`);
  fs.writeFileSync(rawFile, JSON.stringify(measured.raw, null, 1));
  process.stderr.write(`every run: ${rawFile}\n`);
  const text = part(measured);
  if (args.includes('--no-write') || only || framings) {
    process.stdout.write(`${text}\n`);
    return;
  }
  writePart('proxy', text);
  process.stdout.write(`${text}\n`);
  process.stderr.write('done: the "Through the proxy process" part of the hostile-json section of bench/RESULTS.md\n');
}

if (require.main === module) {
  main().catch((error) => {
    process.stderr.write(`${error.stack ?? error}\n`);
    process.exit(1);
  });
}
