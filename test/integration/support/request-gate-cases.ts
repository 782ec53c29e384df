import { gzipSync } from 'node:zlib';
import {
  ROUTE_SPELLINGS,
  reachOn,
  routeSegments,
  spellingApplies,
  type Reach,
  type RouteName,
  type RouteSpelling,
} from '../../fixtures/glance-route-spellings';
import type { RawRequest } from './raw-http';

/**
 * The cases of test/integration/request-gate.test.ts: every way the suite spells a request to the
 * image API (route spellings × methods and overrides × bodies × headers × encodings), each built for
 * the images of one side (Glance directly, or the proxy) and labelled with what it means.
 * Pure: nothing here talks to a server.
 */

/** What a case's target image is before the request (the suite makes a fresh one per case and side). */
export type ImageKind =
  /** created, no data */
  | 'queued'
  /** with data in the default store */
  | 'active'
  /** active, cache_raw True and the raw-cache fields a worker writes (set directly on Glance) */
  | 'cached'
  /** data staged for a glance-direct import (status uploading) */
  | 'staged'
  /** active, with data in the default store and in the second one */
  | 'two-store';

/**
 * Requests the proxy answers itself on purpose, although Glance alone would act on them or would
 * answer otherwise; the test file lists each with its reason and the answer the proxy owes.
 */
export type RefusalClass =
  | 'invalid-utf8-path'
  | 'non-uuid-image-id'
  | 'unknown-v2-path'
  | 'not-origin-form'
  | 'config-dependent-version'
  | 'multipart-form'
  | 'form-charset'
  | 'form-override-on-body-rejecting-route'
  | 'non-ascii-method-override'
  | 'content-encoding'
  | 'glance-500-body'
  | 'create-id-not-uuid'
  | 'reserved-property'
  | 'json-limits';

/** Families of malformed input: the suite checks the proxy still serves after each one. */
export type MalformedClass =
  | 'invalid UTF-8 path'
  | 'non-UUID image id'
  | 'dot segments and fragments'
  | 'unknown paths and versions'
  | 'absolute-form and non-origin-form targets'
  | 'method override junk'
  | 'form bodies'
  | 'content encodings'
  | 'malformed JSON bodies'
  | 'JSON bodies Glance fails on or over the limits';

/** What a case is built from on one side. */
export interface Targets {
  /** The image the request is about: a fresh one of the case's kind, or the side's shared active image. */
  id: string;
  /** Another existing image (the side's shared one) for spellings that pass through it. */
  otherId: string;
  /** JSON members that tag an image the request creates: run, batch, case and side. */
  marker: string;
  /** A new random image id for create bodies that choose their own. */
  newId: string;
}

export interface GateCase {
  index: number;
  /** Unique and readable: family | variant | operation. */
  key: string;
  family: string;
  malformed?: MalformedClass;
  /** The fresh image the case needs on each side; none means the side's shared image (or no image). */
  main?: ImageKind;
  /** What the client sends, to the proxy and (unless `oracle` says otherwise) to Glance alone. */
  request(t: Targets): RawRequest;
  /**
   * What Glance alone is asked instead, when this Glance cannot stand for what the request means
   * (an upper-case id is the same image on MySQL; a JSON integer is a value Glance's schema refuses
   * but the proxy stores as its canonical string).
   */
  oracle?: { request(t: Targets): RawRequest; why: string };
  /** Every extension value in it is valid and nothing read-only is written. */
  valid: boolean;
  refusal?: RefusalClass;
}

type Header = readonly [string, string];

export const PATCH_V21 = 'application/openstack-images-v2.1-json-patch';
export const IMAGE_DATA = Buffer.from('stx-gate image data, 32 bytes!!\n');

/** An operation as a client means it, on its canonical route. */
interface Operation {
  name: string;
  route: RouteName;
  method: string;
  main?: ImageKind;
  headers?: readonly Header[];
  body?: (t: Targets) => Buffer;
  valid: boolean;
}

const json = (text: string) => (t: Targets) => Buffer.from(fillTemplate(text, t), 'utf8');

/** `@M@` becomes the marker members, `@ID@` the new image id, `@IDUPPER@` the same in upper case. */
export function fillTemplate(text: string, t: Targets): string {
  return text.replace(/@M@/g, t.marker).replace(/@IDUPPER@/g, t.newId.toUpperCase()).replace(/@ID@/g, t.newId);
}

const JSON_TYPE: Header = ['Content-Type', 'application/json'];
const PATCH_TYPE: Header = ['Content-Type', PATCH_V21];
const OCTET_TYPE: Header = ['Content-Type', 'application/octet-stream'];

const CREATE_VALID = '{@M@"name":"gate","disk_format":"raw","container_format":"bare","cache_raw":"true","hw_wrs_live_migration_timeout":"400"}';
const CREATE_INVALID = '{@M@"name":"gate","cache_raw":"maybe"}';
const CREATE_FORGED = '{@M@"name":"gate","cache_raw_status":"Cached","store":"rbd"}';
const PATCH_ON = '[{"op":"add","path":"/cache_raw","value":"true"}]';
const PATCH_INVALID = '[{"op":"add","path":"/hw_wrs_live_migration_timeout","value":"119"}]';
const PATCH_FORGED = '[{"op":"add","path":"/cache_raw_url","value":"rbd://forged/images/x/snap"}]';
const IMPORT_BODY = '{"method":{"name":"glance-direct"}}';

/** The operations every route spelling is tried with. */
const OPERATIONS: readonly Operation[] = [
  { name: 'show', route: 'image', method: 'GET', valid: true },
  { name: 'download', route: 'file', method: 'GET', valid: true },
  { name: 'list', route: 'images', method: 'GET', valid: true },
  { name: 'schema', route: 'schema', method: 'GET', valid: true },
  { name: 'create', route: 'images', method: 'POST', headers: [JSON_TYPE], body: json(CREATE_VALID), valid: true },
  { name: 'create with an invalid value', route: 'images', method: 'POST', headers: [JSON_TYPE], body: json(CREATE_INVALID), valid: false },
  { name: 'create with forged read-only values', route: 'images', method: 'POST', headers: [JSON_TYPE], body: json(CREATE_FORGED), valid: false },
  { name: 'update turning cache_raw on', route: 'image', method: 'PATCH', main: 'active', headers: [PATCH_TYPE], body: json(PATCH_ON), valid: true },
  { name: 'update with an invalid value', route: 'image', method: 'PATCH', main: 'queued', headers: [PATCH_TYPE], body: json(PATCH_INVALID), valid: false },
  { name: 'update forging cache_raw_url', route: 'image', method: 'PATCH', main: 'queued', headers: [PATCH_TYPE], body: json(PATCH_FORGED), valid: false },
  { name: 'delete', route: 'image', method: 'DELETE', main: 'queued', valid: true },
  { name: 'upload', route: 'file', method: 'PUT', main: 'queued', headers: [OCTET_TYPE], body: () => IMAGE_DATA, valid: true },
  { name: 'stage', route: 'stage', method: 'PUT', main: 'queued', headers: [OCTET_TYPE], body: () => IMAGE_DATA, valid: true },
  { name: 'import', route: 'import', method: 'POST', main: 'staged', headers: [JSON_TYPE], body: json(IMPORT_BODY), valid: true },
  { name: 'delete from a store', route: 'store', method: 'DELETE', main: 'two-store', valid: true },
  { name: 'queue for the image cache', route: 'cache', method: 'PUT', valid: true },
];

const op = (name: string): Operation => {
  const found = OPERATIONS.find((candidate) => candidate.name === name);
  if (!found) throw new Error(`no operation ${name}`);
  return found;
};

/** Operations that cost a two-store image or an import, tried with two spellings of each family. */
const COSTLY = new Set(['stage', 'import', 'delete from a store']);
/** Forged updates cost an image each and are tried with every body and override below instead. */
const NOT_SPELLED = new Set(['update forging cache_raw_url']);

function canonicalTarget(route: RouteName, id: string): string {
  return `/v2/${routeSegments(route, id).segments.join('/')}`;
}

function spelled(spelling: RouteSpelling, route: RouteName, t: Targets) {
  const { segments, idIndex } = routeSegments(route, t.id);
  return spelling.spell({ segments, idIndex, otherId: t.otherId });
}

function operationRequest(operation: Operation, t: Targets, target = canonicalTarget(operation.route, t.id), extra: readonly Header[] = []): RawRequest {
  return { method: operation.method, target, headers: [...(operation.headers ?? []), ...extra], body: operation.body?.(t) };
}

/** Collects cases, numbering them and refusing duplicate keys. */
class CaseList {
  readonly cases: GateCase[] = [];
  private readonly keys = new Set<string>();

  add(entry: Omit<GateCase, 'index'>): void {
    if (this.keys.has(entry.key)) throw new Error(`duplicate case ${entry.key}`);
    this.keys.add(entry.key);
    this.cases.push({ ...entry, index: this.cases.length });
  }
}

const REACH_MALFORMED: Partial<Record<Reach, MalformedClass>> = {
  'server-error': 'invalid UTF-8 path',
  'no-route': 'unknown paths and versions',
  versions: 'unknown paths and versions',
};

function spellingMalformed(spelling: RouteSpelling, reach: Reach): MalformedClass | undefined {
  if (spelling.httpParserRefuses || spelling.family === 'absolute-form target') return 'absolute-form and non-origin-form targets';
  if (spelling.family === 'dot segments' || spelling.family === 'fragment') return 'dot segments and fragments';
  if (reach === 'other-image' && !spelling.caseInsensitiveDatabase) return 'non-UUID image id';
  return REACH_MALFORMED[reach];
}

function spellingRefusal(spelling: RouteSpelling, reach: Reach): RefusalClass | undefined {
  if (spelling.httpParserRefuses) return 'not-origin-form';
  if (spelling.configDependent) return 'config-dependent-version';
  if (reach === 'server-error') return 'invalid-utf8-path';
  if (reach === 'other-image' && !spelling.caseInsensitiveDatabase) return 'non-uuid-image-id';
  if (reach === 'no-route') return 'unknown-v2-path';
  return undefined;
}

/** Route spellings × operations: every spelling of the fixture on every route it applies to. */
function addSpellingCases(list: CaseList): void {
  const costlySpellings = new Set<string>();
  const perFamily = new Map<string, number>();
  for (const spelling of ROUTE_SPELLINGS) {
    const seen = perFamily.get(spelling.family) ?? 0;
    if (seen < 2) costlySpellings.add(spelling.name);
    perFamily.set(spelling.family, seen + 1);
  }
  for (const spelling of ROUTE_SPELLINGS) {
    for (const operation of OPERATIONS) {
      if (NOT_SPELLED.has(operation.name) || (COSTLY.has(operation.name) && !costlySpellings.has(spelling.name))) continue;
      if (!spellingApplies(spelling, operation.route)) continue;
      const reach = reachOn(spelling, operation.route);
      // Glance alone is asked the canonical spelling where this Glance's database or configuration
      // cannot stand for what the spelling means on others.
      const oracle: GateCase['oracle'] =
        spelling.caseInsensitiveDatabase || spelling.configDependent
          ? {
              request: (t) => operationRequest(operation, t),
              why: spelling.caseInsensitiveDatabase
                ? 'MySQL and MariaDB find the image under any letter case; ids are canonical (lower case)'
                : 'a Glance with an image cache accepts this version token',
            }
          : undefined;
      list.add({
        key: `spelling | ${spelling.name} | ${operation.name}`,
        family: `route spelling: ${spelling.family}`,
        malformed: spellingMalformed(spelling, reach),
        main: operation.main,
        request: (t) => {
          const { target, accept } = spelled(spelling, operation.route, t)!;
          return operationRequest(operation, t, target, accept === undefined ? [] : [['Accept', accept]]);
        },
        oracle,
        valid: operation.valid,
        refusal: spellingRefusal(spelling, reach),
      });
    }
  }
}

/** A `_method` override: the query the client adds and what Glance makes of it. */
interface OverrideSpelling {
  name: string;
  query: (method: string) => string | undefined;
  /** Glance routes by the carrier's own method: the override is not one to Routes. */
  ignored?: true;
  refusal?: RefusalClass;
}

const OVERRIDES: readonly OverrideSpelling[] = [
  { name: '_method=M', query: (m) => `_method=${m}` },
  { name: 'lower case', query: (m) => `_method=${m.toLowerCase()}` },
  { name: 'a letter percent-encoded', query: (m) => `_method=${m.slice(0, -1)}%${m.charCodeAt(m.length - 1).toString(16).toUpperCase()}` },
  { name: 'after another parameter', query: (m) => `x=1&_method=${m}` },
  { name: 'last of two wins', query: (m) => `_method=GET&_method=${m}` },
  { name: 'separated by a semicolon', query: (m) => `_method=GET;_method=${m}` },
  { name: 'before another parameter', query: (m) => `_method=${m}&limit=1` },
  { name: 'next to a name that only contains _method', query: (m) => `x_method=1&_method=${m}` },
  { name: 'every letter percent-encoded', query: (m) => `_method=${[...m].map((c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`).join('')}` },
  // The raw query only has to contain `_method` somewhere; the name that counts is the decoded one.
  { name: 'an encoded name, _method only in another value', query: (m) => `x=_method&%5Fmethod=${m}` },
  // Python's str.upper(): 'ſ' (U+017F) is 'S' and 'ﬅ' (U+FB05) is 'ST'.
  { name: 'long s (U+017F)', query: (m) => (m === 'POST' ? '_method=po%C5%BFt' : undefined), refusal: 'non-ascii-method-override' },
  { name: 'ligature st (U+FB05)', query: (m) => (m === 'POST' ? '_method=po%EF%AC%85' : undefined), refusal: 'non-ascii-method-override' },
  { name: 'ligature st (U+FB06)', query: (m) => (m === 'POST' ? '_method=po%EF%AC%86' : undefined), refusal: 'non-ascii-method-override' },
  // Routes only looks for an override when the raw query contains `_method`.
  { name: 'encoded name _me%74hod', query: (m) => `_me%74hod=${m}`, ignored: true },
  { name: 'encoded underscore %5Fmethod', query: (m) => `%5Fmethod=${m}`, ignored: true },
  { name: 'only x_method', query: (m) => `x_method=${m}`, ignored: true },
  { name: 'empty value', query: () => '_method=', ignored: true },
  { name: 'leading plus (a space)', query: (m) => `_method=+${m}`, ignored: true },
  { name: 'trailing %0A', query: (m) => `_method=${m}%0A`, ignored: true },
  { name: 'trailing NUL', query: (m) => `_method=${m}%00`, ignored: true },
  { name: 'a name with a trailing space', query: (m) => `_method+=${m}`, ignored: true },
  { name: 'the name in upper case', query: (m) => `_METHOD=${m}`, ignored: true },
  { name: 'emptied by a later one', query: (m) => `_method=${m}&_method=`, ignored: true },
  { name: 'a raw # in the value', query: (m) => `_method=${m}#x`, ignored: true },
  // WebOb cannot decode the query, so Routes finds no override at all.
  { name: 'invalid UTF-8 in the value', query: (m) => `_method=${m.slice(0, 2)}%FF${m.slice(2)}`, ignored: true },
  { name: 'invalid UTF-8 elsewhere in the query', query: (m) => `_method=${m}&x=%FF`, ignored: true },
];

const CARRIERS = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'HEAD', 'OPTIONS'];

const OVERRIDDEN_OPERATIONS = [
  'show',
  'list',
  'create',
  'create with an invalid value',
  'create with forged read-only values',
  'update turning cache_raw on',
  'update with an invalid value',
  'update forging cache_raw_url',
  'delete',
  'upload',
  'import',
  'delete from a store',
];

/** The operations every spelling of an override is tried with (the carriers are tried with all). */
const OVERRIDE_SPELLED_OPERATIONS = new Set(['show', 'create', 'create with an invalid value', 'update with an invalid value', 'update turning cache_raw on', 'delete', 'upload', 'import']);

/** Spellings also tried with a plain override, beyond the canonical one. */
const OVERRIDE_ROUTE_SPELLINGS = ['every slash doubled', 'version token and trailing %0A', 'Accept vnd v2.1, no version in the path'];

function withQuery(target: string, query: string): string {
  return `${target}${target.includes('?') ? '&' : '?'}${query}`;
}

/** Method overrides × operations: `?_method=` with every carrier and spelling, and form bodies. */
function addOverrideCases(list: CaseList): void {
  for (const name of OVERRIDDEN_OPERATIONS) {
    const operation = op(name);
    const m = operation.method;
    const carriers = CARRIERS.filter((carrier) => carrier !== m);
    for (const carrier of carriers) {
      list.add({
        key: `override | ${carrier} ?_method=${m} | ${operation.name}`,
        family: 'method override',
        main: operation.main,
        request: (t) => {
          const request = operationRequest(operation, t);
          return { ...request, method: carrier, target: withQuery(request.target, `_method=${m}`) };
        },
        valid: operation.valid,
      });
    }
    // One carrier for the other spellings: GET for a POST, PUT for a GET, POST for the rest.
    const carrier = m === 'GET' ? 'PUT' : m === 'POST' ? 'GET' : 'POST';
    for (const override of OVERRIDES.slice(1)) {
      if (!OVERRIDE_SPELLED_OPERATIONS.has(operation.name)) break;
      const query = override.query(m);
      if (query === undefined) continue;
      const carriersHere = override.refusal ? ['GET', 'PUT'] : [carrier];
      for (const via of carriersHere) {
        list.add({
          key: `override | ${via} ${override.name} (${query}) | ${operation.name}`,
          family: 'method override',
          malformed: override.ignored || override.refusal ? 'method override junk' : undefined,
          main: operation.main,
          request: (t) => {
            const request = operationRequest(operation, t);
            return { ...request, method: via, target: withQuery(request.target, query) };
          },
          valid: operation.valid,
          refusal: override.refusal,
        });
      }
    }
    for (const spellingName of OVERRIDE_ROUTE_SPELLINGS) {
      const spelling = ROUTE_SPELLINGS.find((candidate) => candidate.name === spellingName)!;
      list.add({
        key: `override | ${carrier} ?_method=${m} spelled ${spelling.name} | ${operation.name}`,
        family: 'method override',
        main: operation.main,
        request: (t) => {
          const { target, accept } = spelled(spelling, operation.route, t)!;
          const request = operationRequest(operation, t, target, accept === undefined ? [] : [['Accept', accept]]);
          return { ...request, method: carrier, target: withQuery(request.target, `_method=${m}`) };
        },
        valid: operation.valid,
      });
    }
  }
}

const FORM = 'application/x-www-form-urlencoded';

/** POSTed forms whose body carries `_method` (Routes reads it when the query has no `_method`). */
function addFormCases(list: CaseList): void {
  const forms: ReadonlyArray<{ name: string; operation: string; body: string; type: string; query?: string; refusal?: RefusalClass; oracle?: boolean }> = [
    // Glance refuses a body on these routes (400), after routing by the form's method.
    { name: 'form _method=DELETE', operation: 'delete', body: '_method=DELETE', type: FORM, refusal: 'form-override-on-body-rejecting-route', oracle: true },
    { name: 'form _method=delete, charset utf-8', operation: 'delete', body: '_method=delete', type: `${FORM}; charset=utf-8`, refusal: 'form-override-on-body-rejecting-route', oracle: true },
    { name: 'form type in upper case', operation: 'delete', body: 'x=1&_method=DELETE', type: FORM.toUpperCase(), refusal: 'form-override-on-body-rejecting-route', oracle: true },
    { name: 'form _method=DELETE on a store', operation: 'delete from a store', body: '_method=DELETE', type: FORM, refusal: 'form-override-on-body-rejecting-route', oracle: true },
    { name: 'form _method=GET', operation: 'show', body: '_method=GET', type: FORM, refusal: 'form-override-on-body-rejecting-route', oracle: true },
    { name: 'form _method=GET on the list', operation: 'list', body: '_method=GET', type: FORM },
    // Glance refuses the form's media type on these (415).
    { name: 'form _method=PUT for an upload', operation: 'upload', body: '_method=PUT', type: FORM },
    { name: 'form _method=PATCH', operation: 'update with an invalid value', body: '_method=PATCH&[{"op":"add","path":"/cache_raw","value":"maybe"}]', type: FORM },
    // A query that contains `_method` keeps Routes from reading the form at all.
    { name: 'form _method=DELETE under a query naming x_method', operation: 'delete', body: '_method=DELETE', type: FORM, query: 'x_method=1' },
    { name: 'multipart form _method=DELETE', operation: 'delete', body: '--b\r\nContent-Disposition: form-data; name="_method"\r\n\r\nDELETE\r\n--b--\r\n', type: 'multipart/form-data; boundary=b', refusal: 'multipart-form' },
    { name: 'multipart form on create', operation: 'create with an invalid value', body: '--b\r\nContent-Disposition: form-data; name="x"\r\n\r\n1\r\n--b--\r\n', type: 'multipart/form-data; boundary=b', refusal: 'multipart-form' },
    { name: 'form in latin-1', operation: 'delete', body: '_method=DELETE', type: `${FORM}; charset=latin-1`, refusal: 'form-charset' },
    { name: 'form in latin-1 on create', operation: 'create with an invalid value', body: '{"name":"gate","cache_raw":"maybe"}', type: `${FORM}; charset=iso-8859-1`, refusal: 'form-charset' },
    { name: 'form with a percent-encoded _method name', operation: 'delete', body: '%5Fmethod=DELETE', type: FORM, refusal: 'form-override-on-body-rejecting-route', oracle: true },
  ];
  for (const form of forms) {
    const operation = op(form.operation);
    list.add({
      key: `form | ${form.name} | ${operation.name}`,
      family: 'form override',
      malformed: 'form bodies',
      main: operation.main,
      request: (t) => {
        const target = canonicalTarget(operation.route, t.id);
        return { method: 'POST', target: form.query ? withQuery(target, form.query) : target, headers: [['Content-Type', form.type]], body: Buffer.from(form.body) };
      },
      oracle: form.oracle ? { request: (t) => operationRequest(operation, t), why: 'the route the form names, without the form Glance refuses there' } : undefined,
      valid: operation.valid,
      refusal: form.refusal,
    });
  }
}

type Verdict = 'valid' | 'invalid';

interface BodyCase {
  name: string;
  body: string | ((t: Targets) => Buffer);
  verdict: Verdict;
  /** What means the same to Glance alone, when its schema refuses the form the client used. */
  oracle?: string;
  refusal?: RefusalClass;
  malformed?: MalformedClass;
  /** The image an update needs (queued unless said). */
  main?: ImageKind;
}

const deep = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`;

const CREATE_BODIES: readonly BodyCase[] = [
  { name: 'cache_raw "True"', body: '{@M@"name":"gate","cache_raw":"True"}', verdict: 'valid' },
  { name: 'lower-case "true" and upper-case "FALSE"', body: '{@M@"name":"gate","cache_raw":"true","sw_wrs_auto_recovery":"FALSE"}', verdict: 'valid' },
  { name: 'timeout and downtime', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":"400","hw_wrs_live_migration_max_downtime":"500"}', verdict: 'valid' },
  { name: 'timeout 0', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":"0"}', verdict: 'valid' },
  { name: 'timeout 800 and downtime 100', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":"800","hw_wrs_live_migration_max_downtime":"100"}', verdict: 'valid' },
  { name: 'timeout with spaces, a sign and leading zeros', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":" +0120 "}', verdict: 'valid' },
  { name: 'JSON true', body: '{@M@"name":"gate","cache_raw":true}', verdict: 'valid', oracle: '{@M@"name":"gate","cache_raw":"True"}' },
  { name: 'JSON false', body: '{@M@"name":"gate","sw_wrs_auto_recovery":false}', verdict: 'valid', oracle: '{@M@"name":"gate","sw_wrs_auto_recovery":"False"}' },
  {
    name: 'JSON integers',
    body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":800,"hw_wrs_live_migration_max_downtime":100}',
    verdict: 'valid',
    oracle: '{@M@"name":"gate","hw_wrs_live_migration_timeout":"800","hw_wrs_live_migration_max_downtime":"100"}',
  },
  { name: 'key with a \\u escape', body: '{@M@"name":"gate","cache\\u005fraw":"True"}', verdict: 'valid' },
  { name: 'value with \\u escapes', body: '{@M@"name":"gate","cache_raw":"\\u0054ru\\u0065"}', verdict: 'valid' },
  { name: 'duplicate key, the valid one last', body: '{@M@"name":"gate","cache_raw":"maybe","cache_raw":"True"}', verdict: 'valid' },
  { name: 'escaped duplicate key, the valid one last', body: '{@M@"name":"gate","cache\\u005fraw":"maybe","cache_raw":"False"}', verdict: 'valid' },
  { name: 'whitespace around the document', body: ' \r\n\t{@M@"name":"gate","cache_raw":"True"}\n ', verdict: 'valid' },
  { name: 'no extension property', body: '{@M@"name":"gate","disk_format":"qcow2","container_format":"bare"}', verdict: 'valid' },
  { name: 'its own image id', body: '{@M@"name":"gate","id":"@ID@","cache_raw":"False"}', verdict: 'valid' },
  { name: 'its own image id in upper case', body: '{@M@"name":"gate","id":"@IDUPPER@"}', verdict: 'valid', oracle: '{@M@"name":"gate","id":"@ID@"}' },
  { name: 'tags and Glance attributes', body: '{@M@"name":"gate","tags":["x"],"min_ram":1,"visibility":"private","sw_wrs_auto_recovery":"True"}', verdict: 'valid' },
  { name: 'names that only look like extension properties', body: '{@M@"name":"gate","Cache_Raw":"maybe","cache_raw_x":"maybe","xcache_raw":"maybe"}', verdict: 'valid' },
  { name: 'non-ASCII name', body: '{@M@"name":"gate-\\u00e9\\ud83d\\ude00","cache_raw":"True"}', verdict: 'valid' },
  { name: 'timeout in \\u-escaped digits', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":"\\u0034\\u0030\\u0030"}', verdict: 'valid' },
  // Python reads -0 as the integer 0 and big integers exactly; JavaScript numbers would not.
  { name: 'timeout JSON -0', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":-0}', verdict: 'valid', oracle: '{@M@"name":"gate","hw_wrs_live_migration_timeout":"0"}' },
  {
    name: 'downtime as a 24-digit JSON integer',
    body: '{@M@"name":"gate","hw_wrs_live_migration_max_downtime":100000000000000000000001}',
    verdict: 'valid',
    oracle: '{@M@"name":"gate","hw_wrs_live_migration_max_downtime":"100000000000000000000001"}',
  },
  { name: 'downtime as a 24-digit string', body: '{@M@"name":"gate","hw_wrs_live_migration_max_downtime":"100000000000000000000001"}', verdict: 'valid' },

  { name: 'cache_raw "maybe"', body: '{@M@"name":"gate","cache_raw":"maybe"}', verdict: 'invalid' },
  { name: 'cache_raw ""', body: '{@M@"name":"gate","cache_raw":""}', verdict: 'invalid' },
  { name: 'cache_raw null', body: '{@M@"name":"gate","cache_raw":null}', verdict: 'invalid' },
  { name: 'cache_raw with a trailing newline', body: '{@M@"name":"gate","cache_raw":"True\\n"}', verdict: 'invalid' },
  { name: 'cache_raw with a leading space', body: '{@M@"name":"gate","cache_raw":" True"}', verdict: 'invalid' },
  { name: 'cache_raw 1', body: '{@M@"name":"gate","cache_raw":1}', verdict: 'invalid' },
  { name: 'cache_raw an object', body: '{@M@"name":"gate","cache_raw":{"a":1}}', verdict: 'invalid' },
  { name: 'sw_wrs_auto_recovery a list', body: '{@M@"name":"gate","sw_wrs_auto_recovery":["True"]}', verdict: 'invalid' },
  { name: 'sw_wrs_auto_recovery "yes"', body: '{@M@"name":"gate","sw_wrs_auto_recovery":"yes"}', verdict: 'invalid' },
  { name: 'timeout "119"', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":"119"}', verdict: 'invalid' },
  { name: 'timeout 801', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":801}', verdict: 'invalid' },
  { name: 'timeout "1e2"', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":"1e2"}', verdict: 'invalid' },
  { name: 'timeout 2e2', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":2e2}', verdict: 'invalid' },
  { name: 'timeout 150.5', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":150.5}', verdict: 'invalid' },
  { name: 'timeout 400.0', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":400.0}', verdict: 'invalid' },
  { name: 'cache_raw with a lone surrogate', body: '{@M@"name":"gate","cache_raw":"True\\ud800"}', verdict: 'invalid' },
  { name: 'timeout "12a"', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":"12a"}', verdict: 'invalid' },
  { name: 'timeout in Arabic-Indic digits', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":"\\u0664\\u0660\\u0660"}', verdict: 'invalid' },
  { name: 'timeout "4_00"', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":"4_00"}', verdict: 'invalid' },
  { name: 'timeout NaN', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":NaN}', verdict: 'invalid' },
  { name: 'timeout -1', body: '{@M@"name":"gate","hw_wrs_live_migration_timeout":"-1"}', verdict: 'invalid' },
  { name: 'downtime "99"', body: '{@M@"name":"gate","hw_wrs_live_migration_max_downtime":"99"}', verdict: 'invalid' },
  { name: 'downtime "0"', body: '{@M@"name":"gate","hw_wrs_live_migration_max_downtime":"0"}', verdict: 'invalid' },
  { name: 'duplicate key, the invalid one last', body: '{@M@"name":"gate","cache_raw":"True","cache_raw":"maybe"}', verdict: 'invalid' },
  { name: 'key with a \\u escape, invalid', body: '{@M@"name":"gate","cache\\u005fraw":"maybe"}', verdict: 'invalid' },
  { name: 'escaped duplicate key, the invalid one last', body: '{@M@"name":"gate","cache_raw":"True","cache\\u005fraw":"maybe"}', verdict: 'invalid' },
  { name: 'a valid and an invalid value', body: '{@M@"name":"gate","cache_raw":"True","hw_wrs_live_migration_max_downtime":"0"}', verdict: 'invalid' },

  { name: 'cache_raw_status', body: '{@M@"name":"gate","cache_raw_status":"Cached"}', verdict: 'invalid' },
  { name: 'cache_raw_url', body: '{@M@"name":"gate","cache_raw_url":"rbd://forged/images/x/snap"}', verdict: 'invalid' },
  { name: 'cache_raw_size', body: '{@M@"name":"gate","cache_raw_size":"1"}', verdict: 'invalid' },
  { name: 'cache_raw_error', body: '{@M@"name":"gate","cache_raw_error":"forged"}', verdict: 'invalid' },
  { name: 'store', body: '{@M@"name":"gate","store":"rbd"}', verdict: 'invalid' },
  { name: 'read-only key with a \\u escape', body: '{@M@"name":"gate","cache_raw\\u005fstatus":"Cached"}', verdict: 'invalid' },
  { name: 'store with a \\u escape', body: '{@M@"name":"gate","stor\\u0065":"file"}', verdict: 'invalid' },
  { name: 'a forged value beside a valid one', body: '{@M@"name":"gate","cache_raw":"True","cache_raw_url":"rbd://forged/images/x/snap"}', verdict: 'invalid' },

  { name: 'truncated', body: '{@M@"name":"gate","cache_raw":"maybe"', verdict: 'invalid', malformed: 'malformed JSON bodies' },
  { name: 'trailing garbage', body: '{@M@"name":"gate","cache_raw":"maybe"} x', verdict: 'invalid', malformed: 'malformed JSON bodies' },
  { name: 'byte order mark', body: '\ufeff{@M@"name":"gate","cache_raw":"maybe"}', verdict: 'invalid', malformed: 'malformed JSON bodies' },
  {
    name: 'invalid UTF-8 in a string',
    body: (t) => Buffer.concat([Buffer.from(fillTemplate('{@M@"name":"gate', t)), Buffer.from([0xff, 0xfe]), Buffer.from('","cache_raw":"maybe"}')]),
    verdict: 'invalid',
    malformed: 'malformed JSON bodies',
  },
  { name: 'a JSON string', body: '"cache_raw"', verdict: 'invalid', malformed: 'malformed JSON bodies' },
  { name: 'NaN in a Glance attribute', body: '{@M@"name":"gate","min_ram":NaN}', verdict: 'invalid', malformed: 'malformed JSON bodies' },
  { name: 'Infinity in a property', body: '{@M@"name":"gate","stx_gate_x":Infinity,"cache_raw":"maybe"}', verdict: 'invalid', malformed: 'malformed JSON bodies' },
  { name: 'a JSON array', body: '[{"name":"gate","cache_raw":"maybe"}]', verdict: 'invalid', refusal: 'glance-500-body', malformed: 'JSON bodies Glance fails on or over the limits' },
  { name: 'an empty JSON array', body: '[]', verdict: 'invalid', refusal: 'glance-500-body', malformed: 'JSON bodies Glance fails on or over the limits' },
  { name: 'nesting 33 deep', body: `{@M@"name":"gate","stx_gate_x":${deep(32)}}`, verdict: 'invalid', refusal: 'glance-500-body', malformed: 'JSON bodies Glance fails on or over the limits' },
  { name: 'nesting 1000 deep', body: `{@M@"name":"gate","stx_gate_x":${deep(999)}}`, verdict: 'invalid', refusal: 'glance-500-body', malformed: 'JSON bodies Glance fails on or over the limits' },
  { name: 'an image id with a trailing newline', body: '{@M@"name":"gate","id":"@ID@\\n"}', verdict: 'invalid', refusal: 'create-id-not-uuid', malformed: 'JSON bodies Glance fails on or over the limits' },
  // Python's json takes a lone surrogate; Glance then fails to store it (500).
  { name: 'a lone surrogate in a property', body: '{@M@"name":"gate","stx_gate_x":"a\\udc00b"}', verdict: 'valid', refusal: 'glance-500-body', malformed: 'JSON bodies Glance fails on or over the limits' },
  { name: 'a lone surrogate in a tag', body: '{@M@"name":"gate","tags":["a\\ud800"]}', verdict: 'valid', refusal: 'glance-500-body', malformed: 'JSON bodies Glance fails on or over the limits' },
  { name: 'an image id that is not a UUID', body: '{@M@"name":"gate","id":"not-a-uuid"}', verdict: 'invalid', refusal: 'create-id-not-uuid', malformed: 'JSON bodies Glance fails on or over the limits' },
  { name: 'a __proto__ key', body: '{@M@"name":"gate","__proto__":"x"}', verdict: 'valid', refusal: 'reserved-property' },
  {
    name: 'a string longer than 65535 characters',
    body: `{@M@"name":"gate","stx_gate_long":"${'x'.repeat(70_000)}"}`,
    verdict: 'valid',
    refusal: 'json-limits',
    malformed: 'JSON bodies Glance fails on or over the limits',
  },
  {
    name: '5000 members',
    body: `{@M@${Array.from({ length: 5000 }, (_, i) => `"stx_gate_p${i}":"x"`).join(',')},"cache_raw":"maybe"}`,
    verdict: 'invalid',
    refusal: 'json-limits',
    malformed: 'JSON bodies Glance fails on or over the limits',
  },
];

const add = (path: string, value: string) => `{"op":"add","path":"${path}","value":${value}}`;
const patch = (...ops: string[]) => `[${ops.join(',')}]`;

const PATCH_BODIES: readonly BodyCase[] = [
  { name: 'add cache_raw "true" (on)', body: patch(add('/cache_raw', '"true"')), verdict: 'valid', main: 'active' },
  { name: 'add cache_raw JSON true (on)', body: patch(add('/cache_raw', 'true')), verdict: 'valid', main: 'active', oracle: patch(add('/cache_raw', '"True"')) },
  { name: 'rename and add cache_raw "TRUE" (on)', body: patch('{"op":"replace","path":"/name","value":"renamed"}', add('/cache_raw', '"TRUE"')), verdict: 'valid', main: 'active' },
  { name: 'replace cache_raw "false" (off)', body: patch('{"op":"replace","path":"/cache_raw","value":"false"}'), verdict: 'valid', main: 'cached' },
  { name: 'remove cache_raw (off)', body: patch('{"op":"remove","path":"/cache_raw"}'), verdict: 'valid', main: 'cached' },
  { name: 'add timeout "0"', body: patch(add('/hw_wrs_live_migration_timeout', '"0"')), verdict: 'valid' },
  { name: 'add timeout " 400 "', body: patch(add('/hw_wrs_live_migration_timeout', '" 400 "')), verdict: 'valid' },
  { name: 'add timeout JSON 120', body: patch(add('/hw_wrs_live_migration_timeout', '120')), verdict: 'valid', oracle: patch(add('/hw_wrs_live_migration_timeout', '"120"')) },
  { name: 'add downtime "100"', body: patch(add('/hw_wrs_live_migration_max_downtime', '"100"')), verdict: 'valid' },
  { name: 'add timeout JSON -0', body: patch(add('/hw_wrs_live_migration_timeout', '-0')), verdict: 'valid', oracle: patch(add('/hw_wrs_live_migration_timeout', '"0"')) },
  {
    name: 'add downtime as a 24-digit JSON integer',
    body: patch(add('/hw_wrs_live_migration_max_downtime', '100000000000000000000001')),
    verdict: 'valid',
    oracle: patch(add('/hw_wrs_live_migration_max_downtime', '"100000000000000000000001"')),
  },
  { name: 'add sw_wrs_auto_recovery JSON false', body: patch(add('/sw_wrs_auto_recovery', 'false')), verdict: 'valid', oracle: patch(add('/sw_wrs_auto_recovery', '"False"')) },
  // Glance's JSON pointer parser takes `//cache_raw` and `/cache\u005fraw` for /cache_raw.
  { name: 'pointer with a doubled slash (on)', body: patch(add('//cache_raw', '"true"')), verdict: 'valid', main: 'active' },
  { name: 'pointer with a \\u escape (on)', body: patch(add('/cache\\u005fraw', '"true"')), verdict: 'valid', main: 'active' },
  { name: 'two path members, the extension last (on)', body: '[{"op":"add","path":"/name","path":"/cache_raw","value":"true"}]', verdict: 'valid', main: 'active' },
  { name: 'an extra from member (on)', body: '[{"op":"add","path":"/cache_raw","value":"true","from":"/name"}]', verdict: 'valid', main: 'active' },
  { name: 'rename only', body: patch('{"op":"replace","path":"/name","value":"renamed"}'), verdict: 'valid' },
  { name: 'an empty patch', body: '[]', verdict: 'valid' },

  { name: 'add cache_raw "maybe"', body: patch(add('/cache_raw', '"maybe"')), verdict: 'invalid' },
  { name: 'add cache_raw ""', body: patch(add('/cache_raw', '""')), verdict: 'invalid' },
  { name: 'add cache_raw null', body: patch(add('/cache_raw', 'null')), verdict: 'invalid' },
  { name: 'add timeout "119"', body: patch(add('/hw_wrs_live_migration_timeout', '"119"')), verdict: 'invalid' },
  { name: 'add timeout 801', body: patch(add('/hw_wrs_live_migration_timeout', '801')), verdict: 'invalid' },
  { name: 'add timeout "1e2"', body: patch(add('/hw_wrs_live_migration_timeout', '"1e2"')), verdict: 'invalid' },
  { name: 'add timeout 150.5', body: patch(add('/hw_wrs_live_migration_timeout', '150.5')), verdict: 'invalid' },
  { name: 'add timeout in Arabic-Indic digits', body: patch(add('/hw_wrs_live_migration_timeout', '"\\u0664\\u0660\\u0660"')), verdict: 'invalid' },
  { name: 'add downtime "99"', body: patch(add('/hw_wrs_live_migration_max_downtime', '"99"')), verdict: 'invalid' },
  { name: 'add sw_wrs_auto_recovery "yes"', body: patch(add('/sw_wrs_auto_recovery', '"yes"')), verdict: 'invalid' },
  { name: 'pointer with a doubled slash, invalid', body: patch(add('//cache_raw', '"maybe"')), verdict: 'invalid' },
  { name: 'pointer with a \\u escape, invalid', body: patch(add('/cache\\u005fraw', '"maybe"')), verdict: 'invalid' },
  { name: 'two path members, the extension last, invalid', body: '[{"op":"add","path":"/name","path":"/cache_raw","value":"maybe"}]', verdict: 'invalid' },
  { name: 'two value members, the invalid one last', body: '[{"op":"add","path":"/cache_raw","value":"True","value":"maybe"}]', verdict: 'invalid' },
  { name: 'a valid operation, then an invalid one', body: patch(add('/cache_raw', '"True"'), add('/hw_wrs_live_migration_max_downtime', '"5"')), verdict: 'invalid' },
  { name: 'replace with an invalid value on a cached image', body: patch('{"op":"replace","path":"/cache_raw","value":"maybe"}'), verdict: 'invalid', main: 'cached' },

  { name: 'add cache_raw_status', body: patch(add('/cache_raw_status', '"Cached"')), verdict: 'invalid' },
  { name: 'add cache_raw_size', body: patch(add('/cache_raw_size', '"1"')), verdict: 'invalid' },
  { name: 'add cache_raw_error', body: patch(add('/cache_raw_error', '"forged"')), verdict: 'invalid' },
  { name: 'add store', body: patch(add('/store', '"rbd"')), verdict: 'invalid' },
  { name: 'replace cache_raw_url on a cached image', body: patch('{"op":"replace","path":"/cache_raw_url","value":"rbd://forged/images/x/snap"}'), verdict: 'invalid', main: 'cached' },
  { name: 'remove cache_raw_status on a cached image', body: patch('{"op":"remove","path":"/cache_raw_status"}'), verdict: 'invalid', main: 'cached' },
  { name: 'read-only pointer with a \\u escape', body: patch(add('/cache_raw\\u005fstatus', '"Cached"')), verdict: 'invalid' },
  { name: 'read-only pointer with a doubled slash', body: patch(add('//cache_raw_status', '"Cached"')), verdict: 'invalid' },

  { name: 'not an array', body: add('/cache_raw', '"maybe"'), verdict: 'invalid', malformed: 'malformed JSON bodies' },
  { name: 'truncated', body: `[${add('/cache_raw', '"maybe"')}`, verdict: 'invalid', malformed: 'malformed JSON bodies' },
  { name: 'garbage', body: 'cache_raw=maybe', verdict: 'invalid', malformed: 'malformed JSON bodies' },
  { name: 'an unknown operation', body: '[{"op":"test","path":"/cache_raw","value":"maybe"}]', verdict: 'invalid', malformed: 'malformed JSON bodies' },
  { name: 'op in upper case', body: '[{"op":"ADD","path":"/cache_raw","value":"maybe"}]', verdict: 'invalid', malformed: 'malformed JSON bodies' },
  { name: 'a property with a lone surrogate', body: patch(add('/stx_gate_x', '"a\\udc00b"')), verdict: 'valid', refusal: 'glance-500-body', malformed: 'JSON bodies Glance fails on or over the limits' },
  { name: 'a value nested 1000 deep', body: `[{"op":"add","path":"/stx_gate_x","value":${deep(1000)}}]`, verdict: 'invalid', refusal: 'glance-500-body', malformed: 'JSON bodies Glance fails on or over the limits' },
  // An array past limits.json_elements. (Not 20 000 operations: Glance spends minutes on those.)
  {
    name: 'an array of 20000 elements',
    body: patch(add('/stx_gate_x', `[${Array.from({ length: 20_000 }, (_, i) => i).join(',')}]`), add('/cache_raw', '"maybe"')),
    verdict: 'invalid',
    refusal: 'json-limits',
    malformed: 'JSON bodies Glance fails on or over the limits',
  },
];

const bodyOf = (body: BodyCase['body']) => (typeof body === 'string' ? json(body) : body);

/** Create bodies × the ways to send them. */
function addCreateBodyCases(list: CaseList): void {
  const sends: ReadonlyArray<{ name: string; method: string; target: string; headers: readonly Header[] }> = [
    { name: 'POST', method: 'POST', target: '/v2/images', headers: [JSON_TYPE] },
    { name: 'GET ?_method=POST', method: 'GET', target: '/v2/images?_method=POST', headers: [JSON_TYPE] },
    { name: 'POST /v2.1//images%0A', method: 'POST', target: '/v2.1//images%0A', headers: [JSON_TYPE] },
    { name: 'POST /images with Accept vnd', method: 'POST', target: '/images', headers: [JSON_TYPE, ['Accept', 'application/vnd.openstack.images-v2.1']] },
    // Glance reads a create body as JSON whatever its type.
    { name: 'POST as text/plain', method: 'POST', target: '/v2/images', headers: [['Content-Type', 'text/plain']] },
  ];
  for (const body of CREATE_BODIES) {
    for (const send of sends) {
      // The heavy bodies once.
      if ((body.refusal === 'json-limits' || body.name.startsWith('nesting')) && send.name !== 'POST') continue;
      const build = (text: BodyCase['body']) => (t: Targets): RawRequest => ({ method: send.method, target: send.target, headers: send.headers, body: bodyOf(text)(t) });
      list.add({
        key: `create body | ${send.name} | ${body.name}`,
        family: 'create body',
        malformed: body.malformed,
        request: build(body.body),
        oracle: body.oracle === undefined ? undefined : { request: build(body.oracle), why: 'the value as the proxy stores it (Glance refuses the other JSON form)' },
        valid: body.verdict === 'valid',
        refusal: body.refusal,
      });
    }
  }
}

/** Patch bodies × the ways to send an update. */
function addPatchBodyCases(list: CaseList): void {
  const asPatch = (t: Targets, text: BodyCase['body'], target = `/v2/images/${t.id}`, headers: readonly Header[] = [PATCH_TYPE]): RawRequest => ({
    method: 'PATCH',
    target,
    headers,
    body: bodyOf(text)(t),
  });
  const sends: ReadonlyArray<{ name: string; build: (t: Targets, text: BodyCase['body']) => RawRequest; putAsPatch?: true }> = [
    { name: 'PATCH', build: (t, text) => asPatch(t, text) },
    // The StarlingX API reference documents updates as PUT with a JSON-patch body; Glance answers 405.
    { name: 'PUT with the JSON-patch type', build: (t, text) => ({ ...asPatch(t, text), method: 'PUT' }), putAsPatch: true },
    { name: 'PUT as application/json', build: (t, text) => ({ ...asPatch(t, text, `/v2/images/${t.id}`, [JSON_TYPE]), method: 'PUT' }), putAsPatch: true },
    { name: 'POST ?_method=PATCH', build: (t, text) => ({ ...asPatch(t, text, `/v2/images/${t.id}?_method=PATCH`), method: 'POST' }) },
    { name: 'PATCH //v2//images//{id}%0A', build: (t, text) => asPatch(t, text, `//v2//images//${t.id}%0A`) },
    { name: 'PATCH /images/{id} with Accept vnd', build: (t, text) => asPatch(t, text, `/images/${t.id}`, [PATCH_TYPE, ['Accept', 'application/vnd.openstack.images-v2.1']]) },
  ];
  for (const body of PATCH_BODIES) {
    for (const send of sends) {
      if ((body.refusal === 'json-limits' || body.refusal === 'glance-500-body') && send.name !== 'PATCH') continue;
      // A PUT whose body is not a JSON array is not an update (Glance answers 405 to any PUT here).
      if (send.name === 'PUT as application/json' && !(typeof body.body === 'string' && body.body.trimStart().startsWith('['))) continue;
      const oracleText = body.oracle ?? (send.putAsPatch ? body.body : undefined);
      list.add({
        key: `patch body | ${send.name} | ${body.name}`,
        family: 'update body',
        malformed: body.malformed,
        main: body.main ?? 'queued',
        request: (t) => send.build(t, body.body),
        oracle:
          oracleText === undefined
            ? undefined
            : {
                request: (t) => asPatch(t, oracleText),
                why: send.putAsPatch ? 'the PATCH the StarlingX PUT means' : 'the value as the proxy stores it (Glance refuses the other JSON form)',
              },
        valid: body.verdict === 'valid',
        refusal: body.refusal,
      });
    }
  }
}

/** Content-Encoding, Content-Type, chunked bodies, duplicate headers, Expect. */
function addHeaderCases(list: CaseList): void {
  const encodings = ['gzip', 'deflate', 'br', 'x-gzip', 'compress', 'GZIP', 'gzip, identity', 'identity, gzip', 'identity', 'Identity'];
  const jsonBodied = [op('create'), op('create with an invalid value'), op('update turning cache_raw on'), op('update with an invalid value'), op('import')];
  for (const encoding of encodings) {
    const identity = encoding.toLowerCase() === 'identity';
    for (const operation of jsonBodied) {
      list.add({
        key: `encoding | Content-Encoding: ${encoding} on a plain JSON body | ${operation.name}`,
        family: 'content encoding',
        malformed: identity ? undefined : 'content encodings',
        main: operation.main,
        request: (t) => operationRequest(operation, t, undefined, [['Content-Encoding', encoding]]),
        valid: operation.valid,
        refusal: identity ? undefined : 'content-encoding',
      });
    }
  }
  for (const operation of [op('create'), op('update turning cache_raw on')]) {
    list.add({
      key: `encoding | a really gzipped JSON body | ${operation.name}`,
      family: 'content encoding',
      malformed: 'content encodings',
      main: operation.main,
      request: (t) => ({ ...operationRequest(operation, t, undefined, [['Content-Encoding', 'gzip']]), body: gzipSync(operation.body!(t)) }),
      valid: operation.valid,
      refusal: 'content-encoding',
    });
  }
  // Image data is not JSON: Glance stores the bytes as sent, whatever their encoding says.
  list.add({
    key: 'encoding | Content-Encoding: gzip on image data | upload',
    family: 'content encoding',
    main: 'queued',
    request: (t) => operationRequest(op('upload'), t, undefined, [['Content-Encoding', 'gzip']]),
    valid: true,
  });

  const patchTypes = [
    PATCH_V21,
    'application/openstack-images-v2.0-json-patch',
    `${PATCH_V21}; charset=UTF-8`,
    `${PATCH_V21};q=1`,
    PATCH_V21.toUpperCase(),
    'application/json-patch+json',
    'application/json',
    'text/plain',
    'application/openstack-images-v2.2-json-patch',
  ];
  for (const type of patchTypes) {
    for (const operation of [op('update turning cache_raw on'), op('update with an invalid value'), op('update forging cache_raw_url')]) {
      list.add({
        key: `content type | PATCH as ${type} | ${operation.name}`,
        family: 'content type',
        main: operation.main,
        request: (t) => ({ ...operationRequest(operation, t), headers: [['Content-Type', type]] }),
        valid: operation.valid,
      });
    }
  }
  list.add({
    key: 'content type | PATCH without a Content-Type | update with an invalid value',
    family: 'content type',
    main: 'queued',
    request: (t) => ({ ...operationRequest(op('update with an invalid value'), t), headers: [] }),
    valid: false,
  });
  const createTypes: ReadonlyArray<readonly [string | undefined, RefusalClass | undefined]> = [
    [undefined, undefined],
    ['text/plain', undefined],
    ['application/octet-stream', undefined],
    ['application/json; charset=utf-8', undefined],
    // Routes reads a POSTed form for `_method`; a JSON body holds none, so Glance creates the image.
    [FORM, undefined],
    [`${FORM}; charset=utf-8`, undefined],
  ];
  for (const [type, refusal] of createTypes) {
    for (const operation of [op('create'), op('create with an invalid value'), op('create with forged read-only values')]) {
      list.add({
        key: `content type | create as ${type ?? 'no Content-Type'} | ${operation.name}`,
        family: 'content type',
        malformed: type?.startsWith(FORM) ? 'form bodies' : undefined,
        request: (t) => ({ ...operationRequest(operation, t), headers: type === undefined ? [] : [['Content-Type', type]] }),
        valid: operation.valid,
        refusal,
      });
    }
  }
  // A JSON create body sent as a form is also a form: `&_method=GET&` in a value makes it a list.
  for (const [name, value] of [
    ['list', 'a&_method=GET&b'],
    ['PATCH on the collection', 'a&_method=PATCH&b'],
    ['DELETE on the collection', 'a&_method=DELETE&b'],
  ] as const) {
    list.add({
      key: `content type | a JSON create body sent as a form, turned into a ${name} by a value`,
      family: 'content type',
      malformed: 'form bodies',
      request: (t) => ({
        method: 'POST',
        target: '/v2/images',
        headers: [['Content-Type', FORM]],
        body: Buffer.from(fillTemplate(`{@M@"name":"${value}","cache_raw":"maybe"}`, t)),
      }),
      valid: false,
    });
  }

  const chunkedOperations = ['create', 'create with an invalid value', 'create with forged read-only values', 'update turning cache_raw on', 'update with an invalid value', 'upload', 'import'];
  for (const name of chunkedOperations) {
    const operation = op(name);
    list.add({
      key: `transfer | chunked body | ${operation.name}`,
      family: 'transfer coding',
      main: operation.main,
      request: (t) => ({ ...operationRequest(operation, t), chunked: true }),
      valid: operation.valid,
    });
    list.add({
      key: `transfer | Expect: 100-continue | ${operation.name}`,
      family: 'transfer coding',
      main: operation.main,
      request: (t) => operationRequest(operation, t, undefined, [['Expect', '100-continue']]),
      valid: operation.valid,
    });
  }

  // Glance knows no method-override header: the request is the show it says it is.
  list.add({
    key: 'headers | X-HTTP-Method-Override: DELETE on a show',
    family: 'headers',
    main: 'queued',
    request: (t) => ({ method: 'GET', target: `/v2/images/${t.id}`, headers: [['X-HTTP-Method-Override', 'DELETE']] }),
    valid: true,
  });
  list.add({
    key: 'headers | an invalid JSON patch PUT to /file with the JSON-patch type',
    family: 'headers',
    main: 'queued',
    request: (t) => ({ method: 'PUT', target: `/v2/images/${t.id}/file`, headers: [PATCH_TYPE], body: Buffer.from(PATCH_INVALID) }),
    valid: false,
  });

  // Both servers take the first of two Content-Type headers.
  for (const [name, types] of [
    ['text/plain first', ['text/plain', PATCH_V21]],
    ['JSON-patch first', [PATCH_V21, 'text/plain']],
  ] as const) {
    list.add({
      key: `duplicate headers | two Content-Types, ${name} | update with an invalid value`,
      family: 'headers',
      main: 'queued',
      request: (t) => ({ ...operationRequest(op('update with an invalid value'), t), headers: types.map((type): Header => ['Content-Type', type]) }),
      valid: false,
    });
  }
  for (const [name, accepts] of [
    ['JSON first', ['application/json', 'application/vnd.openstack.images-v2.1']],
    ['vnd first', ['application/vnd.openstack.images-v2.1', 'application/json']],
  ] as const) {
    for (const path of ['/images', '/v2/images']) {
      list.add({
        key: `duplicate headers | two Accepts, ${name}, ${path}/{id} | delete`,
        family: 'headers',
        main: 'queued',
        request: (t) => ({ method: 'DELETE', target: `${path}/${t.id}`, headers: accepts.map((accept): Header => ['Accept', accept]) }),
        valid: true,
      });
    }
  }
}

/** Image ids that are not UUIDs but contain one: a proxy that trims or decodes them acts on the wrong image. */
const NOT_UUIDS: ReadonlyArray<readonly [string, (id: string) => string]> = [
  ['a letter after the id', (id) => `${id}x`],
  ['a letter before the id', (id) => `x${id}`],
  ['no dashes', (id) => id.replace(/-/g, '')],
  ['in braces', (id) => `{${id}}`],
  ['as a URN', (id) => `urn:uuid:${id}`],
  ['a trailing %00', (id) => `${id}%00`],
  ['a trailing %20 (MySQL ignores trailing spaces)', (id) => `${id}%20`],
  ['a leading %20', (id) => `%20${id}`],
  ['a trailing tab', (id) => `${id}%09`],
  ['a trailing ;x', (id) => `${id};x`],
  ['a trailing %3B', (id) => `${id}%3B`],
  ['a trailing CR LF', (id) => `${id}%0D%0A`],
  ['a trailing zero-width space', (id) => `${id}%E2%80%8B`],
  ['a trailing no-break space', (id) => `${id}%C2%A0`],
  ['the last character missing', (id) => id.slice(0, -1)],
  ['a fullwidth first digit', (id) => `%EF%BC%90${id.slice(1)}`],
];

function addImageIdCases(list: CaseList): void {
  const operations = ['show', 'delete', 'update turning cache_raw on', 'upload', 'queue for the image cache'];
  for (const [name, spell] of NOT_UUIDS) {
    for (const operationName of operations) {
      const operation = op(operationName);
      list.add({
        key: `image id | ${name} | ${operation.name}`,
        family: 'image id',
        malformed: 'non-UUID image id',
        main: operation.main,
        request: (t) => {
          const { segments, idIndex } = routeSegments(operation.route, t.id);
          const target = `/v2/${segments.map((segment, index) => (index === idIndex ? spell(segment) : segment)).join('/')}`;
          return operationRequest(operation, t, target);
        },
        valid: operation.valid,
        refusal: 'non-uuid-image-id',
      });
    }
  }
}

/** Every case of the suite, numbered in a stable order. */
export function generateCases(): GateCase[] {
  const list = new CaseList();
  addSpellingCases(list);
  addOverrideCases(list);
  addFormCases(list);
  addCreateBodyCases(list);
  addPatchBodyCases(list);
  addHeaderCases(list);
  addImageIdCases(list);
  return list.cases;
}

/** The request Glance alone gets for a case. */
export function oracleRequest(gateCase: GateCase, t: Targets): RawRequest {
  return (gateCase.oracle?.request ?? gateCase.request)(t);
}
