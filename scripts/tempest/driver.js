#!/usr/bin/env node
'use strict';
/**
 * Tempest's image API v2 tests, once against Glance directly and once through the proxy, on one
 * real Keystone and one real keystone-mode Glance started by the project's own test harness
 * (compiled by scripts/tempest/run.sh into STX_TEMPEST_HARNESS). Run it through run.sh.
 *
 *   node scripts/tempest/driver.js --out DIR [--concurrency 2] [--regex RE] [--glance extended|plain]
 *                                  [--only direct|proxy] [--run-timeout SECONDS] [--retries N]
 *                                  [--self-test-fail TEXT | --self-test-flaky TEXT]
 *
 * Exit: 0 when every test that passed directly also passed through the proxy, 1 when one did not,
 * 2 when the run itself could not be done (a service did not start, tempest did not run).
 */
const { execFile, spawn } = require('node:child_process');
const { closeSync, copyFileSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } = require('node:fs');
const { join, resolve } = require('node:path');

const HARNESS = process.env.STX_TEMPEST_HARNESS;
const DEFAULT_REGEX = '^tempest\\.api\\.image\\.v2\\.';
const SYSTEM_PYTHON = '/usr/bin/python3';

function parseArgs(argv) {
  const options = { out: undefined, concurrency: 2, regex: DEFAULT_REGEX, glance: 'extended', only: undefined, runTimeout: 600, retries: 2, selfTestFail: undefined, selfTestFlaky: undefined };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) throw new Error(`${arg} needs a value`);
      return argv[++i];
    };
    if (arg === '--out') options.out = resolve(value());
    else if (arg === '--concurrency') options.concurrency = Number(value());
    else if (arg === '--regex') options.regex = value();
    else if (arg === '--glance') options.glance = value();
    else if (arg === '--only') options.only = value();
    else if (arg === '--run-timeout') options.runTimeout = Number(value());
    else if (arg === '--retries') options.retries = Number(value());
    else if (arg === '--self-test-fail') options.selfTestFail = value();
    else if (arg === '--self-test-flaky') options.selfTestFlaky = value();
    else throw new Error(`unknown argument ${arg}`);
  }
  if (options.out === undefined) throw new Error('--out DIR is required');
  if (!['extended', 'plain'].includes(options.glance)) throw new Error('--glance is extended or plain');
  if (options.only !== undefined && !['direct', 'proxy'].includes(options.only)) throw new Error('--only is direct or proxy');
  if (!(options.concurrency >= 1)) throw new Error('--concurrency must be at least 1');
  if (!(options.retries >= 0)) throw new Error('--retries must be 0 or more');
  return options;
}

function log(message) {
  process.stdout.write(`[tempest ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
}

/** Debian's Python tools, without the caller's Python or cloud settings (pyenv shims, OS_*). */
function toolEnv() {
  const env = { ...process.env };
  for (const name of Object.keys(env)) {
    if (name.startsWith('OS_') || name.startsWith('PYENV') || name === 'PYTHONHOME' || name === 'PYTHONPATH' || name === 'VIRTUAL_ENV') delete env[name];
  }
  env.PATH = '/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin';
  env.PYTHON = SYSTEM_PYTHON;
  env.PYTHONDONTWRITEBYTECODE = '1';
  return env;
}

function run(command, args, options = {}) {
  return new Promise((resolvePromise, reject) => {
    execFile(command, args, { env: toolEnv(), maxBuffer: 256 * 1024 * 1024, timeout: 300_000, ...options }, (error, stdout, stderr) => {
      if (error) {
        error.message += `\n${stdout}${stderr}`.trimEnd();
        reject(error);
      } else resolvePromise({ stdout, stderr });
    });
  });
}

/** Settings added to the project's keystone-mode Glance so that fewer tempest tests skip. */
function glanceExtras(dir) {
  mkdirSync(join(dir, 'fs2'), { recursive: true });
  mkdirSync(join(dir, 'image-cache'), { recursive: true });
  return [
    '# Added by scripts/tempest: a second file store (multi-store import and copy-image tests) and',
    '# the image cache API (/v2/cache, ImageCachingTest). Everything else is the project\'s Glance.',
    '[DEFAULT]',
    'enabled_backends = fs:file,fs2:file',
    `image_cache_dir = ${join(dir, 'image-cache')}`,
    '',
    '[fs2]',
    `filesystem_store_datadir = ${join(dir, 'fs2')}/`,
  ].join('\n');
}

function tempestConf({ workspace, keystone, imageCaching, buildTimeout }) {
  return `# Written by scripts/tempest/driver.js for one run against a throwaway Keystone and Glance.
[DEFAULT]
debug = True
# Every worker appends here (the workspace's logging.conf, which truncates on open, is removed).
log_file = ${join(workspace, 'tempest.log')}
use_stderr = False

[oslo_concurrency]
lock_path = ${join(workspace, 'tempest_lock')}

[auth]
# Each test class gets its own project and users, made with the bootstrap admin.
use_dynamic_credentials = True
create_isolated_networks = False
admin_username = ${keystone.admin.name}
admin_password = ${keystone.admin.password}
admin_project_name = ${keystone.admin.project.name}
admin_domain_name = Default
default_credentials_domain_name = Default

[identity]
uri_v3 = ${keystone.authUrl}
auth_version = v3
region = ${keystone.region}
v3_endpoint_type = public
admin_role = admin

[identity-feature-enabled]
api_v2 = False
api_v2_admin = False
api_v3 = True

[image]
catalog_type = image
region = ${keystone.region}
# The catalog's public image endpoint: Glance itself for the direct run, the proxy for the other.
endpoint_type = public
build_timeout = ${buildTimeout}
build_interval = 1
image_caching_enabled = ${imageCaching ? 'True' : 'False'}
# tempest's defaults, written out: all are in Glance 25's [image_format] defaults. The first of each
# is what most tests create and upload (random bytes, which Glance stores without inspecting).
container_formats = ami,ari,aki,bare,ovf,ova
disk_formats = ami,ari,aki,vhd,vmdk,raw,qcow2,vdi,iso,vhdx
# web-download is not enabled in this Glance; nothing may be fetched from the network anyway.
http_image = http://127.0.0.1:9/unused.img

[image-feature-enabled]
api_v2 = True
api_v1 = False
# glance-direct and copy-image are enabled (config/dev-glance/glance-api.conf), web-download is not.
import_image = True
# Glance 25 refuses os_glance_* properties from users.
os_glance_reserved = True
# Needs an http store, which this Glance does not have.
manage_locations = False

[service_available]
glance = True
nova = False
cinder = False
neutron = False
swift = False
horizon = False

[validation]
run_validation = False
`;
}

/**
 * The metadata definitions Debian ships in /etc/glance/metadefs, as an installed Glance has them
 * (glance-manage db_load_metadefs): the metadefs tests need at least one resource type.
 */
async function loadMetadefs(glance, extraConf) {
  const { DEV_GLANCE_ETC } = require(join(HARNESS, 'src', 'dev', 'local-glance.js'));
  const configArgs = [
    '--config-file', join(DEV_GLANCE_ETC, 'glance-api.conf'),
    '--config-file', join(glance.workDir, 'glance-runtime.conf'),
    '--config-file', extraConf,
    '--config-dir', join(glance.workDir, 'conf.d'),
  ];
  await run('glance-manage', [...configArgs, 'db_load_metadefs', '/etc/glance/metadefs']);
}

/** tempest run, in its own process group so that it can be stopped with its workers. */
let currentTempest;
function runTempest(workspace, args, outputFile, timeoutSeconds) {
  return new Promise((resolvePromise) => {
    const fd = openSync(outputFile, 'a');
    const child = spawn('tempest', args, { cwd: workspace, env: toolEnv(), stdio: ['ignore', fd, fd], detached: true });
    closeSync(fd);
    currentTempest = child;
    const timer = setTimeout(() => {
      log(`tempest still running after ${timeoutSeconds} s: stopping it`);
      killGroup(child.pid, 'SIGTERM');
      setTimeout(() => killGroup(child.pid, 'SIGKILL'), 10_000).unref();
    }, timeoutSeconds * 1000);
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      killGroup(child.pid, 'SIGKILL');
      currentTempest = undefined;
      resolvePromise({ code, signal });
    });
  });
}

function killGroup(pid, signal) {
  try {
    process.kill(-pid, signal);
  } catch {
    // gone already
  }
}

function classOf(testId) {
  const bare = testId.split('[')[0];
  return bare.slice(0, bare.lastIndexOf('.'));
}

/** Every listed test with its outcome; a test that did not run takes its class's setUpClass outcome. */
function outcomes(listed, records) {
  const byId = new Map(records.map((r) => [r.id, r]));
  const classLevel = new Map();
  for (const r of records) {
    const match = /^setUpClass \((.+)\)$/.exec(r.id);
    if (match) classLevel.set(match[1], r);
  }
  const result = new Map();
  for (const id of listed) {
    const own = byId.get(id);
    if (own) {
      result.set(id, { status: own.status, details: own.details });
      continue;
    }
    const cls = classLevel.get(classOf(id));
    if (cls) result.set(id, { status: cls.status, via: 'setUpClass', details: cls.details });
    else result.set(id, { status: 'not run', details: '' });
  }
  // Class-level failures (setUpClass, tearDownClass) and anything unlisted, as rows of their own.
  for (const r of records) {
    if (!result.has(r.id) && !(r.status === 'skip' && r.id.startsWith('setUpClass ('))) result.set(r.id, { status: r.status, details: r.details });
  }
  return result;
}

function count(results) {
  const counts = { total: 0, passed: 0, failed: 0, skipped: 0, other: 0 };
  for (const [id, r] of results) {
    if (/^(setUpClass|tearDownClass) \(/.test(id)) {
      if (r.status === 'fail') counts.failed++;
      continue;
    }
    counts.total++;
    if (r.status === 'success') counts.passed++;
    else if (r.status === 'fail') counts.failed++;
    else if (r.status === 'skip') counts.skipped++;
    else counts.other++;
  }
  return counts;
}

/**
 * tempest.log as entries; a rest_client request is an INFO "Request (Class:test): STATUS METHOD URL"
 * entry followed, from the same process, by a DEBUG entry with headers and bodies.
 */
function requestsByTest(logFile) {
  if (!existsSync(logFile)) return new Map();
  const entries = [];
  for (const line of readFileSync(logFile, 'utf8').split('\n')) {
    const head = /^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.,][\d.]+) (\d+) (\w+) (\S+)/.exec(line);
    if (head) entries.push({ time: head[1], pid: head[2], level: head[3], text: line });
    else if (entries.length > 0) entries[entries.length - 1].text += `\n${line}`;
  }
  const byTest = new Map();
  const lastInfoByPid = new Map();
  for (const entry of entries) {
    const request = /Request \(([^:)]+):([^)]+)\): (\d+) (\w+) (\S+) ([\d.]+s)/.exec(entry.text);
    if (request) {
      const key = `${request[1]}:${request[2]}`;
      const item = { time: entry.time, status: Number(request[3]), method: request[4], url: request[5], duration: request[6], full: '' };
      if (!byTest.has(key)) byTest.set(key, []);
      byTest.get(key).push(item);
      lastInfoByPid.set(entry.pid, item);
      continue;
    }
    if (entry.level === 'DEBUG' && entry.text.includes('Request - Headers:')) {
      const item = lastInfoByPid.get(entry.pid);
      if (item && item.full === '') {
        item.full = entry.text;
        const id = /'x-openstack-request-id': '([^']+)'/.exec(entry.text) || /'x-compute-request-id': '([^']+)'/.exec(entry.text);
        if (id) item.requestId = id[1];
      }
      lastInfoByPid.delete(entry.pid);
    }
  }
  return byTest;
}

/** What each test asked of the image endpoint and got: "STATUS METHOD /path" with ids and random names generalized. */
function requestShapes(requests, endpoint) {
  const shapes = new Map();
  for (const [key, made] of requests) {
    const set = new Set();
    for (const r of made) {
      if (!r.url.startsWith(endpoint)) continue;
      const path = r.url
        .slice(endpoint.length)
        .replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi, '{uuid}')
        .replace(/\b[0-9a-f]{32}\b/g, '{id}')
        .replace(/[\w.~%-]*\d{6,}[\w.~%-]*/g, '{name}')
        .replace(/=\d+\b/g, '={n}');
      set.add(`${r.status} ${r.method} ${path}`);
    }
    if (set.size > 0) shapes.set(key, set);
  }
  return shapes;
}

function testKey(testId) {
  const bare = testId.split('[')[0];
  const parts = bare.split('.');
  return `${parts[parts.length - 2]}:${parts[parts.length - 1]}`;
}

function redact(text) {
  return text.replace(/('x-auth-token'|'X-Auth-Token'|'x-subject-token'|'X-Subject-Token'): '[^']*'/g, "$1: '<omitted>'").replace(/"password": "[^"]*"/g, '"password": "<omitted>"');
}

function truncate(text, max) {
  return text.length <= max ? text : `${text.slice(0, max)} [... ${text.length - max} more characters]`;
}

function evidence(testId, result, requests, proxyLogLines) {
  const lines = [];
  lines.push(`### ${testId}`, '', `through the proxy: ${result.status}${result.via ? ` (in ${result.via})` : ''}`, '');
  if (result.details) lines.push('```', truncate(result.details, 4000), '```', '');
  const made = requests.get(testKey(testId)) ?? [];
  if (made.length > 0) {
    lines.push('requests the test made (tempest.log):', '');
    for (const r of made) lines.push(`- ${r.time} ${r.status} ${r.method} ${r.url} ${r.duration}${r.requestId ? ` ${r.requestId}` : ''}`);
    lines.push('');
    const last = made[made.length - 1];
    if (last.full) lines.push('last request in full:', '```', truncate(redact(last.full), 3000), '```', '');
    const ids = new Set(made.map((r) => r.requestId).filter(Boolean));
    const matching = proxyLogLines.filter((line) => [...ids].some((id) => line.includes(id)));
    if (matching.length > 0) lines.push("the proxy's log lines for those requests:", '```', truncate(matching.join('\n'), 6000), '```', '');
  }
  return lines.join('\n');
}

/**
 * One tempest run in a workspace of its own (OUT/<name>). `retry` narrows it to some tests:
 * { regex, listed } with concurrency 1.
 */
async function tempestRun(mode, endpoint, context, retry) {
  const { options, keystone, imageCaching } = context;
  const name = retry ? `${mode}-retry-${retry.attempt}` : mode;
  const workspace = join(options.out, name);
  log(`${mode}: image endpoint ${endpoint}`);
  await keystone.setImageEndpoints({ public: endpoint });
  await run('tempest', ['init', '--workspace-path', join(options.out, 'tempest-workspaces.yaml'), '--name', `stx-${name}-${process.pid}`, workspace]);
  // tempest uses etc/logging.conf when it exists, and Debian's opens tempest.log with 'w+' in each
  // worker: the second worker would wipe the first one's requests.
  rmSync(join(workspace, 'etc', 'logging.conf'), { force: true });
  writeFileSync(join(workspace, 'etc', 'tempest.conf'), tempestConf({ workspace, keystone, imageCaching, buildTimeout: 60 }), { mode: 0o600 });

  // Listing means discovering all of tempest (about 15 s): once for both runs.
  context.listed ??= (await run('tempest', ['run', '--list-tests', '--regex', options.regex], { cwd: workspace })).stdout
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => /^tempest\./.test(l));
  const listed = retry ? retry.listed : context.listed;
  if (listed.length === 0) throw new Error(`${mode}: tempest lists no test for ${options.regex}`);

  const started = Date.now();
  const outputFile = join(workspace, 'tempest-run.txt');
  const args = ['run', '--regex', retry ? retry.regex : options.regex, '--concurrency', String(retry ? 1 : options.concurrency)];
  log(`${name}: tempest ${args.join(' ')} (${listed.length} tests; output in ${outputFile})`);
  const exit = await runTempest(workspace, args, outputFile, options.runTimeout);
  const seconds = Math.round((Date.now() - started) / 1000);

  const { stdout } = await run('/bin/sh', ['-c', `stestr last --subunit | ${SYSTEM_PYTHON} ${JSON.stringify(join(__dirname, 'subunit_results.py'))}`], { cwd: workspace });
  const records = stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l));
  const results = outcomes(listed, records);
  // Self-test of the comparison: pretend matching tests failed through the proxy (every proxy run,
  // or only the first, which the retries then excuse as flaky).
  const pretend = mode === 'proxy' ? (options.selfTestFail ?? (retry ? undefined : options.selfTestFlaky)) : undefined;
  if (pretend !== undefined) {
    for (const [id, r] of results) if (id.includes(pretend) && r.status === 'success') results.set(id, { status: 'fail', details: 'self-test: marked failed by --self-test-fail/--self-test-flaky' });
  }
  const counts = count(results);
  log(`${name}: ${counts.passed} passed, ${counts.failed} failed, ${counts.skipped} skipped${counts.other ? `, ${counts.other} other` : ''} of ${counts.total} in ${seconds} s (tempest exit ${exit.code ?? exit.signal})`);
  return { mode, name, endpoint, workspace, exit, seconds, listed, results, counts };
}

function escapeRegex(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Tests that passed directly but not through the proxy run again through the proxy, alone
 * (concurrency 1), up to `retries` times; one that passes every retry is reported as flaky, one
 * that fails any retry stays a regression. Tempest has races of its own (ImageCachingTest lists the
 * cache queue after Glance's cache worker may already have cached the tiny image).
 */
async function retryRegressions(direct, viaProxy, context) {
  const { options } = context;
  const lost = [...viaProxy.results.keys()].filter((id) => !id.includes(' (') && direct.results.get(id)?.status === 'success' && viaProxy.results.get(id)?.status !== 'success');
  const retries = [];
  let passing = lost;
  for (let attempt = 1; attempt <= options.retries && passing.length > 0; attempt++) {
    const regex = `^(${passing.map((id) => escapeRegex(id.split('[')[0])).join('|')})(\\[|$)`;
    const retried = await tempestRun('proxy', viaProxy.endpoint, context, { attempt, regex, listed: passing });
    retries.push(retried);
    // A failure ends a test's retries: it stays a regression.
    passing = passing.filter((id) => retried.results.get(id)?.status === 'success');
  }
  return { retries, flaky: retries.length > 0 ? passing : [] };
}

async function main() {
  const options = parseArgs(process.argv.slice(2));
  if (!HARNESS || !existsSync(join(HARNESS, 'test', 'harness', 'keystone.js'))) throw new Error('STX_TEMPEST_HARNESS must name the compiled test harness (run scripts/tempest/run.sh)');
  const { startKeystone } = require(join(HARNESS, 'test', 'harness', 'keystone.js'));
  const { startGlance } = require(join(HARNESS, 'test', 'harness', 'glance.js'));
  const { startProxy } = require(join(HARNESS, 'test', 'harness', 'proxy.js'));
  mkdirSync(options.out, { recursive: true });
  const servicesDir = join(options.out, 'services');
  mkdirSync(servicesDir, { recursive: true });

  let keystone;
  let glance;
  let proxy;
  let stopping;
  const collectLogs = () => {
    for (const [name, file] of [
      ['keystone.log', keystone?.logFile],
      ['glance-api.log', glance?.logFile],
      ['proxy.log', proxy?.logFile],
    ]) {
      try {
        if (file && existsSync(file)) copyFileSync(file, join(servicesDir, name));
      } catch {
        // best effort
      }
    }
  };
  const stopAll = () =>
    (stopping ??= (async () => {
      if (currentTempest) killGroup(currentTempest.pid, 'SIGKILL');
      collectLogs();
      await proxy?.stop().catch(() => undefined);
      await glance?.stop().catch(() => undefined);
      await keystone?.stop().catch(() => undefined);
    })());
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
    process.once(signal, () => {
      log(`${signal}: stopping everything`);
      void stopAll().finally(() => process.exit(130));
    });
  }

  try {
    const started = Date.now();
    keystone = await startKeystone({ tokenExpiration: 7200 });
    log(`keystone ${keystone.url} (pid ${keystone.pid})`);
    const imageCaching = options.glance === 'extended';
    const glanceConf = await keystone.writeGlanceConf(imageCaching ? { append: glanceExtras(join(options.out, 'glance-extra')) } : {});
    glance = await startGlance({ auth: 'keystone', extraConf: glanceConf, debug: true });
    if (imageCaching) await loadMetadefs(glance, glanceConf);
    log(`glance ${glance.url} (pid ${glance.pid}, keystone auth, secure RBAC${imageCaching ? ', stores fs+fs2, image cache API' : ''})`);
    copyFileSync(glanceConf, join(servicesDir, 'glance-keystone.conf'));
    proxy = await startProxy({ upstream: glance.url });
    log(`proxy ${proxy.url} (pid ${proxy.pid}, serve --upstream ${glance.url})`);
    await keystone.setImageEndpoints({ internal: glance.url, admin: glance.url });

    const context = { options, keystone, imageCaching };
    const runs = [];
    if (options.only !== 'proxy') runs.push(await tempestRun('direct', glance.url, context));
    if (options.only !== 'direct') runs.push(await tempestRun('proxy', proxy.url, context));
    let retried = { retries: [], flaky: [] };
    if (runs.length === 2 && options.retries > 0) retried = await retryRegressions(runs[0], runs[1], context);
    collectLogs();
    const proxyLogLines = existsSync(join(servicesDir, 'proxy.log')) ? readFileSync(join(servicesDir, 'proxy.log'), 'utf8').split('\n') : [];
    const code = report(options, runs, proxyLogLines, Math.round((Date.now() - started) / 1000), retried);
    await stopAll();
    return code;
  } catch (error) {
    process.stderr.write(`${error.stack ?? error}\n`);
    await stopAll();
    return 2;
  }
}

function report(options, runs, proxyLogLines, seconds, retried = { retries: [], flaky: [] }) {
  const lines = ['# Tempest image API v2: direct Glance vs through stx-glance-proxy', ''];
  lines.push(`regex \`${options.regex}\`, concurrency ${options.concurrency}, Glance ${options.glance}, ${seconds} s in all`, '');
  lines.push('| run | endpoint | tests | passed | failed | skipped | other | seconds |', '|---|---|---|---|---|---|---|---|');
  for (const r of [...runs, ...retried.retries]) lines.push(`| ${r.name ?? r.mode} | ${r.endpoint} | ${r.counts.total} | ${r.counts.passed} | ${r.counts.failed} | ${r.counts.skipped} | ${r.counts.other} | ${r.seconds} |`);
  lines.push('');
  const summary = { regex: options.regex, concurrency: options.concurrency, glance: options.glance, seconds, runs: {}, regressions: [], flaky: [], differences: [] };
  const flaky = new Set(retried.flaky);
  for (const r of [...runs, ...retried.retries]) summary.runs[r.name ?? r.mode] = { endpoint: r.endpoint, seconds: r.seconds, counts: r.counts, tempestExit: r.exit.code ?? r.exit.signal };

  let code = 0;
  const direct = runs.find((r) => r.mode === 'direct');
  const viaProxy = runs.find((r) => r.mode === 'proxy');
  if (direct && viaProxy) {
    const ids = [...new Set([...direct.results.keys(), ...viaProxy.results.keys()])].sort();
    const requests = requestsByTest(join(viaProxy.workspace, 'tempest.log'));
    const evidenceBlocks = [];
    for (const id of ids) {
      const d = direct.results.get(id) ?? { status: 'absent' };
      const p = viaProxy.results.get(id) ?? { status: 'absent' };
      if (d.status === p.status) continue;
      const lost = d.status === 'success' && p.status !== 'success';
      const regression = lost && !flaky.has(id);
      summary.differences.push({ id, direct: d.status, proxy: p.status, regression, flaky: lost && flaky.has(id) });
      if (lost) {
        if (regression) summary.regressions.push(id);
        else summary.flaky.push(id);
        evidenceBlocks.push(evidence(id, p, requests, proxyLogLines).replace(/^### (.*)$/m, `### $1${regression ? '' : ` (flaky: passed ${options.retries} retries through the proxy)`}`));
      }
    }
    // Same outcome, different answers: informational (a test may accept either, or poll).
    const directShapes = requestShapes(requestsByTest(join(direct.workspace, 'tempest.log')), direct.endpoint);
    const proxyShapes = requestShapes(requests, viaProxy.endpoint);
    const answerDiffs = [];
    for (const key of [...new Set([...directShapes.keys(), ...proxyShapes.keys()])].sort()) {
      const a = directShapes.get(key) ?? new Set();
      const b = proxyShapes.get(key) ?? new Set();
      const onlyDirect = [...a].filter((x) => !b.has(x));
      const onlyProxy = [...b].filter((x) => !a.has(x));
      if (onlyDirect.length + onlyProxy.length > 0) answerDiffs.push({ test: key, onlyDirect, onlyProxy });
    }
    summary.answerDifferences = answerDiffs;
    const skippedBoth = ids.filter((id) => direct.results.get(id)?.status === 'skip' && viaProxy.results.get(id)?.status === 'skip');
    if (summary.differences.length === 0) lines.push('No differences: every test has the same outcome directly and through the proxy.', '');
    else {
      lines.push('## Differences', '', '| test | direct | proxy | |', '|---|---|---|---|');
      for (const d of summary.differences) lines.push(`| ${d.id} | ${d.direct} | ${d.proxy} | ${d.regression ? 'REGRESSION' : d.flaky ? `flaky (passed ${options.retries} retries)` : ''} |`);
      lines.push('');
    }
    if (evidenceBlocks.length > 0) lines.push('## Passed directly, not through the proxy', '', ...evidenceBlocks);
    lines.push(`## Requests answered differently (informational, ${answerDiffs.length} tests)`, '');
    lines.push('Per test, the distinct "status method path" of its image API requests (ids generalized) seen in one run only.', '');
    for (const d of answerDiffs) {
      lines.push(`- ${d.test}`);
      for (const x of d.onlyDirect) lines.push(`  - direct only: ${x}`);
      for (const x of d.onlyProxy) lines.push(`  - proxy only: ${x}`);
    }
    lines.push('');
    const failedBoth = ids.filter((id) => direct.results.get(id)?.status === 'fail' && viaProxy.results.get(id)?.status === 'fail');
    if (failedBoth.length > 0) lines.push('## Failed both ways (Glance or tempest configuration, not the proxy)', '', ...failedBoth.map((id) => `- ${id}`), '');
    lines.push(`## Skipped both ways (${skippedBoth.length})`, '');
    const reasons = new Map();
    for (const id of skippedBoth) {
      const r = direct.results.get(id);
      const reason = (r.details || '').replace(/^reason:\s*/, '').split('\n')[0].trim() || '(no reason)';
      const key = `${r.via ? `${classOf(id)} (class): ` : ''}${reason}`;
      reasons.set(key, (reasons.get(key) ?? 0) + 1);
    }
    for (const [reason, n] of reasons) lines.push(`- ${n} × ${reason}`);
    lines.push('');
    if (summary.regressions.length > 0) code = 1;
  }
  for (const r of runs) {
    if (r.counts.total === 0 || (r.exit.code === null && r.exit.signal !== null)) code = Math.max(code, 2);
  }
  lines.push('Files: <run>/tempest-run.txt (tempest output), <run>/tempest.log (every request, with bodies), services/ (Keystone, Glance, proxy logs).', '');
  const text = lines.join('\n');
  writeFileSync(join(options.out, 'report.md'), text);
  writeFileSync(join(options.out, 'comparison.json'), JSON.stringify(summary, null, 2));
  for (const r of runs) {
    writeFileSync(join(options.out, `${r.mode}-results.json`), JSON.stringify(Object.fromEntries([...r.results].map(([id, v]) => [id, v.status])), null, 2));
  }
  process.stdout.write(`\n${text}\n`);
  const d = summary.runs.direct?.counts;
  const p = summary.runs.proxy?.counts;
  if (d && p) {
    process.stdout.write(`direct: ${d.passed} passed, ${d.failed} failed, ${d.skipped} skipped\n`);
    process.stdout.write(`proxy: ${p.passed} passed, ${p.failed} failed, ${p.skipped} skipped\n`);
    const flakyNote = summary.flaky.length > 0 ? ` (${summary.flaky.length} more failed once through the proxy and passed ${options.retries} retries: flaky, see the report)` : '';
    process.stdout.write(`${summary.regressions.length === 0 ? 'OK' : 'FAIL'}: ${summary.regressions.length} test(s) passed directly but not through the proxy${flakyNote}; report in ${join(options.out, 'report.md')}\n`);
  }
  return code;
}

if (require.main === module) {
  main().then(
    (code) => process.exit(code),
    (error) => {
      process.stderr.write(`${error.stack ?? error}\n`);
      process.exit(2);
    },
  );
} else {
  module.exports = { outcomes, count, requestsByTest, requestShapes, evidence, report };
}
