'use strict';
// Turns the raw records of one bench/run.sh run into the Markdown report: printed, and written
// to RESULTS_MD. Every figure is the median of the run's rounds; ratios compare paths of the
// same run only.
// usage: node bench/report.js OUT_DIR RESULTS_MD
const fs = require('node:fs');
const path = require('node:path');

const [outDir, resultsFile] = process.argv.slice(2);
const read = (name) => fs.readFileSync(path.join(outDir, name), 'utf8');
const machine = JSON.parse(read('machine.json'));
const records = read('results.jsonl').trim().split('\n').map((line) => JSON.parse(line));

const MiB = 1 << 20;
// Memory budget: how far the peak may rise above the idle process (the runtime alone takes 55 to
// 75 MiB depending on the Node release); holding either 2 GiB body would take 2 GiB.
const RSS_GROWTH_LIMIT_MIB = 128;
const TARGETS = ['direct', 'nginx', 'proxy'];
// Streams are also measured through bench/bare-relay.js, the least a Node relay does.
const DATA_TARGETS = ['direct', 'nginx', 'bare', 'proxy'];
const LABEL = { direct: 'direct', nginx: `nginx ${machine.nginx}`, bare: 'bare Node relay', proxy: '**stx-glance-proxy**' };
const DATA_OPS = [
  ['upload-chunked', 'upload, chunked'],
  ['upload-length', 'upload, Content-Length'],
  ['download', 'download'],
];

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

const int = (n) => Math.round(n).toLocaleString('en-US');
const ms = (us) => (us / 1000).toFixed(us < 10_000 ? 2 : 1);
const ratio = (a, b) => (a / b).toFixed(2);
const pct = (a, b) => `${Math.round((100 * a) / b)} %`;
const table = (head, rows) =>
  [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');

/** Median req/s, p50 and p99 per path of one wrk section, with the spread of req/s over rounds. */
function getStats(section) {
  const stats = {};
  for (const target of TARGETS) {
    const runs = records.filter((r) => r.kind === 'wrk' && r.section === section && r.target === target).map((r) => r.wrk);
    const rps = runs.map((w) => w.requests / (w.duration_us / 1e6));
    stats[target] = {
      rps: median(rps),
      min: Math.min(...rps),
      max: Math.max(...rps),
      p50: median(runs.map((w) => w.p50_us)),
      p99: median(runs.map((w) => w.p99_us)),
      failures: runs.reduce((n, w) => n + w.errors + w.non2xx3xx, 0),
      connections: records.find((r) => r.section === section).connections,
    };
  }
  return stats;
}

function getTables(s) {
  const absolute = table(
    ['path', 'req/s', 'req/s, rounds min–max', 'p50 ms', 'p99 ms', 'errors + non-2xx'],
    TARGETS.map((t) => [LABEL[t], int(s[t].rps), `${int(s[t].min)}–${int(s[t].max)}`, ms(s[t].p50), ms(s[t].p99), s[t].failures]),
  );
  const pair = (a, b, name) => [name, ratio(s[a].rps, s[b].rps), ratio(s[a].p50, s[b].p50), ratio(s[a].p99, s[b].p99)];
  const ratios = table(
    ['ratio', 'req/s', 'p50', 'p99'],
    [pair('proxy', 'direct', 'proxy / direct'), pair('proxy', 'nginx', 'proxy / nginx'), pair('nginx', 'direct', 'nginx / direct')],
  );
  return `${absolute}\n\n${ratios}`;
}

/** Median MiB/s per path and operation of one transfer section. */
function dataStats(section) {
  const stats = {};
  for (const target of DATA_TARGETS) {
    stats[target] = {};
    for (const [op] of DATA_OPS) {
      const speeds = records
        .filter((r) => r.kind === 'transfer' && r.section === section && r.target === target && r.op === op)
        .map((r) => r.bytes_per_s / MiB);
      stats[target][op] = { mibs: median(speeds), min: Math.min(...speeds), max: Math.max(...speeds) };
    }
  }
  return stats;
}

function dataTables(s) {
  const absolute = table(
    ['path', ...DATA_OPS.map(([, name]) => `${name} MiB/s (min–max)`)],
    DATA_TARGETS.map((t) => [LABEL[t], ...DATA_OPS.map(([op]) => `${int(s[t][op].mibs)} (${int(s[t][op].min)}–${int(s[t][op].max)})`)]),
  );
  const pair = (a, b, name) => [name, ...DATA_OPS.map(([op]) => ratio(s[a][op].mibs, s[b][op].mibs))];
  const ratios = table(
    ['ratio', ...DATA_OPS.map(([, name]) => name)],
    [pair('proxy', 'direct', 'proxy / direct'), pair('proxy', 'nginx', 'proxy / nginx'), pair('proxy', 'bare', 'proxy / bare relay'), pair('bare', 'direct', 'bare relay / direct'), pair('nginx', 'direct', 'nginx / direct')],
  );
  return `${absolute}\n\n${ratios}`;
}

const rss = Object.fromEntries(records.filter((r) => r.kind === 'rss').map((r) => [r.phase, r]));
const rssMiB = (phase) => rss[phase].peak_kib / 1024;
const bigTransfer = (op) => records.find((r) => r.kind === 'transfer' && r.section === 'rss' && r.op === op);
const rssPeak = Math.max(rssMiB('upload'), rssMiB('download'), rssMiB('hwm'));
const rssGrowth = rssPeak - rssMiB('idle');

const getGlance = getStats('get-glance');
const getFast = getStats('get-fast');
const dataGlance = dataStats('data-glance');
const dataFast = dataStats('data-fast');
const glanceSize = records.find((r) => r.section === 'data-glance').bytes / MiB;
const fastUpload = records.find((r) => r.section === 'data-fast' && r.op !== 'download').bytes / MiB;
const fastDownload = records.find((r) => r.section === 'data-fast' && r.op === 'download').bytes / MiB;
const rounds = `${machine.rounds} interleaved rounds`;

/** Plain sentences derived from this run's figures. */
function reading() {
  const lines = [];
  const g = getGlance;
  lines.push(
    `* **Metadata GET against real Glance.** Through the proxy, \`GET /v2/images/{id}\` ran at ${pct(g.proxy.rps, g.direct.rps)} of Glance's own rate ` +
      `(p50 ${ms(g.direct.p50)} → ${ms(g.proxy.p50)} ms, p99 ${ms(g.direct.p99)} → ${ms(g.proxy.p99)} ms); nginx ran at ${pct(g.nginx.rps, g.direct.rps)}. ` +
      (g.proxy.rps >= 0.85 * g.direct.rps
        ? 'Glance (one eventlet process) is the bottleneck, so the proxy, JSON enrichment included, costs little a user would notice.'
        : `The proxy takes a visible share on top of Glance here: about ${ms(g.proxy.p50 - g.direct.p50)} ms at p50 per request.`),
  );
  const f = getFast;
  lines.push(
    `* **Metadata GET against the trivial upstream** (the proxy's own cost). Pinned to one core with ${f.proxy.connections} connections, the proxy served ` +
      `${int(f.proxy.rps)} req/s, ${pct(f.proxy.rps, f.nginx.rps)} of nginx's rate, adding ${ms(f.proxy.p50 - f.direct.p50)} ms at p50 ` +
      `(nginx: ${ms(f.nginx.p50 - f.direct.p50)} ms); with that core saturated, a request costs about ${(1000 / f.proxy.rps).toFixed(2)} ms of CPU ` +
      `(nginx: ${(1000 / f.nginx.rps).toFixed(2)} ms). This is the proxy's most expensive route (two HTTP hops, the buffered JSON answer, enrichment). ` +
      `Even so, one proxy core handles about ${Math.round(f.proxy.rps / g.direct.rps)} times what one Glance process answered in section 1.`,
  );
  const dg = dataGlance;
  const df = dataFast;
  const uploadsGlanceBound = ['upload-chunked', 'upload-length'].every((op) => dg.proxy[op].mibs >= 0.75 * dg.direct[op].mibs);
  lines.push(
    `* **Image data against Glance.** Uploads ran at ${int(dg.direct['upload-chunked'].mibs)}/${int(dg.direct['upload-length'].mibs)} MiB/s direct ` +
      `(chunked/Content-Length), ${int(dg.nginx['upload-chunked'].mibs)}/${int(dg.nginx['upload-length'].mibs)} through nginx and ` +
      `${int(dg.proxy['upload-chunked'].mibs)}/${int(dg.proxy['upload-length'].mibs)} through the proxy` +
      (uploadsGlanceBound ? ': Glance (hashing and writing the data) sets the pace, not the proxy. ' : '. ') +
      `Downloads are where Glance is fast: ${int(dg.direct.download.mibs)} MiB/s direct, ${int(dg.nginx.download.mibs)} through nginx, ` +
      `${int(dg.proxy.download.mibs)} through the proxy (${pct(dg.proxy.download.mibs, dg.nginx.download.mibs)} of nginx).` +
      (dg.proxy.download.mibs < 0.75 * dg.nginx.download.mibs && df.proxy.download.mibs >= 0.9 * df.nginx.download.mibs
        ? " The proxy keeps up with nginx on the trivial upstream's stream (below) but not on Glance's, so this loss is not the cost " +
          'of copying bytes; bench/README.md has what a closer look found.'
        : ''),
  );
  lines.push(
    `* **Image data against the trivial upstream.** The proxy relayed ${int(df.proxy.download.mibs)} MiB/s down (nginx ${int(df.nginx.download.mibs)}) ` +
      `and ${int(df.proxy['upload-chunked'].mibs)}/${int(df.proxy['upload-length'].mibs)} MiB/s up, chunked/Content-Length ` +
      `(nginx ${int(df.nginx['upload-chunked'].mibs)}/${int(df.nginx['upload-length'].mibs)}). Either proxy costs a second copy over loopback, ` +
      'so both fall well short of direct; the stream figures swing more between rounds than the GET figures (see min–max).',
  );
  lines.push(
    `* **Memory.** The proxy's resident set peaked at ${rssPeak.toFixed(0)} MiB over a 2 GiB upload and a 2 GiB download ` +
      `(idle after start: ${rssMiB('idle').toFixed(0)} MiB), a rise of ${rssGrowth.toFixed(0)} MiB: ${rssGrowth < RSS_GROWTH_LIMIT_MIB ? 'under' : '**over**'} the ${RSS_GROWTH_LIMIT_MIB} MiB budget, ` +
      `so the bodies ${rssGrowth < RSS_GROWTH_LIMIT_MIB ? 'are streamed, not buffered, in both directions' : 'are (at least partly) buffered in the proxy'}.`,
  );
  lines.push(
    `* **Noise.** This is a shared 2-vCPU VM (load average ${machine.load_before} before the run, ${machine.load_after} after it: ` +
      'other work was running and was not pinned away from CPU1). Runs differ by up to about 30 %, and single rounds by more, as the min–max ' +
      'columns show. Compare ratios within one run; do not compare absolute figures across runs or machines.',
  );
  return lines.join('\n');
}

const report = `# Benchmark results

Run with \`npm run bench\` (\`bench/run.sh\`) from ${machine.started} to ${machine.finished} (UTC).

| machine | |
|---|---|
| CPUs (nproc) | ${machine.nproc} × ${machine.cpu} |
| memory | ${machine.memory_gib} GiB |
| kernel | ${machine.kernel} |
| node | ${machine.node} |
| nginx / wrk / curl | ${machine.nginx} / ${machine.wrk} / ${machine.curl} |
| Glance | Debian glance-api ${machine.glance}, one process, sqlite, file store |
| load average (1, 5, 15 min) | ${machine.load_before} before, ${machine.load_after} after |
| commit | ${machine.commit} (plus the working tree) |

Paths compared, all on 127.0.0.1: **direct** to the upstream, through **nginx** as a plain reverse proxy
(\`bench/nginx.conf.in\`: keep-alive upstream, no request or response buffering, one worker), and through
**stx-glance-proxy** (\`node dist/cli.js serve\`, default settings, info logging to a file).
wrk, curl, Glance and the trivial upstream behind the proxies run on CPU0; the proxy or nginx runs alone
on CPU1, and so does a second copy of the trivial upstream for its "direct" figures. Each figure is the median of
${rounds} (each round visits every path once, in a rotated order). Raw outputs are in \`bench/out/\`.

## 1. \`GET /v2/images/{id}\` on real Glance

wrk \`-t1 -c${getGlance.direct.connections} -d${machine.wrk_seconds}s --latency\`, ${rounds}. The image has 7 extra properties and 2 tags; the
proxy enriches this answer (it goes through its rewriting path).

${getTables(getGlance)}

## 2. Image data on real Glance

curl, ${glanceSize} MiB, \`PUT /v2/images/{id}/file\` (\`application/octet-stream\`, a new image for each upload,
its stored size checked) and \`GET /v2/images/{id}/file\` to \`/dev/null\`; ${rounds}.

${dataTables(dataGlance)}

## 3. Proxy overhead against a trivial upstream

\`bench/fast-upstream.js\`: a Node server answering a fixed ${Math.round(fs.statSync(path.join(outDir, 'show-fast-direct.json')).size / 100) / 10} KB image document, draining uploads and
streaming zeros, so the proxies' own cost shows. GET: wrk \`-t1 -c${getFast.direct.connections} -d${machine.wrk_seconds}s\`, ${rounds}.

${getTables(getFast)}

Streams: ${fastUpload} MiB up, ${fastDownload} MiB down, ${rounds}.

${dataTables(dataFast)}

## 4. Proxy memory during 2 GiB transfers

A freshly started proxy in front of real Glance; VmRSS sampled every 50 ms from \`/proc/PID/status\`, and VmHWM
(the kernel's peak) at the end. The download is held to ${machine.slow_client_mibs} MiB/s by the client so that the client, not
Glance, is the slow side and backpressure is what keeps the proxy small.

${table(
  ['phase', 'peak RSS MiB', 'throughput MiB/s'],
  [
    ['idle, after start', rssMiB('idle').toFixed(1), ''],
    ['2 GiB upload, chunked', rssMiB('upload').toFixed(1), int(bigTransfer('upload-chunked').bytes_per_s / MiB)],
    [`2 GiB download, client at ${machine.slow_client_mibs} MiB/s`, rssMiB('download').toFixed(1), int(bigTransfer('download').bytes_per_s / MiB)],
    ['VmHWM, whole test', rssMiB('hwm').toFixed(1), ''],
  ],
)}

Budget: a peak at most ${RSS_GROWTH_LIMIT_MIB} MiB above the idle process. Result: **${rssGrowth < RSS_GROWTH_LIMIT_MIB ? 'within budget' : 'OVER BUDGET'}** (peak ${rssPeak.toFixed(1)} MiB, ${rssGrowth.toFixed(1)} MiB above idle).

## Reading

${reading()}
`;

// Every section another benchmark writes (between its top-level `<!-- NAME:begin` and
// `<!-- NAME:end -->` markers) stays as it was, in its order: this script owns only sections 1-4.
const previous = fs.existsSync(resultsFile) ? fs.readFileSync(resultsFile, 'utf8') : '';
const kept = [];
for (const begin of previous.matchAll(/<!-- ([a-z0-9-]+):begin/g)) {
  const end = `<!-- ${begin[1]}:end -->`;
  const stop = previous.indexOf(end, begin.index);
  // Nested markers (hostile-json:proxy inside hostile-json) come with their enclosing section.
  if (stop < 0 || kept.some((k) => k.start <= begin.index && begin.index < k.stop)) continue;
  kept.push({ start: begin.index, stop: stop + end.length });
}
const keptText = kept.map((k) => previous.slice(k.start, k.stop));
fs.writeFileSync(resultsFile, keptText.length > 0 ? `${report.trimEnd()}\n\n${keptText.join('\n\n')}\n` : report);
process.stdout.write(report);
