import { access } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { qualityOf, type MediaRange } from '../http/errors';

/**
 * The detailed /healthcheck of the ops listeners (the proxy's and the worker's), in oslo.middleware's
 * style: 200 "OK" or 503 with the reasons, plain text by default and JSON for Accept:
 * application/json; `?detailed` adds each check's details. A file at `disable_by_file` turns the
 * node to 503 so a load balancer drains it before maintenance. The public listener answers
 * `publicHealthcheck` instead, which tells nothing but OK or DISABLED BY FILE.
 */
export interface HealthCheck {
  name: string;
  /** False: reported in the details but never turns the answer to 503. */
  critical?: boolean;
  run(): Promise<{ ok: boolean; reason: string; details?: Record<string, unknown> }>;
}

export interface HealthOptions {
  disableByFile: string | null;
  checks: HealthCheck[];
}

const CACHE_MS = 2_000;

export function createHealth(options: HealthOptions) {
  let cached: { at: number; result: Promise<Array<{ name: string; critical?: boolean; ok: boolean; reason: string; details?: Record<string, unknown> }>> } | undefined;

  const runChecks = () => {
    if (!cached || Date.now() - cached.at > CACHE_MS) {
      const all: HealthCheck[] = [];
      if (options.disableByFile) all.push(disabledByFile(options.disableByFile));
      all.push(...options.checks);
      cached = {
        at: Date.now(),
        result: Promise.all(all.map(async (c) => ({ name: c.name, critical: c.critical, ...(await c.run().catch((e: Error) => ({ ok: false, reason: e.message }))) }))),
      };
    }
    return cached.result;
  };

  return async (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> => {
    const results = await runChecks();
    const ok = results.every((r) => r.ok || r.critical === false);
    const detailed = /[?&]detailed(=|&|$)/.test(req.url ?? '');
    const wantsJson = /application\/json/i.test(req.headers.accept ?? '');
    const status = ok ? 200 : 503;
    const reasons = ok ? ['OK'] : results.filter((r) => !r.ok && r.critical !== false).map((r) => r.reason);
    let body: string;
    let type: string;
    if (wantsJson) {
      type = 'application/json';
      body = JSON.stringify(
        detailed
          ? { detailed: true, reasons: results.map((r) => ({ class: r.name, reason: r.reason, details: r.details ?? {} })) }
          : { detailed: false, reasons },
      );
    } else {
      type = 'text/plain; charset=UTF-8';
      body = detailed ? results.map((r) => `${r.name}: ${r.ok ? 'OK' : r.reason}`).join('\n') : reasons.join('\n');
    }
    res.writeHead(status, { 'Content-Type': type, 'Content-Length': String(Buffer.byteLength(body)), 'Cache-Control': 'no-cache' });
    res.end(req.method === 'HEAD' ? undefined : body);
  };
}

function disabledByFile(path: string): HealthCheck {
  return {
    name: 'disable_by_file',
    run: async () => ((await exists(path)) ? { ok: false, reason: 'DISABLED BY FILE', details: { path } } : { ok: true, reason: 'OK', details: { path } }),
  };
}

/**
 * The queue answers: triggers can be recorded. Not critical for the proxy, whose triggers are
 * best effort (the sweep finds what a queue outage missed): a RabbitMQ outage must not take every
 * image API node out of the load balancer. Critical for a worker, which has nothing to do without it.
 */
export function queueCheck(health: () => Promise<{ ok: boolean; depth?: number; detail?: string }>, critical: boolean): HealthCheck {
  return {
    name: 'rawcache_queue',
    critical,
    run: async () => {
      const h = await health();
      return { ok: h.ok, reason: h.ok ? 'OK' : `raw-cache queue unavailable: ${h.detail ?? 'no answer'}`, details: { depth: h.depth } };
    },
  };
}

/** Glance answers its versions document: the proxy can serve requests. */
export function glanceCheck(upstream: string): HealthCheck {
  return {
    name: 'glance',
    run: () =>
      new Promise((resolve) => {
        const started = Date.now();
        const get = upstream.startsWith('https:') ? https.get : http.get;
        const req = get(`${upstream}/versions`, { agent: false, timeout: 3_000 }, (res) => {
          res.resume();
          const ms = Date.now() - started;
          const ok = (res.statusCode ?? 500) < 500;
          resolve({ ok, reason: ok ? 'OK' : `Glance answered ${res.statusCode}`, details: { status: res.statusCode, latency_ms: ms } });
        });
        req.once('timeout', () => req.destroy(new Error('no answer within 3 s')));
        req.once('error', (err) => resolve({ ok: false, reason: `Glance unreachable: ${err.message}`, details: { upstream } }));
      }),
  };
}

/**
 * The public listener's /healthcheck, answered as Glance's own oslo.middleware Healthcheck answers
 * it with its stock backend, disable_by_file, and `detailed` off (measured on Glance 25.1 with
 * oslo.middleware 5.0 under eventlet): the path alone decides, so every method gets an answer; HEAD
 * gets 204 (503 while disabled) and no body; any other method 200 "OK" (503 "DISABLED BY FILE") as
 * plain text, HTML or JSON by the Accept header. Nothing else is told: no check names, no paths.
 *
 * Glance being unreachable does not turn it to 503, as none of oslo's stock backends looks past the
 * process either: a load balancer polls every proxy node, and a Glance blip must not drain them all
 * at once (each request Glance misses gets a Glance-style 503 of its own). Glance and the raw-cache
 * queue are checked by the detailed /healthcheck on the ops listener.
 */
export function publicHealthcheck(disableByFile: string | null): (req: http.IncomingMessage, res: http.ServerResponse) => Promise<void> {
  return async (req, res) => {
    // oslo looks for the file on every request (os.path.exists), so draining starts at once.
    const healthy = disableByFile === null || !(await exists(disableByFile));
    if (req.method === 'HEAD') {
      // WebOb leaves the content type off its 204; the 503 keeps it.
      res.writeHead(healthy ? 204 : 503, healthy ? { 'Content-Length': '0' } : { 'Content-Type': PLAIN_TEXT, 'Content-Length': '0' });
      res.end();
      return;
    }
    const { contentType, body } = oneReasonBody(healthy ? 'OK' : 'DISABLED BY FILE', healthcheckMediaType(req.headers.accept));
    res.writeHead(healthy ? 200 : 503, { 'Content-Type': contentType, 'Content-Length': String(Buffer.byteLength(body)) });
    res.end(body);
  };
}

const PLAIN_TEXT = 'text/plain; charset=UTF-8';

async function exists(path: string): Promise<boolean> {
  try {
    await access(path);
    return true;
  } catch {
    return false;
  }
}

type HealthcheckMediaType = 'text/plain' | 'text/html' | 'application/json';

/** oslo's offers, in its order: among equally acceptable types the first wins. */
const HEALTHCHECK_OFFERS: readonly HealthcheckMediaType[] = ['text/plain', 'text/html', 'application/json'];

const TOKEN = "[!#$%&'*+.^_`|~0-9A-Za-z-]+";
const MEDIA_RANGE = new RegExp(`^(${TOKEN})/(${TOKEN})$`);
const QVALUE = /^(0(\.[0-9]{0,3})?|1(\.0{0,3})?)$/;

/**
 * The body type oslo's Healthcheck picks with WebOb's `acceptable_offers`: each offer takes the
 * quality of the most specific range that matches it (the exact type, then its type with any
 * subtype, then any type), q=0 refuses it, the highest quality wins and ties go to the earlier
 * offer. A range with parameters other than q matches none of the (parameterless) offers. No
 * acceptable offer, and an Accept header WebOb cannot parse, both give plain text.
 */
export function healthcheckMediaType(accept: string | undefined): HealthcheckMediaType {
  if (accept === undefined) return 'text/plain';
  const ranges: MediaRange[] = [];
  for (const element of accept.split(',')) {
    if (element.trim() === '') continue;
    const [mediaRange, ...params] = element.split(';').map((part) => part.trim());
    const match = MEDIA_RANGE.exec(mediaRange);
    if (!match) return 'text/plain';
    let q = 1;
    let otherParams = false;
    for (const param of params) {
      const eq = param.indexOf('=');
      const name = param.slice(0, eq).trim().toLowerCase();
      const value = param.slice(eq + 1).trim();
      if (eq <= 0 || value === '') return 'text/plain';
      if (name !== 'q') otherParams = true;
      else if (QVALUE.test(value)) q = Number(value);
      else return 'text/plain';
    }
    if (!otherParams) ranges.push({ type: match[1].toLowerCase(), subtype: match[2].toLowerCase(), q });
  }
  let best: HealthcheckMediaType = 'text/plain';
  let bestQ = 0;
  for (const offer of HEALTHCHECK_OFFERS) {
    const q = qualityOf(offer, ranges);
    if (q > bestQ) {
      best = offer;
      bestQ = q;
    }
  }
  return best;
}

/** oslo's non-detailed bodies (its Jinja templates, rendered) for a single check's reason. */
function oneReasonBody(reason: string, type: HealthcheckMediaType): { contentType: string; body: string } {
  switch (type) {
    case 'application/json':
      // json.dumps(..., indent=4, sort_keys=True)
      return { contentType: 'application/json', body: JSON.stringify({ detailed: false, reasons: [reason] }, null, 4) };
    case 'text/html':
      return {
        contentType: 'text/html; charset=UTF-8',
        body:
          '<HTML>\n<HEAD><TITLE>Healthcheck Status</TITLE></HEAD>\n<BODY>\n\n<H2>Result of 1 checks:</H2>\n' +
          '<TABLE bgcolor="#ffffff" border="1">\n<TBODY>\n<TR>\n\n<TH>\nReason\n</TH>\n</TR>\n<TR>\n\n' +
          `    <TD>${reason}</TD>\n\n</TR>\n</TBODY>\n</TABLE>\n<HR></HR>\n\n</BODY>\n</HTML>`,
      };
    default:
      return { contentType: PLAIN_TEXT, body: reason };
  }
}
