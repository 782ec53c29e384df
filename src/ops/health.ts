import { access } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';

/**
 * GET /healthcheck in oslo.middleware's style: 200 "OK" or 503 with the reasons, plain text by
 * default and JSON for Accept: application/json; `?detailed` adds each check's details. A file at
 * `disable_by_file` turns the node to 503 so a load balancer drains it before maintenance.
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
    run: async () => {
      try {
        await access(path);
        return { ok: false, reason: 'DISABLED BY FILE', details: { path } };
      } catch {
        return { ok: true, reason: 'OK', details: { path } };
      }
    },
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
