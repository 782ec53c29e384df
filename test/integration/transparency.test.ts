import { randomBytes } from 'node:crypto';
import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient } from '../harness/http';
import { Masker, normalizeExchange, type NormalizedExchange } from '../harness/normalize';
import { startProxy, type RunningProxy } from '../harness/proxy';
import { STEPS, type ScenarioContext } from './scenarios/glance-api';
import { stripExtensions } from './scenarios/extensions';

/**
 * Differential transparency: the same scenario against Glance directly and through the proxy, on
 * one real Glance. Apart from the extension fields the proxy adds on purpose (stripped here and
 * tested on their own), every status, header and body must be the same; but an error the proxy
 * answers itself to a request without Accept is JSON where Glance writes plain text.
 */
async function replay(baseUrl: string, viaProxy: boolean): Promise<NormalizedExchange[]> {
  const client = new HttpClient(baseUrl);
  const ctx: ScenarioContext = { run: `run${randomBytes(4).toString('hex')}`, ids: {} };
  const masker = new Masker(ctx.run);
  const out: NormalizedExchange[] = [];
  try {
    for (const step of STEPS) {
      const res = await step.send(client, ctx);
      const exchange = normalizeExchange(step.name, res, masker);
      out.push(viaProxy ? stripExtensions(exchange) : exchange);
    }
  } finally {
    client.destroy();
  }
  return out;
}

/** The proxy's own error for a request that states no Accept preference: {"error": {code, title, message}}. */
function isReadableError(exchange: NormalizedExchange): boolean {
  const error = (exchange.body as { error?: unknown } | null)?.error as Record<string, unknown> | undefined;
  return exchange.headers['content-type'] === 'application/json' && typeof error === 'object' && error !== null && typeof error.message === 'string' && error.code === exchange.status;
}

describe('transparency against real Glance', () => {
  let glance: RunningGlance;
  let proxy: RunningProxy;
  let direct: NormalizedExchange[];
  let proxied: NormalizedExchange[];

  beforeAll(async () => {
    glance = await startGlance();
    proxy = await startProxy({ upstream: glance.url });
    direct = await replay(glance.url, false);
    proxied = await replay(proxy.url, true);
  }, 120_000);

  afterAll(async () => {
    await proxy?.stop();
    await glance?.stop();
  });

  it('ran every step both ways', () => {
    expect(proxied.map((e) => e.step)).toEqual(STEPS.map((s) => s.name));
    expect(direct).toHaveLength(STEPS.length);
  });

  it.each(STEPS.map((s, i) => [s.name, i] as const))('%s: same answer through the proxy', (_name, i) => {
    const [viaProxy, fromGlance] = [proxied[i], direct[i]];
    if (isReadableError(viaProxy) && fromGlance.headers['content-type'] === 'text/plain; charset=UTF-8') {
      // A request with no Accept that the proxy answers itself: the same status, headers and text as
      // Glance's plain-text error, as the JSON that openstacksdk can read (src/http/errors.ts).
      const lines = (text: string) => text.split('\n').map((line) => line.trim()).filter(Boolean);
      const framing = ({ headers, body: _body, ...rest }: NormalizedExchange) => {
        const { 'content-type': _type, 'content-length': _length, ...kept } = headers;
        return { ...rest, headers: kept };
      };
      expect(framing(viaProxy)).toEqual(framing(fromGlance));
      expect(viaProxy.headers['content-type']).toBe('application/json');
      const { error } = viaProxy.body as { error: { code: number; title: string; message: string } };
      expect(`${error.code} ${error.title}`).toBe(lines(String(fromGlance.body))[0]);
      expect(lines(error.message)).toEqual(lines(String(fromGlance.body)).slice(1));
      return;
    }
    expect(viaProxy).toEqual(fromGlance);
  });

  it('covered the status codes the scenario is meant to cover', () => {
    const statuses = new Set(direct.map((e) => e.status));
    for (const status of [200, 201, 202, 204, 206, 300, 400, 403, 404, 405, 409, 413, 415, 416]) expect(statuses).toContain(status);
  });
});
