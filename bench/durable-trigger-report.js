'use strict';
// Writes the "Durable raw-cache triggers" section of bench/RESULTS.md from one run of
// bench/durable-trigger.sh: medians over rounds, and ratios between variants of the same run.
// usage: node bench/durable-trigger-report.js OUT_DIR RESULTS_MD
const fs = require('node:fs');
const path = require('node:path');

const [outDir, resultsFile] = process.argv.slice(2);
const read = (name) => fs.readFileSync(path.join(outDir, name), 'utf8');
const machine = JSON.parse(read('machine.json'));
const records = read('results.jsonl').trim().split('\n').map((line) => JSON.parse(line));
const jobs = Object.fromEntries(read('jobs.jsonl').trim().split('\n').map((line) => JSON.parse(line)).map((r) => [r.variant, r.jobs]));

const BEGIN = '<!-- durable-trigger:begin (written by bench/durable-trigger.sh; a new run replaces this section) -->';
const END = '<!-- durable-trigger:end -->';
const VARIANTS = ['off', 'normal', 'full-inline', 'writer'];
const LABEL = {
  off: 'raw cache off (no trigger)',
  normal: 'NORMAL, inline (before)',
  'full-inline': 'FULL, inline',
  writer: '**FULL, writer thread, grouped (shipped)**',
};
const BUDGET = 0.95;

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}
const int = (n) => Math.round(n).toLocaleString('en-US');
const ms = (us) => (us / 1000).toFixed(us < 10_000 ? 2 : 1);
const ratio = (a, b) => (a / b).toFixed(2);
const table = (head, rows) =>
  [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');

const connectionCounts = [...new Set(records.map((r) => r.connections))];
const stats = {};
for (const conns of connectionCounts) {
  stats[conns] = {};
  for (const variant of VARIANTS) {
    const measured = records.filter((r) => r.connections === conns && r.variant === variant && r.round > 0);
    const runs = measured.map((r) => r.wrk);
    const rps = runs.map((w) => w.requests / (w.duration_us / 1e6));
    stats[conns][variant] = {
      rps: median(rps),
      all: rps,
      // Milliseconds of the proxy's CPU (every thread) per answered request.
      cpu: median(measured.map((r) => (1000 * r.cpu_s) / Math.max(1, r.wrk.requests))),
      p50: median(runs.map((w) => w.p50_us)),
      p99: median(runs.map((w) => w.p99_us)),
      // Warm-ups included: every answered request, for the jobs check.
      answered: records.filter((r) => r.connections === conns && r.variant === variant).reduce((n, r) => n + r.wrk.requests, 0),
      failures: runs.reduce((n, w) => n + w.errors + w.non2xx3xx, 0),
    };
  }
}

function sectionFor(conns) {
  const s = stats[conns];
  const absolute = table(
    ['variant', 'req/s', 'req/s per round', 'proxy CPU ms per request', 'p50 ms', 'p99 ms', 'errors + non-2xx'],
    VARIANTS.map((v) => [LABEL[v], int(s[v].rps), s[v].all.map(int).join(', '), s[v].cpu.toFixed(3), ms(s[v].p50), ms(s[v].p99), s[v].failures]),
  );
  const pair = (a, b) => [`${a} / ${b}`, ratio(s[a].rps, s[b].rps), ratio(s[a].cpu, s[b].cpu), ratio(s[a].p50, s[b].p50), ratio(s[a].p99, s[b].p99)];
  const ratios = table(['ratio', 'req/s', 'CPU per request', 'p50', 'p99'], [pair('writer', 'normal'), pair('full-inline', 'normal'), pair('writer', 'full-inline'), pair('normal', 'off'), pair('writer', 'off')]);
  return `### ${conns} connection${conns === 1 ? '' : 's'}\n\n${absolute}\n\n${ratios}`;
}

const main = Math.max(...connectionCounts);
const m = stats[main];
const writerVsNormal = m.writer.rps / m.normal.rps;
const fullVsNormal = m['full-inline'].rps / m.normal.rps;
const totalJobs = (v) => jobs[v];
const reading = [
  `* **Cost of the durable design.** With ${main} connections, the shipped design (FULL, writer thread, grouped commits) ran at ` +
    `${ratio(m.writer.rps, m.normal.rps)} of the throughput of the NORMAL, inline commit it replaces: ` +
    (writerVsNormal >= BUDGET
      ? `within the 5 % budget (${writerVsNormal >= 1 ? 'no loss at all' : `${((1 - writerVsNormal) * 100).toFixed(1)} % less`}).`
      : `**over the 5 % budget** (${((1 - writerVsNormal) * 100).toFixed(1)} % less).`) +
    ` The proxy's CPU per request (every thread): ${m.writer.cpu.toFixed(3)} ms shipped against ${m.normal.cpu.toFixed(3)} ms ` +
    `(ratio ${ratio(m.writer.cpu, m.normal.cpu)}); with the proxy's core saturated, capacity is the inverse of that figure, ` +
    `and it moves far less with the other work on the VM than req/s (see the rounds).`,
  ...connectionCounts
    .filter((c) => c !== main)
    .map(
      (c) =>
        `* **Fewer clients than the proxy can serve** (${c} connection${c === 1 ? '' : 's'}): ${ratio(stats[c].writer.rps, stats[c].normal.rps)} of NORMAL. ` +
        `Each client waits for its answer before it sends the next request, so its rate is bounded by the answer's latency, and ` +
        `an answer now includes an fsync (p50 ${ms(stats[c].normal.p50)} → ${ms(stats[c].writer.p50)} ms). ` +
        (stats[c].writer.rps < 0.9 * m.writer.rps
          ? `The proxy had capacity to spare (${int(m.writer.rps)} req/s with ${main} connections): what is lost is latency per client, not requests the proxy can take.`
          : 'The proxy was near its capacity here too.'),
    ),
  `* **FULL on the event loop**, without the thread: ${ratio(m['full-inline'].rps, m.normal.rps)} of NORMAL` +
    (fullVsNormal < BUDGET ? `, ${((1 - fullVsNormal) * 100).toFixed(0)} % less: every fsync stops every request and stream of the proxy while it lasts.` : '.'),
  `* **Every answered request left its job** (one new image id per request; wrk does not count the requests still in flight ` +
    `when a run ends, so there may be a few more jobs than answers): ${VARIANTS.filter((v) => v !== 'off')
      .map((v) => `${v} ${int(totalJobs(v))} jobs for ${int(connectionCounts.reduce((n, c) => n + stats[c][v].answered, 0))} answers`)
      .join(', ')}.`,
  `* **Noise.** A shared 2-vCPU VM (load average ${machine.load_before} before, ${machine.load_after} after). Compare ratios within this run only.`,
].join('\n');

const section = `${BEGIN}
## Durable raw-cache triggers

Run ${machine.started} to ${machine.finished} on ${machine.nproc} vCPUs (${machine.cpu}), Linux ${machine.kernel}, Node ${machine.node},
commit ${machine.commit}; SQLite files on ${machine.fs}. Command:

\`\`\`sh
bash bench/durable-trigger.sh     # BENCH_ROUNDS=${machine.rounds} BENCH_WRK_SECONDS=${machine.wrk_seconds}
\`\`\`

Intercepted requests that each record a raw-cache trigger: \`PUT /v2/images/<id>/file\` with a one-byte
body and a new image id per request (\`bench/wrk-upload-trigger.lua\`), against the trivial upstream
(\`bench/fast-upstream.js\` answers 204), so the proxy and its trigger are what is measured. Four proxies
side by side: the raw cache off; one SQLite upsert per trigger on the event loop with
\`synchronous=NORMAL\` (the commit before this change) and with \`FULL\` (\`bench/trigger-proxy.js\`); and
\`stx-glance-proxy serve\` as shipped (\`FULL\`, committed by the writer thread, concurrent triggers in one
commit). wrk and the upstream on CPU0, the proxy under test alone on CPU1; medians of ${machine.rounds}
interleaved rounds of ${machine.wrk_seconds} s in rotated order. The answer waits for the commit in every
variant but "off".

${connectionCounts.map(sectionFor).join('\n\n')}

Reading:

${reading}

Raw outputs: bench/out/durable-trigger/.
${END}`;

let text = fs.existsSync(resultsFile) ? fs.readFileSync(resultsFile, 'utf8') : '';
const begin = text.indexOf(BEGIN.slice(0, BEGIN.indexOf(' (')));
const end = text.indexOf(END);
text = begin >= 0 && end > begin ? text.slice(0, begin) + section + text.slice(end + END.length) : `${text.trimEnd()}\n\n${section}\n`;
fs.writeFileSync(resultsFile, text);
process.stdout.write(`${section}\n`);
