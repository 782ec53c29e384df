import { randomBytes } from 'node:crypto';
import type { OutgoingHttpHeaders } from 'node:http';
import type { HttpClient, HttpResponse } from '../../harness/http';

/**
 * What the StarlingX property suites share: image requests, reads straight from Glance (never through
 * the proxy), and Glance's own rendering of an error, taken from the real Glance the suite runs.
 */

export const PATCH_V21 = 'application/openstack-images-v2.1-json-patch';

/** A tag unique to one suite run, stored as a property so that its images can be found and counted. */
export function runTag(): string {
  return `stx${randomBytes(5).toString('hex')}`;
}

export type Image = Record<string, unknown> & { id: string };

export async function createImage(client: HttpClient, body: Record<string, unknown>): Promise<Image> {
  const res = await client.sendJson('POST', '/v2/images', body, { Accept: 'application/json' });
  if (res.status !== 201) throw new Error(`create answered ${res.status}: ${res.text()}`);
  return res.json();
}

export async function uploadData(client: HttpClient, id: string, data: Buffer): Promise<void> {
  const res = await client.request({
    method: 'PUT',
    path: `/v2/images/${id}/file`,
    headers: { 'Content-Type': 'application/octet-stream' },
    body: data,
  });
  if (res.status !== 204) throw new Error(`upload answered ${res.status}: ${res.text()}`);
}

export function sendPatch(
  client: HttpClient,
  id: string,
  body: unknown,
  { method = 'PATCH', contentType = PATCH_V21, headers = {} }: { method?: string; contentType?: string | null; headers?: OutgoingHttpHeaders } = {},
): Promise<HttpResponse> {
  return client.request({
    method,
    path: `/v2/images/${id}`,
    headers: contentType === null ? headers : { 'Content-Type': contentType, ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}

/** The image as Glance itself stores and shows it. */
export async function showDirect(glance: HttpClient, id: string): Promise<Image> {
  const res = await glance.get(`/v2/images/${id}`, { Accept: 'application/json' });
  if (res.status !== 200) throw new Error(`Glance answered ${res.status} for image ${id}: ${res.text()}`);
  return res.json();
}

/** How many images Glance itself holds with `stx_test_run` set to `tag`. */
export async function countDirect(glance: HttpClient, tag: string): Promise<number> {
  const res = await glance.get(`/v2/images?stx_test_run=${tag}&limit=1000`, { Accept: 'application/json' });
  if (res.status !== 200) throw new Error(`Glance answered ${res.status} to a list: ${res.text()}`);
  return (res.json().images as unknown[]).length;
}

/** Sets properties directly on Glance, bypassing the proxy (to put an image back in a known state). */
export async function setDirect(glance: HttpClient, id: string, properties: Record<string, string>): Promise<Image> {
  const ops = Object.entries(properties).map(([name, value]) => ({ op: 'add', path: `/${name}`, value }));
  const res = await sendPatch(glance, id, ops, { headers: { Accept: 'application/json' } });
  if (res.status !== 200) throw new Error(`Glance answered ${res.status} to a PATCH: ${res.text()}`);
  return res.json();
}

/** The three bodies Glance (WebOb) renders an error as, chosen by the request's Accept header. */
export const ACCEPT_FLAVOURS: ReadonlyArray<readonly [flavour: string, headers: Record<string, string>]> = [
  ['JSON (Accept: application/json)', { Accept: 'application/json' }],
  ['HTML (Accept: */*)', { Accept: '*/*' }],
  ['plain text (Accept: text/plain)', { Accept: 'text/plain' }],
  ['JSON every OpenStack client reads (no Accept)', {}],
];

/**
 * How the proxy renders its own errors for a request that states no Accept preference (openstacksdk's
 * PATCH sends an empty Accept): JSON with the message in one object, where Glance would send plain
 * text that openstacksdk cannot read.
 */
export function readableErrorRendering(status: number, title: string): GlanceErrorRendering {
  return { contentType: 'application/json', body: (message) => `{"error": {"message": "${jsonInner(message)}", "code": ${status}, "title": "${title}"}}` };
}

export interface GlanceErrorRendering {
  contentType: string;
  /** The exact body Glance sends for this status with `message` as its explanation. */
  body(message: string): string;
}

/** What WebOb's html_escape does to an explanation in the HTML body. */
function htmlEscape(text: string): string {
  return text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#x27;');
}

/** How an explanation appears inside the JSON string of Glance's `message` (Python's json.dumps, ASCII). */
function jsonInner(text: string): string {
  return JSON.stringify(text)
    .slice(1, -1)
    .replace(/[\u007f-\uffff]/g, (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/**
 * Learns how Glance renders an error by making it produce one (`provoke`, whose explanation is
 * `message`), so a test can compare the proxy's own rejections with what Glance would have sent.
 */
export async function learnGlanceError(
  provoke: (headers: Record<string, string>) => Promise<HttpResponse>,
  status: number,
  message: string,
  acceptHeaders: Record<string, string>,
): Promise<GlanceErrorRendering> {
  const res = await provoke(acceptHeaders);
  if (res.status !== status) throw new Error(`expected Glance to answer ${status}, got ${res.status}: ${res.text()}`);
  const contentType = res.header('content-type') ?? '';
  const text = res.text();
  const render = /json/.test(contentType) ? jsonInner : /html/.test(contentType) ? htmlEscape : (s: string) => s;
  const parts = text.split(render(message));
  if (parts.length !== 2) throw new Error(`cannot find "${message}" once in Glance's ${status} body: ${text}`);
  const [before, after] = parts;
  return { contentType, body: (ours) => `${before}${render(ours)}${after}` };
}

/** The proxy's answer is the error Glance itself would have rendered for `message`, request id included. */
export function expectGlanceError(res: HttpResponse, rendering: GlanceErrorRendering, status: number, message: string): void {
  expect({ status: res.status, contentType: res.header('content-type'), body: res.text() }).toEqual({
    status,
    contentType: rendering.contentType,
    body: rendering.body(message),
  });
  expect(res.header('x-openstack-request-id')).toMatch(/^req-[0-9a-f-]{36}$/);
}
