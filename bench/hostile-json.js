#!/usr/bin/env node
// Hostile JSON request bodies against the proxy's body reader (src/images/glance-json.ts), with the
// default limits: time per call, peak RSS over idle and event-loop delay, for bodies of 1, 4 and
// 16 MiB. Each case runs in a fresh child process (node --expose-gc), which reads the body from a file
// (the Buffer counts in its RSS) and reads it two ways:
//   sync         readGlanceJsonBody(body) in one call
//   incremental  GlanceJsonBodyReader.push() of 64 KiB chunks, one per event-loop turn (as from a socket
//                that trickles; a fast one hands the proxy up to 32 such chunks in one turn, which is what
//                bench/hostile-proxy.js measures through the proxy process)
// Writes "The body reader alone" part of the "Hostile JSON request bodies" section of bench/RESULTS.md
// (replacing the one a previous run wrote; the part bench/hostile-proxy.js writes, the same bodies through
// the proxy process, is kept). Needs `npm run build` first.
//
// usage: node bench/hostile-json.js [--sizes 1,4,16] [--no-write]
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { execFileSync } = require('node:child_process');

const MiB = 1024 * 1024;
const CHUNK = 64 * 1024;
/** The reader's piece size for the incremental rows (its default when unset). */
const PIECE_BYTES = process.env.HOSTILE_JSON_PIECE_BYTES ? Number(process.env.HOSTILE_JSON_PIECE_BYTES) : undefined;
const READER = path.join(__dirname, '..', 'dist', 'images', 'glance-json.js');
const RESULTS = path.join(__dirname, 'RESULTS.md');
const BEGIN = '<!-- hostile-json:begin (written by bench/hostile-json.js; a new run replaces this section) -->';
const END = '<!-- hostile-json:end -->';
/** The section's two parts, each written by its own script; a run replaces its part and keeps the other. */
const PARTS = {
  proxy: {
    heading: '### Through the proxy process',
    begin: '<!-- hostile-json:proxy:begin (written by bench/hostile-proxy.js) -->',
    end: '<!-- hostile-json:proxy:end -->',
    missing: 'Not measured yet: `npm run build && node bench/hostile-proxy.js`.',
  },
  reader: {
    heading: '### The body reader alone',
    begin: '<!-- hostile-json:reader:begin (written by bench/hostile-json.js) -->',
    end: '<!-- hostile-json:reader:end -->',
    missing: 'Not measured yet: `npm run build && node bench/hostile-json.js`.',
  },
};

/** Fills `size` bytes: head, then `unit` repeated, then tail (the last unit cut to fit). */
function repeated(size, head, unit, tail) {
  const body = Buffer.alloc(size);
  const written = body.write(head);
  body.fill(unit, written, size - tail.length);
  body.write(tail, size - tail.length);
  return body;
}

function membersBody(size) {
  const parts = ['{'];
  let length = 1;
  for (let i = 0; length < size - 16; i += 1) {
    const member = `"k${String(i).padStart(7, '0')}":0,`;
    parts.push(member);
    length += member.length;
  }
  parts.push('"z":0}');
  return Buffer.from(parts.join('').padEnd(size, ' '));
}

function stringsBody(size, first) {
  // Strings of 65535 UTF-16 units (the default limit), as many as fit: accepted by the reader and by Glance.
  const string = `"${first}${'a'.repeat(65535 - first.length)}"`;
  const parts = ['['];
  let length = 1;
  while (length + Buffer.byteLength(string) + 1 < size) {
    parts.push(length === 1 ? string : `,${string}`);
    length += Buffer.byteLength(string) + (length === 1 ? 0 : 1);
  }
  return Buffer.from(`${parts.join('')}]`.padEnd(size, ' '));
}

const CASES = [
  { name: 'empty arrays', shape: '`[[],[],...]`', make: (size) => repeated(size, '[', '[],', '[]]') },
  { name: 'empty objects', shape: '`{"a":{},"a":{},...}`', make: (size) => repeated(size, '{', '"a":{},', '"a":{}}') },
  { name: 'nesting past the limit', shape: '`[[[[...` to the end', make: (size) => Buffer.alloc(size, '[') },
  {
    name: 'nesting at the limit',
    shape: '`[` + `[[...]],` 31 deep, repeated',
    make: (size) => repeated(size, '[', `${'['.repeat(31)}${']'.repeat(31)},`, '[]]'),
  },
  { name: 'one huge string', shape: '`"aaa..."`', make: (size) => repeated(size, '"', 'a', '"') },
  { name: 'many members', shape: '`{"k0000000":0,...}`', make: membersBody },
  { name: 'accepted: long strings', shape: '`["a…a",...]` 65535 units each', make: (size) => stringsBody(size, '') },
  { name: 'accepted: long strings, non-Latin-1', shape: 'the same, each starting with `Ā`', make: (size) => stringsBody(size, 'Ā') },
  { name: 'accepted: whitespace', shape: '`{}` then spaces', make: (size) => repeated(size, '{}', ' ', ' ') },
  { name: 'accepted: one long float', shape: '`0.111...1`', make: (size) => repeated(size, '0.', '1', '1') },
];

/** Reads `body` once in `mode`; returns the outcome, the total time and the longest synchronous step. */
async function readOnce(reader, body, mode) {
  const started = process.hrtime.bigint();
  let result;
  let longestStep = 0n;
  if (mode === 'sync') {
    result = reader.readGlanceJsonBody(body, reader.DEFAULT_JSON_LIMITS);
    longestStep = process.hrtime.bigint() - started;
  } else {
    const incremental = new reader.GlanceJsonBodyReader(reader.DEFAULT_JSON_LIMITS, PIECE_BYTES);
    for (let offset = 0; offset < body.length && result === undefined; offset += CHUNK) {
      await new Promise((resolve) => setImmediate(resolve));
      const stepStart = process.hrtime.bigint();
      result = incremental.push(body.subarray(offset, offset + CHUNK));
      const step = process.hrtime.bigint() - stepStart;
      if (step > longestStep) longestStep = step;
    }
    if (result === undefined) {
      const stepStart = process.hrtime.bigint();
      result = incremental.end();
      const step = process.hrtime.bigint() - stepStart;
      if (step > longestStep) longestStep = step;
    }
  }
  return { result, ms: Number(process.hrtime.bigint() - started) / 1e6, longestStepMs: Number(longestStep) / 1e6 };
}

async function child(file, mode) {
  const reader = require(READER);
  const { monitorEventLoopDelay } = require('node:perf_hooks');
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  // Warm the reader up, as a proxy that has served some requests is, so that compiling it is not counted.
  const sample = Buffer.from(`[${'{"name": "cirros\\u00e9", "tags": ["a", "b"], "min_ram": 512, "size": -1.5e3, "x": [true, null, NaN]},'.repeat(200)}{}]`);
  for (let i = 0; i < 300; i += 1) reader.readGlanceJsonBody(sample, reader.DEFAULT_JSON_LIMITS);
  global.gc();
  await sleep(50);
  const idle = process.memoryUsage().rss;
  const body = fs.readFileSync(file);

  const histogram = monitorEventLoopDelay({ resolution: 1 });
  histogram.enable();
  // The monitor records the time between two of its ticks: give it a first tick before the read (reset()
  // would forget it, and with it a read that blocks until the next tick).
  await sleep(20);
  const cold = await readOnce(reader, body, mode);
  // ...and one after the last step.
  await sleep(20);
  histogram.disable();
  const peak = process.resourceUsage().maxRSS * 1024;

  // The proxy is a long-running process: the same read again, once its heap has grown.
  const warm = [];
  for (let i = 0; i < 5; i += 1) warm.push(await readOnce(reader, body, mode));
  const { result } = cold;
  const outcome = result.ok ? 'accepted' : result.problem === 'limit' ? `${result.status}: ${result.message}` : result.message;
  process.stdout.write(
    JSON.stringify({
      outcome,
      ms: cold.ms,
      longestStepMs: cold.longestStepMs,
      warmMs: median(warm.map((run) => run.ms)),
      warmLongestStepMs: median(warm.map((run) => run.longestStepMs)),
      peakOverIdleMiB: (peak - idle) / MiB,
      delayMaxMs: histogram.max / 1e6,
      delayP99Ms: histogram.percentile(99) / 1e6,
    }),
  );
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function format(value, digits = 1) {
  return value.toFixed(digits);
}

function parent() {
  const args = process.argv.slice(2);
  const sizesArg = args.includes('--sizes') ? args[args.indexOf('--sizes') + 1] : '1,4,16';
  const sizes = sizesArg.split(',').map(Number);
  const rounds = Number(process.env.HOSTILE_JSON_ROUNDS ?? 3);
  if (!fs.existsSync(READER)) throw new Error(`${READER} is missing: run npm run build first`);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hostile-json-'));
  const rows = [];
  try {
    for (const testCase of CASES) {
      for (const size of sizes) {
        const file = path.join(dir, 'body');
        fs.writeFileSync(file, testCase.make(size * MiB));
        for (const mode of ['sync', 'incremental']) {
          const runs = [];
          for (let round = 0; round < rounds; round += 1) {
            const output = execFileSync(process.execPath, ['--expose-gc', __filename, '--child', file, mode], { encoding: 'utf8' });
            runs.push(JSON.parse(output));
          }
          const row = {
            name: testCase.name,
            shape: testCase.shape,
            size,
            mode,
            outcome: runs[0].outcome,
            ms: median(runs.map((run) => run.ms)),
            longestStepMs: median(runs.map((run) => run.longestStepMs)),
            warmMs: median(runs.map((run) => run.warmMs)),
            warmLongestStepMs: median(runs.map((run) => run.warmLongestStepMs)),
            peakOverIdleMiB: Math.max(...runs.map((run) => run.peakOverIdleMiB)),
            delayMaxMs: median(runs.map((run) => run.delayMaxMs)),
            delayP99Ms: median(runs.map((run) => run.delayP99Ms)),
          };
          rows.push(row);
          process.stderr.write(
            `${row.name} ${size} MiB ${mode}: ${format(row.ms)} ms (warm ${format(row.warmMs)}), step ${format(row.longestStepMs)} ms (warm ${format(row.warmLongestStepMs)}), +${format(row.peakOverIdleMiB)} MiB, delay max ${format(row.delayMaxMs)} ms -> ${row.outcome}\n`,
          );
        }
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return { rows, rounds, sizes: sizesArg };
}

function section({ rows, rounds, sizes }) {
  const when = new Date().toISOString().slice(0, 10);
  const cpus = os.cpus();
  const lines = [
    `Run ${when} on ${cpus.length} vCPUs (${cpus[0]?.model.trim() ?? 'unknown CPU'}), Node ${process.version}, with`,
    '',
    '```sh',
    `npm run build && node bench/hostile-json.js --sizes ${sizes}`,
    '```',
    '',
    'The body reader (`src/images/glance-json.ts`) with the default limits (depth 32, 4096 members,',
    '16384 elements, 65536 values, strings of 65535 units). Each row is a fresh `node --expose-gc`',
    'process that reads the body from a file, then parses it: **sync** is one `readGlanceJsonBody(body)`',
    'call; **incremental** pushes 64 KiB chunks into a `GlanceJsonBodyReader`, one per event-loop turn, as',
    'a socket delivers them (the reader works in 256 KiB pieces). *cold* is that first read in the fresh',
    'process, *warm* the median of 5 more reads in the same process (a long-running proxy is warm);',
    '*step* is the longest single synchronous call; *peak RSS* is `resourceUsage().maxRSS` minus the RSS',
    'before the body was read (the body Buffer included); *delay* is `monitorEventLoopDelay` (max, p99)',
    `during the cold read. Times are medians of ${rounds} processes, peak RSS the largest of them.`,
    '',
    '| body | MiB | mode | outcome | cold ms | cold step ms | warm ms | warm step ms | peak RSS over idle MiB | delay max ms | delay p99 ms |',
    '|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const row of rows) {
    lines.push(
      `| ${row.name}: ${row.shape} | ${row.size} | ${row.mode} | ${row.outcome} | ${format(row.ms)} | ${format(row.longestStepMs)} | ${format(row.warmMs)} | ${format(row.warmLongestStepMs)} | ${format(row.peakOverIdleMiB)} | ${format(row.delayMaxMs)} | ${format(row.delayP99Ms)} |`,
    );
  }
  const worst = (filter, field) => rows.filter(filter).reduce((best, row) => (row[field] > best[field] ? row : best));
  const sync = (row) => row.mode === 'sync';
  const incremental = (row) => row.mode === 'incremental';
  const slowSync = worst(sync, 'ms');
  const slowStep = worst(incremental, 'longestStepMs');
  const slowWarmStep = worst(incremental, 'warmLongestStepMs');
  const fat = worst(() => true, 'peakOverIdleMiB');
  const describe = (row) => `${row.name}, ${row.size} MiB`;
  lines.push(
    '',
    'Reading.',
    `- One synchronous call took up to ${format(slowSync.ms)} ms cold (${describe(slowSync)}). Read as it`,
    `  arrives, no step took more than ${format(slowStep.longestStepMs)} ms cold (${describe(slowStep)}) and`,
    `  ${format(slowWarmStep.warmLongestStepMs)} ms warm (${describe(slowWarmStep)}).`,
    `- Peak RSS over idle was at most ${format(fat.peakOverIdleMiB)} MiB (${describe(fat)}, ${fat.mode}).`,
  );
  return lines.join('\n');
}

/**
 * Replaces `part` ('reader' or 'proxy') of the hostile-json section of bench/RESULTS.md with `text`, and
 * keeps the other part as the last run wrote it. Nothing outside the section's markers changes.
 */
function writePart(part, text) {
  const previous = fs.readFileSync(RESULTS, 'utf8');
  const begin = previous.indexOf(BEGIN);
  const end = previous.indexOf(END);
  const found = begin >= 0 && end > begin;
  const inside = found ? previous.slice(begin + BEGIN.length, end) : '';
  const kept = {};
  for (const [name, markers] of Object.entries(PARTS)) {
    const from = inside.indexOf(markers.begin);
    const to = inside.indexOf(markers.end);
    if (from >= 0 && to > from) kept[name] = inside.slice(from + markers.begin.length, to).trim();
  }
  // A section written before it had parts is the reader's table alone.
  if (found && kept.proxy === undefined && kept.reader === undefined && inside.includes('| body |')) {
    kept.reader = inside.replace(/^\s*## Hostile JSON request bodies\s*/, '').trim();
  }
  kept[part] = text.trim();
  const lines = [
    BEGIN,
    '## Hostile JSON request bodies',
    '',
    'The security requirement: for any JSON request body within `limits.max_json_request` (16 MiB by',
    'default), the proxy\'s peak RSS over idle stays at or below 64 MiB, and no such body stalls its event',
    'loop for more than 100 ms. The bodies are built to cost the most per byte: many tiny containers,',
    'nesting to and past the depth limit, one huge string, many members, long non-Latin-1 strings, and',
    'big bodies within every limit.',
  ];
  for (const [name, markers] of Object.entries(PARTS)) {
    lines.push('', markers.heading, '', markers.begin, kept[name] ?? markers.missing, markers.end);
  }
  lines.push(END);
  const section = lines.join('\n');
  const updated = found ? `${previous.slice(0, begin)}${section}${previous.slice(end + END.length)}` : `${previous.trimEnd()}\n\n${section}\n`;
  fs.writeFileSync(RESULTS, updated);
}

async function main() {
  if (process.argv[2] === '--child') {
    await child(process.argv[3], process.argv[4]);
    return;
  }
  const measured = parent();
  const text = section(measured);
  if (process.argv.includes('--no-write')) {
    process.stdout.write(`${text}\n`);
    return;
  }
  writePart('reader', text);
  process.stderr.write(`done: "The body reader alone" in the hostile-json section of ${path.relative(process.cwd(), RESULTS)}\n`);
}

module.exports = { BODIES: CASES, repeated, writePart };

if (require.main === module) {
  main().catch((error) => {
    process.stderr.write(`${error.stack ?? error}\n`);
    process.exit(1);
  });
}
