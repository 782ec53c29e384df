import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import {
  ROUTE_NAMES,
  ROUTE_SPELLINGS,
  SECOND_STORE,
  reachOn,
  routeSegments,
  spellingApplies,
  type Reach,
  type RouteName,
} from '../fixtures/glance-route-spellings';
import { startGlance, type RunningGlance } from '../harness/glance';
import { startProxy, type RunningProxy } from '../harness/proxy';
import { writeRawCacheConfig } from '../harness/rawcache';
import { NoAnswer, RawHttpClient, type RawRequest, type RawResponse } from './support/raw-http';
import {
  IMAGE_DATA,
  PATCH_V21,
  generateCases,
  oracleRequest,
  type GateCase,
  type ImageKind,
  type RefusalClass,
  type Targets,
} from './support/request-gate-cases';
import { summarize, triggerNeeded, valueProblems, type Image, type Summary, type TriggerNeed } from './support/request-gate-judge';
import { runTag } from './support/stx-images';

/**
 * The request gate, differentially: a few thousand hostile spellings of image API requests go to a
 * real Glance 25 alone and, on a twin image, through the proxy (raw cache on, SQLite queue, no
 * worker, so every recorded job stays in the queue). Each case is judged on what Glance itself then
 * stores, read directly, never through the proxy:
 * - the proxy never answers 5xx, and it keeps serving after every class of malformed request;
 * - Glance never holds an invalid or forged StarlingX value written through the proxy;
 * - every change to an image's data (or cache_raw) made through the proxy left a job in the queue;
 * - what Glance alone serves correctly the proxy lets through, but for the deliberate refusals below;
 * - through the proxy Glance does exactly what it does alone with the same request, or nothing.
 */

/**
 * What the proxy answers itself on purpose, and why (see docs/security.md). `orAsCanonical`: the
 * proxy may instead handle the request as the canonical one it means (the case's oracle), which is
 * then judged like any other request.
 */
const DELIBERATE_REFUSALS: Record<RefusalClass, { statuses: number[]; orAsCanonical?: true; why: string }> = {
  'invalid-utf8-path': { statuses: [400], why: 'Glance answers 500: the percent-decoded path is not UTF-8' },
  'non-uuid-image-id': {
    statuses: [404],
    why: 'only a UUID is an image id: MySQL and MariaDB would match an id with trailing spaces, other letter case or accents to an image',
  },
  'unknown-v2-path': { statuses: [404], why: 'a /v2 path outside Glance 25 routes, as Glance answers; a newer Glance route is not judged' },
  'not-origin-form': {
    statuses: [400],
    why: "Node's HTTP parser refuses a request-target that is not origin-form or holds non-ASCII bytes (RFC 9112 §3.2) before any proxy code runs; Glance alone routes `v2/images/{id}`",
  },
  'config-dependent-version': {
    statuses: [300],
    orAsCanonical: true,
    why: 'v2.14 and v2.16 exist only on a Glance with an image cache: the proxy routes them as any Glance 25 may, or answers the versions document as this one does',
  },
  'multipart-form': { statuses: [415], why: 'Glance would take a `_method` from a multipart form; the proxy does not parse multipart' },
  'form-charset': { statuses: [415], why: 'Glance answers 500 for a form in a charset other than UTF-8' },
  'form-override-on-body-rejecting-route': {
    statuses: [400],
    orAsCanonical: true,
    why: "Glance routes by the form's `_method`, then refuses the form as a body (400); the proxy answers the same or forwards the canonical request without the form",
  },
  'non-ascii-method-override': {
    statuses: [400],
    orAsCanonical: true,
    why: "Python upper-cases 'ſ' to 'S' and 'ﬅ' to 'ST': the proxy refuses an override that is not an ASCII method name, or applies it exactly as Glance does",
  },
  'content-encoding': {
    statuses: [415],
    why: 'Glance ignores Content-Encoding on a JSON body, so a body the proxy judged decoded would be stored as sent (or the other way round)',
  },
  'glance-500-body': {
    statuses: [400],
    why: 'Glance answers 500 (an array as a create body, nesting past its recursion limit); the proxy refuses nesting deeper than limits.json_depth (32)',
  },
  'create-id-not-uuid': { statuses: [400], why: "Glance's id pattern takes a trailing newline (then fails with 500); ids must be canonical UUIDs" },
  'reserved-property': { statuses: [403], why: 'a `__proto__` property could set a prototype in JavaScript that reads the image back' },
  'json-limits': { statuses: [400, 413], why: 'a body past limits.json_* is refused before it is parsed' },
};

/** Room for a few thousand requests to a real Glance on a busy 2-core machine; no outcome depends on it. */
const SUITE_GUARD_MS = 40 * 60_000;
const BATCH_SIZE = 120;
const CONNECTIONS = 4;
const JSON_ACCEPT: readonly [string, string] = ['Accept', 'application/json'];

type Side = 'direct' | 'proxy';
const SIDES: readonly Side[] = ['direct', 'proxy'];

type Answer = { status: number; text: string } | { noAnswer: string };
const statusOf = (answer: Answer): number | undefined => ('status' in answer ? answer.status : undefined);
const is2xx = (answer: Answer): boolean => {
  const status = statusOf(answer);
  return status !== undefined && status >= 200 && status < 300;
};
const shown = (answer: Answer): string => ('status' in answer ? `${answer.status} ${oneLine(answer.text)}` : `no answer (${answer.noAnswer})`);
const oneLine = (text: string): string => text.replace(/\s+/g, ' ').trim().slice(0, 140);
/** The JSON object of an answer, or undefined when it is not one. */
const jsonOf = (res: RawResponse): Record<string, unknown> | undefined => {
  try {
    const value: unknown = JSON.parse(res.text());
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
};

/** What one side's request did to Glance: its target image after, and the images it created. */
interface Effect {
  /** The target's summary after the request; 'gone' once deleted; undefined for a shared target. */
  main?: Summary | 'gone';
  created: Summary[];
}

interface Outcome {
  gateCase: GateCase;
  batch: string;
  direct: Answer;
  proxy: Answer;
  effect: Record<Side, Effect>;
  /** The proxy side's target is as it was before the request, and nothing was created. */
  proxyChangedNothing: boolean;
  trigger?: TriggerNeed & { recorded?: string };
  problems: string[];
}

describe('the request gate: hostile spellings through the proxy, judged on Glance itself', () => {
  let glance: RunningGlance;
  let proxy: RunningProxy;
  let proxyExited = false;
  let dir: string;
  let configFile: string;
  let queue: Database.Database;
  let direct: RawHttpClient;
  let viaProxy: RawHttpClient;
  const run = runTag();
  const cases = generateCases();
  const outcomes: Outcome[] = [];
  /** The proxy exited (and was started again) or stopped serving: while which requests, how, how often. */
  const breakdowns = new Map<string, number>();
  const recordBreakdown = (what: string, dead: RunningProxy): void => {
    // The last error line the process wrote says why it ended (an uncaught URIError, say).
    const why = dead.logs().split('\n').filter((line) => /Error\b/.test(line)).pop()?.trim() ?? dead.logs().trimEnd().split('\n').pop();
    const message = `${what}: ${why}`;
    breakdowns.set(message, (breakdowns.get(message) ?? 0) + 1);
  };
  const classesRun = new Set<string>();
  /** Images the proxy side may hold read-only values on: the suite set them itself, directly. */
  const setDirectly = new Map<string, Record<string, string>>();
  const directSideIds = new Set<string>();
  const shared: Record<Side, Image> = {} as Record<Side, Image>;
  const sharedChanges: string[] = [];
  let probeImage: Image;

  const glanceCall = async (method: string, target: string, body?: unknown, contentType = 'application/json'): Promise<RawResponse> =>
    direct.send({
      method,
      target,
      headers: body === undefined ? [JSON_ACCEPT] : [JSON_ACCEPT, ['Content-Type', contentType]],
      body: body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body)),
    });

  const expectStatus = (res: RawResponse, status: number, what: string): RawResponse => {
    if (res.status !== status) throw new Error(`${what}: Glance answered ${res.status}: ${res.text()}`);
    return res;
  };

  /** Images as Glance lists them, by id (deleted ones are absent). */
  async function readImages(ids: readonly string[]): Promise<Map<string, Image>> {
    const found = new Map<string, Image>();
    for (let at = 0; at < ids.length; at += 50) {
      const chunk = ids.slice(at, at + 50);
      const res = expectStatus(await glanceCall('GET', `/v2/images?id=in:${chunk.join(',')}&limit=${chunk.length}`), 200, 'list by id');
      for (const image of JSON.parse(res.text()).images as Image[]) found.set(image.id, image);
    }
    return found;
  }

  /** Every image Glance lists for a filter, page after page. */
  async function listAll(query: string): Promise<Image[]> {
    const images: Image[] = [];
    let next: string | undefined = `/v2/images?limit=1000${query ? `&${query}` : ''}`;
    while (next) {
      const page = JSON.parse(expectStatus(await glanceCall('GET', next), 200, 'list').text()) as { images: Image[]; next?: string };
      images.push(...page.images);
      next = page.next;
    }
    return images;
  }

  /** Makes images of one kind directly on Glance, several at a time. */
  async function makeImages(kind: ImageKind, side: Side, count: number): Promise<string[]> {
    const one = async (): Promise<string> => {
      const created = expectStatus(
        await glanceCall('POST', '/v2/images', { name: 'gate-pool', disk_format: 'raw', container_format: 'bare', stx_gate_run: run, stx_gate_pool: side }),
        201,
        'create',
      );
      const { id } = JSON.parse(created.text()) as Image;
      if (kind !== 'queued' && kind !== 'staged') expectStatus(await glanceCall('PUT', `/v2/images/${id}/file`, IMAGE_DATA, 'application/octet-stream'), 204, 'upload');
      if (kind === 'staged') expectStatus(await glanceCall('PUT', `/v2/images/${id}/stage`, IMAGE_DATA, 'application/octet-stream'), 204, 'stage');
      if (kind === 'cached') {
        // What a worker leaves on an image it has cached; Glance itself lets the suite write it.
        // The same on every image of the kind, so that two of them compare equal.
        const fields = { cache_raw_status: 'Cached', cache_raw_url: 'file:///var/lib/stx-gate/raw', cache_raw_size: String(IMAGE_DATA.length) };
        const ops = Object.entries({ cache_raw: 'True', ...fields }).map(([name, value]) => ({ op: 'add', path: `/${name}`, value }));
        expectStatus(await glanceCall('PATCH', `/v2/images/${id}`, ops, PATCH_V21), 200, 'set the raw-cache fields');
        setDirectly.set(id, fields);
      }
      if (kind === 'two-store') {
        expectStatus(await glanceCall('POST', `/v2/images/${id}/import`, { method: { name: 'copy-image' }, stores: [SECOND_STORE] }), 202, 'copy to the second store');
      }
      if (side === 'direct') directSideIds.add(id);
      return id;
    };
    const ids: string[] = [];
    let started = 0;
    await Promise.all(
      Array.from({ length: CONNECTIONS }, async () => {
        while (started < count) {
          started++;
          ids.push(await one());
        }
      }),
    );
    if (kind === 'two-store') await untilEvery(ids, (image) => String(image.stores).split(',').includes(SECOND_STORE), `copied to ${SECOND_STORE}`);
    return ids;
  }

  /** Reads the images again and again until each satisfies `done` (Glance copies in the background). */
  async function untilEvery(ids: string[], done: (image: Image) => boolean, what: string): Promise<void> {
    let pending = ids;
    while (pending.length > 0) {
      const images = await readImages(pending);
      const failed = [...images.values()].filter((image) => image.os_glance_failed_import);
      if (failed.length > 0) throw new Error(`Glance failed to get images ${what}: ${JSON.stringify(failed)}`);
      pending = pending.filter((id) => !done(images.get(id) ?? ({ id, status: 'missing' } as Image)));
    }
  }

  async function startTheProxy(): Promise<void> {
    proxy = await startProxy({ upstream: glance.url, config: configFile });
    proxyExited = false;
    const started = proxy;
    void started.exited.then(() => {
      if (proxy === started) proxyExited = true;
    });
    viaProxy?.destroy();
    viaProxy = new RawHttpClient(proxy.port, CONNECTIONS);
  }

  /** The proxy still runs and answers a plain request; else it is started again and the breakdown recorded. */
  async function checkProxyServes(after: string): Promise<void> {
    let problem: string | undefined;
    try {
      const res = await viaProxy.send({ method: 'GET', target: `/v2/images/${shared.proxy.id}`, headers: [JSON_ACCEPT] });
      if (res.status !== 200) problem = `a plain show answered ${res.status}: ${oneLine(res.text())}`;
    } catch (error) {
      problem = `a plain show got ${(error as Error).message}`;
    }
    if (proxyExited) problem = `the process exited (${JSON.stringify(await proxy.exited)})${problem ? `; ${problem}` : ''}`;
    if (problem === undefined) return;
    recordBreakdown(`after ${after}: ${problem}`, proxy);
    await proxy.stop('SIGKILL');
    await startTheProxy();
  }

  let recovering: Promise<void> | undefined;

  /**
   * Sends through the proxy. A request that could not even connect never reached the proxy: it died
   * under an earlier request, so it is started again (the breakdown recorded) and the request resent,
   * which keeps one crash from hiding how the proxy answers the rest of its class.
   */
  async function sendThroughProxy(request: RawRequest, during: string): Promise<Answer> {
    for (;;) {
      const client = viaProxy;
      const answer = await send(client, request);
      if (!('noAnswer' in answer) || !answer.noAnswer.startsWith('cannot connect')) return answer;
      if (client === viaProxy) await restartDeadProxy(during);
      else await recovering;
    }
  }

  function restartDeadProxy(during: string): Promise<void> {
    const dead = proxy;
    recovering ??= (async () => {
      // Nothing listens on its port: the process has exited or is exiting.
      const status = await dead.exited;
      recordBreakdown(`during ${during}: the process exited (${JSON.stringify(status)})`, dead);
      await dead.stop();
      await startTheProxy();
    })().finally(() => {
      recovering = undefined;
    });
    return recovering;
  }

  async function send(client: RawHttpClient, request: RawRequest): Promise<Answer> {
    try {
      const res = await client.send(request);
      return { status: res.status, text: res.text() };
    } catch (error) {
      if (error instanceof NoAnswer) return { noAnswer: error.message };
      throw error;
    }
  }

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stx-request-gate-'));
    const storeConf = join(dir, 'glance-two-stores.conf');
    // A second file store, so that DELETE /v2/stores/{store}/{id} can succeed (Glance refuses to
    // delete the only copy of an image's data).
    await writeFile(
      storeConf,
      `[DEFAULT]\nenabled_backends = fs:file, ${SECOND_STORE}:file\n\n[glance_store]\ndefault_backend = fs\n\n[${SECOND_STORE}]\nfilesystem_store_datadir = ${join(dir, SECOND_STORE)}/\n`,
    );
    glance = await startGlance({ extraConf: storeConf });
    direct = new RawHttpClient(glance.port, CONNECTIONS);
    configFile = writeRawCacheConfig(dir, { upstream: glance.url, extra: { store_types: { fs: 'file', [SECOND_STORE]: 'file' } } });
    await startTheProxy();
    queue = new Database(join(dir, 'queue.sqlite'), { fileMustExist: true });

    for (const side of SIDES) {
      const [id] = await makeImages('active', side, 1);
      shared[side] = (await readImages([id])).get(id)!;
    }
    const [probeId] = await makeImages('active', 'proxy', 1);
    probeImage = (await readImages([probeId])).get(probeId)!;

    // Every fresh image the cases need, made up front so that Glance copies to the second store all at once.
    const pools = new Map<string, string[]>();
    for (const kind of ['queued', 'active', 'cached', 'staged', 'two-store'] as const) {
      const count = cases.filter((gateCase) => gateCase.main === kind).length;
      for (const side of SIDES) pools.set(`${kind} ${side}`, await makeImages(kind, side, count));
    }
    const before = await readImages([...pools.values()].flat());
    // Every image so far was made on Glance directly: a job now would be one no case caused.
    const { n: jobsBefore } = queue.prepare('SELECT count(*) AS n FROM jobs').get() as { n: number };
    if (jobsBefore !== 0) throw new Error(`the queue holds ${jobsBefore} jobs before any request went through the proxy`);

    const groups = new Map<string, GateCase[]>();
    for (const gateCase of cases) {
      const group = gateCase.malformed ?? gateCase.family;
      groups.set(group, [...(groups.get(group) ?? []), gateCase]);
    }
    let batchNumber = 0;
    for (const [group, groupCases] of groups) {
      for (let at = 0; at < groupCases.length; at += BATCH_SIZE) {
        await runBatch(`b${batchNumber++}`, groupCases.slice(at, at + BATCH_SIZE), pools, before);
      }
      classesRun.add(group);
      await checkProxyServes(`the ${group} cases`);
    }
  }, SUITE_GUARD_MS);

  async function runBatch(batch: string, batchCases: GateCase[], pools: Map<string, string[]>, before: Map<string, Image>): Promise<void> {
    const targets = batchCases.map((gateCase) => {
      const forSide = (side: Side): Targets => ({
        id: gateCase.main ? pools.get(`${gateCase.main} ${side}`)!.pop()! : shared[side].id,
        otherId: shared[side].id,
        marker: `"stx_gate_run":"${run}","stx_gate_batch":"${batch}","stx_gate_case":"c${gateCase.index}","stx_gate_side":"${side}",`,
        newId: randomUUID(),
      });
      return { direct: forSide('direct'), proxy: forSide('proxy') };
    });
    const directAnswers = await Promise.all(batchCases.map((gateCase, i) => send(direct, oracleRequest(gateCase, targets[i].direct))));
    const during = `batch ${batch} (${batchCases[0].malformed ?? batchCases[0].family})`;
    const proxyAnswers = await Promise.all(batchCases.map((gateCase, i) => sendThroughProxy(gateCase.request(targets[i].proxy), during)));
    if (proxyExited) await checkProxyServes(during);

    const mains = batchCases.flatMap((gateCase, i) => (gateCase.main ? [targets[i].direct.id, targets[i].proxy.id] : []));
    const after = await readImages(mains);
    const created = new Map<string, Image[]>();
    for (const image of await listAll(`stx_gate_batch=${batch}`)) {
      const key = `${image.stx_gate_case} ${image.stx_gate_side}`;
      created.set(key, [...(created.get(key) ?? []), image]);
      if (image.stx_gate_side === 'direct') directSideIds.add(image.id);
    }
    const jobs = new Map((queue.prepare('SELECT image_id, reason FROM jobs').all() as Array<{ image_id: string; reason: string }>).map((row) => [row.image_id, row.reason]));

    batchCases.forEach((gateCase, i) => {
      const effect = {} as Record<Side, Effect>;
      for (const side of SIDES) {
        const id = targets[i][side].id;
        const madeHere = created.get(`c${gateCase.index} ${side}`) ?? [];
        effect[side] = {
          main: gateCase.main === undefined ? undefined : after.has(id) ? summarize(after.get(id)!, gateCase.main) : 'gone',
          created: madeHere.map((image) => summarize(image, 'created')).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b))),
        };
      }
      const proxyId = targets[i].proxy.id;
      const problems = (created.get(`c${gateCase.index} proxy`) ?? []).flatMap((image) => valueProblems(image).map((p) => `created ${image.id}: ${p}`));
      let proxyChangedNothing = effect.proxy.created.length === 0;
      let trigger: Outcome['trigger'];
      if (gateCase.main) {
        const was = before.get(proxyId)!;
        const now = after.get(proxyId);
        proxyChangedNothing &&= now !== undefined && JSON.stringify(summarize(now, gateCase.main)) === JSON.stringify(summarize(was, gateCase.main));
        if (now) problems.push(...valueProblems(now, setDirectly.get(proxyId)));
        const need = triggerNeeded(gateCase.main, was, now);
        if (need) trigger = { ...need, recorded: jobs.get(proxyId) };
      }
      outcomes.push({ gateCase, batch, direct: directAnswers[i], proxy: proxyAnswers[i], effect, proxyChangedNothing, trigger, problems });
    });

    // The shared images serve every read case; the proxy side's must never change.
    const sharedNow = await readImages([shared.proxy.id]);
    const now = sharedNow.get(shared.proxy.id);
    if (!now || JSON.stringify(summarize(now, 'active')) !== JSON.stringify(summarize(shared.proxy, 'active'))) {
      sharedChanges.push(`during batch ${batch} (${batchCases.map((c) => c.key).join('; ').slice(0, 300)}...): ${now ? JSON.stringify(now) : 'deleted'}`);
      const [id] = await makeImages('active', 'proxy', 1);
      shared.proxy = (await readImages([id])).get(id)!;
    }
  }

  afterAll(async () => {
    // Every outcome, one JSON line each, for reading a failing run in full.
    const report = process.env.STX_GATE_REPORT;
    if (report) {
      const line = (o: Outcome) =>
        JSON.stringify({ case: `c${o.gateCase.index}`, key: o.gateCase.key, refusal: o.gateCase.refusal, valid: o.gateCase.valid, direct: o.direct, proxy: o.proxy, effect: o.effect, trigger: o.trigger, problems: o.problems });
      await writeFile(report, outcomes.map(line).join('\n') + '\n');
    }
    queue?.close();
    direct?.destroy();
    viaProxy?.destroy();
    await proxy?.stop();
    await glance?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  /** Fails with every offending case, grouped by family, when there is any. */
  function expectNone(what: string, offending: Array<{ gateCase: GateCase; detail: string }>): void {
    if (offending.length === 0) return;
    const byFamily = new Map<string, number>();
    for (const { gateCase } of offending) byFamily.set(gateCase.family, (byFamily.get(gateCase.family) ?? 0) + 1);
    const lines = offending.slice(0, 150).map(({ gateCase, detail }) => `  - [c${gateCase.index}] ${gateCase.key}\n      ${detail}`);
    throw new Error(
      `${offending.length} of ${outcomes.length} cases ${what}\n` +
        `by family: ${[...byFamily].map(([family, n]) => `${family} ${n}`).join(', ')}\n` +
        `${lines.join('\n')}${offending.length > lines.length ? `\n  ... and ${offending.length - lines.length} more` : ''}`,
    );
  }

  it('finds every spelling in the fixture reaching, on this Glance, what the fixture records', async () => {
    const stale: string[] = [];
    for (const spelling of ROUTE_SPELLINGS) {
      for (const route of ROUTE_NAMES) {
        if (!spellingApplies(spelling, route)) continue;
        const { segments, idIndex } = routeSegments(route, probeImage.id);
        const { target, accept } = spelling.spell({ segments, idIndex, otherId: shared.direct.id })!;
        const observed = await probeReach(route, target, accept);
        const recorded = reachOn(spelling, route);
        if (observed !== recorded) stale.push(`  ${spelling.name} on ${route}: recorded ${recorded}, observed ${observed} (${target})`);
      }
      if (spelling.httpParserRefuses) {
        const { target } = spelling.spell({ ...routeSegments('image', probeImage.id), otherId: shared.proxy.id })!;
        const answer = await send(viaProxy, { method: 'GET', target });
        if (statusOf(answer) !== 400) stale.push(`  ${spelling.name}: recorded that Node's parser refuses it, the proxy answered ${shown(answer)}`);
      }
    }
    if (stale.length) throw new Error(`test/fixtures/glance-route-spellings.ts no longer matches Glance:\n${stale.join('\n')}`);
  });

  /** What a spelled request reaches, told apart by a request on each route that changes nothing. */
  async function probeReach(route: RouteName, target: string, accept: string | undefined): Promise<Reach | string> {
    const headers: Array<[string, string]> = accept === undefined ? [] : [['Accept', accept]];
    const probes: Record<RouteName, { request: RawRequest; reached: (res: RawResponse) => boolean }> = {
      image: { request: { method: 'GET', target, headers }, reached: (res) => res.status === 200 && jsonOf(res)?.id === probeImage.id },
      file: { request: { method: 'GET', target, headers }, reached: (res) => res.status === 200 && res.body.equals(IMAGE_DATA) },
      images: { request: { method: 'GET', target, headers }, reached: (res) => res.status === 200 && Array.isArray(jsonOf(res)?.images) },
      schema: { request: { method: 'GET', target, headers }, reached: (res) => res.status === 200 && jsonOf(res)?.name === 'image' },
      // An active image can neither be staged nor imported, and its only copy cannot be deleted: each
      // route says so in its own words, and a wrong image id gets 404 instead.
      stage: {
        request: { method: 'PUT', target, headers: [...headers, ['Content-Type', 'application/octet-stream']], body: IMAGE_DATA },
        reached: (res) => res.status === 409 && res.text().includes('active to uploading'),
      },
      import: {
        request: { method: 'POST', target, headers: [...headers, ['Content-Type', 'application/json']], body: Buffer.from('{"method":{"name":"glance-direct"}}') },
        reached: (res) => res.status === 409 && res.text().includes('cannot be target for import'),
      },
      store: { request: { method: 'DELETE', target, headers }, reached: (res) => res.status === 403 && res.text().includes('only store') },
      cache: { request: { method: 'PUT', target, headers }, reached: (res) => res.status === 404 && res.text().includes('Caching via API is not supported') },
    };
    const { request, reached } = probes[route];
    const res = await direct.send(request);
    if (reached(res)) return 'route';
    if (res.status === 300) return 'versions';
    if (res.status === 200 && Array.isArray(jsonOf(res)?.versions)) return 'versions-index';
    if (res.status === 404 && res.text().includes('The resource could not be found.')) return 'no-route';
    if (res.status === 404 && /No image found|Failed to find image|Image .* not found/.test(res.text())) return 'other-image';
    if (res.status === 500) return 'server-error';
    return `${res.status} ${oneLine(res.text())}`;
  }

  it('judges at least 2,000 generated cases', () => {
    expect(outcomes).toHaveLength(cases.length);
    expect(cases.length).toBeGreaterThanOrEqual(2000);
  });

  it('never answers a request with a 5xx, nor leaves it without an answer', () => {
    expectNone(
      'got a 5xx or no answer from the proxy',
      outcomes.filter(({ proxy: answer }) => statusOf(answer) === undefined || statusOf(answer)! >= 500).map((o) => ({ gateCase: o.gateCase, detail: `proxy: ${shown(o.proxy)}` })),
    );
  });

  it('keeps the same process serving after every class of malformed request', () => {
    const malformed = new Set(cases.flatMap((gateCase) => (gateCase.malformed ? [gateCase.malformed] : [])));
    expect([...malformed].filter((name) => !classesRun.has(name))).toEqual([]);
    expect([...breakdowns].map(([what, times]) => `${times}× ${what}`)).toEqual([]);
  });

  it('leaves no invalid or forged StarlingX value in Glance through the proxy', async () => {
    expectNone(
      'left an invalid or forged value on the image they touched or created',
      outcomes.filter((o) => o.problems.length > 0).map((o) => ({ gateCase: o.gateCase, detail: `${o.problems.join('; ')} (proxy: ${shown(o.proxy)})` })),
    );
    // And on every image Glance holds, except those the suite made or changed directly.
    const found = (await listAll('')).filter((image) => !directSideIds.has(image.id) && image.stx_gate_side !== 'direct');
    const bad = found.flatMap((image) => valueProblems(image, setDirectly.get(image.id)).map((p) => `${image.id} (${image.stx_gate_case ?? 'no case'}): ${p}`));
    expect(bad).toEqual([]);
    expect(sharedChanges).toEqual([]);
    expect(found.length).toBeGreaterThan(0);
  });

  it('records a raw-cache job for every image whose data or cache_raw changed through the proxy', () => {
    const needed = outcomes.filter((o) => o.trigger);
    expect(needed.length).toBeGreaterThan(0);
    expectNone(
      'changed an image through the proxy without the raw-cache job it needs',
      needed
        .filter(({ trigger }) => trigger!.recorded === undefined || (trigger!.reason !== undefined && trigger!.recorded !== trigger!.reason))
        .map((o) => ({
          gateCase: o.gateCase,
          detail: `${o.trigger!.change}: expected a ${o.trigger!.reason ?? 'any'} job, the queue holds ${o.trigger!.recorded ?? 'none'} (proxy: ${shown(o.proxy)})`,
        })),
    );
  });

  it('lets through every request Glance alone serves correctly, but for the deliberate refusals', () => {
    expectNone(
      'are served by Glance alone (2xx, valid values) but not through the proxy',
      outcomes
        .filter((o) => o.gateCase.valid && o.gateCase.refusal === undefined && is2xx(o.direct) && !is2xx(o.proxy))
        .map((o) => ({ gateCase: o.gateCase, detail: `Glance alone: ${shown(o.direct)}; proxy: ${shown(o.proxy)}` })),
    );
  });

  function answeredAsDocumented({ gateCase, direct: alone, proxy: answer }: Outcome): boolean {
    const rule = DELIBERATE_REFUSALS[gateCase.refusal!];
    const status = statusOf(answer) ?? 0;
    if (rule.statuses.includes(status)) return true;
    if (!rule.orAsCanonical) return false;
    // Handled as the canonical request: served, answered as Glance answers that request, or one of
    // the proxy's own refusals of a StarlingX value.
    return is2xx(answer) || status === statusOf(alone) || (!gateCase.valid && (status === 400 || status === 403));
  }

  it('answers every deliberate refusal as documented', () => {
    expectNone(
      'are deliberate refusals answered otherwise',
      outcomes
        .filter((o) => o.gateCase.refusal !== undefined && !answeredAsDocumented(o))
        .map((o) => ({
          gateCase: o.gateCase,
          detail: `${o.gateCase.refusal}: expected ${DELIBERATE_REFUSALS[o.gateCase.refusal!].statuses.join(' or ')}, proxy: ${shown(o.proxy)}`,
        })),
    );
  });

  it('makes Glance do through the proxy what it does alone with the same request, or nothing', () => {
    const differing = outcomes.flatMap((o) => {
      const detail = (why: string) => [{ gateCase: o.gateCase, detail: `${why} (Glance alone: ${shown(o.direct)}; proxy: ${shown(o.proxy)})` }];
      if (!is2xx(o.proxy)) {
        if (!o.proxyChangedNothing) return detail(`refused, yet Glance changed: ${JSON.stringify(o.effect.proxy).slice(0, 400)}`);
        // The versions document is Glance's answer to a version it does not know; the proxy forwards it.
        if (statusOf(o.direct) === 300 && !o.gateCase.oracle && statusOf(o.proxy) !== 300) return detail('Glance alone answers its versions document');
        return [];
      }
      if (!is2xx(o.direct)) return detail(`served through the proxy, refused by Glance alone${o.gateCase.oracle ? ` (asked ${o.gateCase.oracle.why})` : ''}`);
      const alone = JSON.stringify(o.effect.direct);
      const through = JSON.stringify(o.effect.proxy);
      return alone === through ? [] : detail(`different effect:\n        alone:   ${alone.slice(0, 500)}\n        through: ${through.slice(0, 500)}`);
    });
    expectNone('made Glance do something else through the proxy', differing);
  });

  describe('after each class of malformed request, the same proxy process serves a plain one', () => {
    let pid: number;
    let target: Image;

    beforeEach(async () => {
      // A proxy that an earlier request ended is replaced, so that each class is judged on its own.
      const plain = await send(viaProxy, { method: 'GET', target: `/v2/images/${shared.proxy.id}`, headers: [JSON_ACCEPT] });
      if (statusOf(plain) !== 200 || proxyExited) await checkProxyServes('an earlier malformed request');
      pid = proxy.pid;
      const [id] = await makeImages('queued', 'proxy', 1);
      target = (await readImages([id])).get(id)!;
    });

    /** [class, request, builder]: the classes of the generated cases, and two only Node's parser sees. */
    const MALFORMED: ReadonlyArray<readonly [string, string, (id: string, other: string) => RawRequest]> = [
      ['invalid UTF-8 path', 'the truncated escape %E0%A4%A as an image id', () => ({ method: 'GET', target: '/v2/images/%E0%A4%A' })],
      ['invalid UTF-8 path', '%E0%A4%A after an image id, on DELETE', (id) => ({ method: 'DELETE', target: `/v2/images/${id}%E0%A4%A` })],
      ['invalid UTF-8 path', 'an overlong slash %C0%AF', (id) => ({ method: 'DELETE', target: `/v2/images%C0%AF${id}` })],
      ['invalid UTF-8 path', 'a lone % and %ZZ', () => ({ method: 'GET', target: '/v2/images/%ZZ%' })],
      ['non-UUID image id', 'an id with a trailing %20, on DELETE', (id) => ({ method: 'DELETE', target: `/v2/images/${id}%20` })],
      ['dot segments and fragments', 'a fragment after the id, on DELETE', (id) => ({ method: 'DELETE', target: `/v2/images/${id}#x` })],
      ['dot segments and fragments', 'dot-dot through another image, on DELETE', (id, other) => ({ method: 'DELETE', target: `/v2/images/${other}/../${id}` })],
      ['unknown paths and versions', 'an unknown version, on DELETE', (id) => ({ method: 'DELETE', target: `/v3/images/${id}` })],
      ['absolute-form and non-origin-form targets', 'an absolute-form target, on DELETE', (id) => ({ method: 'DELETE', target: `http://127.0.0.1/v2/images/${id}` })],
      ['absolute-form and non-origin-form targets', 'no leading slash, on DELETE', (id) => ({ method: 'DELETE', target: `v2/images/${id}` })],
      ['absolute-form and non-origin-form targets', 'raw non-ASCII bytes in the path', (id) => ({ method: 'GET', target: `/v2/images/${id}\u00ff` })],
      ['method override junk', '_method with a NUL', (id) => ({ method: 'GET', target: `/v2/images/${id}?_method=DELETE%00` })],
      ['method override junk', '_method as a truncated escape', (id) => ({ method: 'GET', target: `/v2/images/${id}?_method=%E0%A4%A` })],
      [
        'method override junk',
        'a non-ASCII _method creating an invalid value',
        () => ({ method: 'GET', target: '/v2/images?_method=po%C5%BFt', headers: [['Content-Type', 'application/json']], body: Buffer.from('{"name":"gate","cache_raw":"maybe"}') }),
      ],
      [
        'form bodies',
        'a multipart form naming DELETE',
        (id) => ({
          method: 'POST',
          target: `/v2/images/${id}`,
          headers: [['Content-Type', 'multipart/form-data; boundary=b']],
          body: Buffer.from('--b\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--b--\r\n'),
        }),
      ],
      ['form bodies', 'a form in latin-1', (id) => ({ method: 'POST', target: `/v2/images/${id}`, headers: [['Content-Type', 'application/x-www-form-urlencoded; charset=latin-1']], body: Buffer.from('_method=DELETE') })],
      [
        'content encodings',
        'Content-Encoding gzip on a plain JSON create body with an invalid value',
        () => ({ method: 'POST', target: '/v2/images', headers: [['Content-Type', 'application/json'], ['Content-Encoding', 'gzip']], body: Buffer.from('{"name":"gate","cache_raw":"maybe"}') }),
      ],
      ['malformed JSON bodies', 'a truncated create body', () => ({ method: 'POST', target: '/v2/images', headers: [['Content-Type', 'application/json']], body: Buffer.from('{"cache_raw":') })],
      [
        'malformed JSON bodies',
        'invalid UTF-8 in a patch',
        (id) => ({ method: 'PATCH', target: `/v2/images/${id}`, headers: [['Content-Type', PATCH_V21]], body: Buffer.from([0x5b, 0xff, 0x5d]) }),
      ],
      ['JSON bodies Glance fails on or over the limits', 'an empty array as a create body', () => ({ method: 'POST', target: '/v2/images', headers: [['Content-Type', 'application/json']], body: Buffer.from('[]') })],
      [
        'JSON bodies Glance fails on or over the limits',
        'a create body nested 100 000 deep',
        () => ({ method: 'POST', target: '/v2/images', headers: [['Content-Type', 'application/json']], body: Buffer.from(`{"x":${'['.repeat(100_000)}${']'.repeat(100_000)}}`) }),
      ],
      [
        'JSON bodies Glance fails on or over the limits',
        'a create body over limits.max_json_request (16 MiB)',
        () => ({ method: 'POST', target: '/v2/images', headers: [['Content-Type', 'application/json']], body: Buffer.from(`{"name":"gate","x":"${'x'.repeat(17 * 1024 * 1024)}"}`) }),
      ],
      [
        'transfer framing',
        'a chunked body with a chunk size that is not hex',
        () => ({ method: 'POST', target: '/v2/images', headers: [['Content-Type', 'application/json'], ['Transfer-Encoding', 'chunked']], body: Buffer.from('zz\r\n{}\r\n0\r\n\r\n') }),
      ],
      ['headers', 'a header value with a control character', (id) => ({ method: 'GET', target: `/v2/images/${id}`, headers: [['X-Gate', 'a\u0001b']] })],
    ];

    it.each(MALFORMED)('%s: %s', async (_class, _label, build) => {
      const answer = await send(viaProxy, build(target.id, shared.proxy.id));
      const plain = await send(viaProxy, { method: 'GET', target: `/v2/images/${target.id}`, headers: [JSON_ACCEPT] });
      const below500 = statusOf(answer) !== undefined && statusOf(answer)! < 500;
      expect({
        malformed: below500 ? 'answered below 500' : shown(answer),
        thenPlainShow: statusOf(plain) ?? shown(plain),
        sameProcess: proxy.pid === pid && !proxyExited,
      }).toEqual({ malformed: 'answered below 500', thenPlainShow: 200, sameProcess: true });
      // A malformed request never deletes or changes the image it names.
      const now = (await readImages([target.id])).get(target.id);
      expect(now && summarize(now, 'queued')).toEqual(summarize(target, 'queued'));
    });
  });
});
