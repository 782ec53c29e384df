import { Readable } from 'node:stream';
import type { HttpClient, HttpResponse } from '../../harness/http';

/**
 * One pass over the Image API as clients use it, written once and replayed against Glance directly
 * and through the proxy. Each step returns the response to compare; `ctx` carries what later steps
 * need (ids Glance assigned in this run).
 */
export interface ScenarioContext {
  run: string;
  ids: Record<string, string>;
}

export interface Step {
  name: string;
  send(client: HttpClient, ctx: ScenarioContext): Promise<HttpResponse>;
}

const PATCH_V21 = 'application/openstack-images-v2.1-json-patch';
const MISSING = '00000000-0000-4000-8000-000000000000';
const OTHER_PROJECT = { 'X-Identity-Status': 'Confirmed', 'X-Project-Id': 'project-b', 'X-User-Id': 'user-b', 'X-Roles': 'member,reader' };
const MEMBER_OF_OWNER = { 'X-Identity-Status': 'Confirmed', 'X-Project-Id': 'test-project', 'X-User-Id': 'user-m', 'X-Roles': 'member,reader' };
export const IMAGE_BYTES = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 7919) % 251));

function chunked(data: Buffer, chunk = 65_536): Readable {
  let offset = 0;
  return new Readable({
    read() {
      if (offset >= data.length) return void this.push(null);
      this.push(data.subarray(offset, offset + chunk));
      offset += chunk;
    },
  });
}

function create(client: HttpClient, ctx: ScenarioContext, key: string, body: Record<string, unknown>, headers = {}): Promise<HttpResponse> {
  return client.sendJson('POST', '/v2/images', { difftest_run: ctx.run, ...body }, headers).then((res) => {
    if (res.status === 201) ctx.ids[key] = res.json().id;
    return res;
  });
}

async function waitForStatus(client: HttpClient, id: string, status: string): Promise<HttpResponse> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const res = await client.get(`/v2/images/${id}`);
    // An import makes the image active, then completes its task and only then drops the task's lock
    // (os_glance_import_task); until then the image and its tasks are still changing.
    const image = res.json();
    if ((image.status === status && !('os_glance_import_task' in image)) || Date.now() > deadline) return res;
    await new Promise((r) => setTimeout(r, 200));
  }
}

const patch = (client: HttpClient, id: string, ops: unknown, headers: Record<string, string> = {}) =>
  client.request({ method: 'PATCH', path: `/v2/images/${id}`, headers: { 'Content-Type': PATCH_V21, ...headers }, body: JSON.stringify(ops) });

export const STEPS: Step[] = [
  { name: 'GET / (300 versions)', send: (c) => c.get('/') },
  { name: 'GET /versions', send: (c) => c.get('/versions') },
  { name: 'GET /v1/images (300)', send: (c) => c.get('/v1/images') },
  { name: 'GET /v2/ (404)', send: (c) => c.get('/v2/') },
  { name: 'GET /v2/schemas/member', send: (c) => c.get('/v2/schemas/member') },
  { name: 'GET /v2/schemas/image', send: (c) => c.get('/v2/schemas/image') },
  { name: 'GET /v2/schemas/images', send: (c) => c.get('/v2/schemas/images') },
  { name: 'GET /v2/info/import', send: (c) => c.get('/v2/info/import') },
  { name: 'GET /v2/info/stores', send: (c) => c.get('/v2/info/stores') },
  { name: 'GET /v2/info/usage', send: (c) => c.get('/v2/info/usage') },
  { name: 'GET /v2/metadefs/namespaces', send: (c) => c.get('/v2/metadefs/namespaces') },
  {
    name: 'create with core and extra properties and tags',
    send: (c, ctx) =>
      create(c, ctx, 'a', { name: `a-${ctx.run}`, disk_format: 'qcow2', container_format: 'bare', visibility: 'private', min_ram: 64, tags: ['x', 'y'], os_distro: 'cirros', custom_note: 'hello' }),
  },
  { name: 'create a second image (for lists)', send: (c, ctx) => create(c, ctx, 'b', { name: `b-${ctx.run}`, disk_format: 'raw', container_format: 'bare' }) },
  { name: 'create a third image (for lists)', send: (c, ctx) => create(c, ctx, 'c', { name: `c-${ctx.run}`, disk_format: 'raw', container_format: 'bare', protected: true }) },
  { name: 'create minimal {}', send: (c, ctx) => create(c, ctx, 'minimal', {}) },
  { name: 'show', send: (c, ctx) => c.get(`/v2/images/${ctx.ids.a}`) },
  { name: 'list filtered by property, sorted by name, page 1', send: (c, ctx) => c.get(`/v2/images?difftest_run=${ctx.run}&sort_key=name&sort_dir=asc&limit=2`) },
  {
    name: 'list page 2 through the next link',
    send: async (c, ctx) => {
      const first = await c.get(`/v2/images?difftest_run=${ctx.run}&sort_key=name&sort_dir=asc&limit=2`);
      return c.get(first.json().next);
    },
  },
  { name: 'list with sort=name:desc and a name filter', send: (c, ctx) => c.get(`/v2/images?sort=name:desc&name=b-${ctx.run}`) },
  { name: 'list by tag', send: (c, ctx) => c.get(`/v2/images?difftest_run=${ctx.run}&tag=x`) },
  { name: 'list with a bad sort key (400)', send: (c) => c.get('/v2/images?sort_key=bogus') },
  { name: 'list with limit=-1 (400)', send: (c) => c.get('/v2/images?limit=-1', { Accept: 'application/json' }) },
  {
    name: 'PATCH add, replace and remove',
    send: (c, ctx) =>
      patch(c, ctx.ids.a, [
        { op: 'add', path: '/extra_one', value: '1' },
        { op: 'replace', path: '/custom_note', value: 'changed' },
        { op: 'remove', path: '/os_distro' },
        { op: 'replace', path: '/name', value: `a2-${ctx.run}` },
        { op: 'replace', path: '/tags', value: ['z'] },
      ]),
  },
  {
    name: 'PATCH with the v2.0 media type and syntax',
    send: (c, ctx) =>
      c.request({ method: 'PATCH', path: `/v2/images/${ctx.ids.a}`, headers: { 'Content-Type': 'application/openstack-images-v2.0-json-patch' }, body: JSON.stringify([{ replace: '/custom_note', value: 'v20' }]) }),
  },
  { name: 'PATCH with an empty list', send: (c, ctx) => patch(c, ctx.ids.a, []) },
  { name: 'PATCH remove of a missing property (409)', send: (c, ctx) => patch(c, ctx.ids.a, [{ op: 'remove', path: '/nope' }]) },
  { name: 'PATCH remove of a missing property, empty Accept (409 plain)', send: (c, ctx) => patch(c, ctx.ids.a, [{ op: 'remove', path: '/nope' }], { Accept: '' }) },
  { name: 'PATCH a read-only attribute (403)', send: (c, ctx) => patch(c, ctx.ids.a, [{ op: 'replace', path: '/status', value: 'active' }], { Accept: 'application/json' }) },
  { name: 'PATCH with a test op (400)', send: (c, ctx) => patch(c, ctx.ids.a, [{ op: 'test', path: '/name', value: 'x' }]) },
  { name: 'PATCH a non-array body (400)', send: (c, ctx) => patch(c, ctx.ids.a, { op: 'add' }) },
  {
    name: 'PATCH malformed JSON (400)',
    send: (c, ctx) => c.request({ method: 'PATCH', path: `/v2/images/${ctx.ids.a}`, headers: { 'Content-Type': PATCH_V21, Accept: 'application/json' }, body: '[{"op":' }),
  },
  { name: 'PATCH with application/json (415, HTML)', send: (c, ctx) => c.request({ method: 'PATCH', path: `/v2/images/${ctx.ids.a}`, headers: { 'Content-Type': 'application/json' }, body: '[]' }) },
  {
    name: 'PATCH with application/json (415, JSON)',
    send: (c, ctx) => c.request({ method: 'PATCH', path: `/v2/images/${ctx.ids.a}`, headers: { 'Content-Type': 'application/json', Accept: 'application/json' }, body: '[]' }),
  },
  { name: 'PATCH without a content type (415)', send: (c, ctx) => c.request({ method: 'PATCH', path: `/v2/images/${ctx.ids.a}`, body: '[]' }) },
  {
    name: 'PATCH beyond the property quota (413)',
    send: (c, ctx) => patch(c, ctx.ids.b, Array.from({ length: 130 }, (_, i) => ({ op: 'add', path: `/quota_${i}`, value: 'v' })), { Accept: 'application/json' }),
  },
  { name: 'PUT on an image with a JSON object (405)', send: (c, ctx) => c.sendJson('PUT', `/v2/images/${ctx.ids.a}`, { name: 'x' }) },
  { name: 'HEAD on an image (405)', send: (c, ctx) => c.request({ method: 'HEAD', path: `/v2/images/${ctx.ids.a}` }) },
  { name: 'OPTIONS on an image', send: (c, ctx) => c.request({ method: 'OPTIONS', path: `/v2/images/${ctx.ids.a}` }) },
  { name: 'DELETE on the collection (405)', send: (c) => c.delete('/v2/images') },
  { name: 'POST on an image (405)', send: (c, ctx) => c.sendJson('POST', `/v2/images/${ctx.ids.a}`, {}) },
  { name: 'download before upload (204)', send: (c, ctx) => c.get(`/v2/images/${ctx.ids.a}/file`) },
  {
    name: 'upload with Content-Length',
    send: (c, ctx) => c.request({ method: 'PUT', path: `/v2/images/${ctx.ids.a}/file`, headers: { 'Content-Type': 'application/octet-stream' }, body: IMAGE_BYTES }),
  },
  {
    name: 'upload chunked without Content-Length',
    send: (c, ctx) =>
      c.request({ method: 'PUT', path: `/v2/images/${ctx.ids.b}/file`, headers: { 'Content-Type': 'application/octet-stream' }, body: chunked(IMAGE_BYTES) }),
  },
  {
    name: 'upload with Expect: 100-continue',
    send: (c, ctx) =>
      c.request({ method: 'PUT', path: `/v2/images/${ctx.ids.c}/file`, headers: { 'Content-Type': 'application/octet-stream', Expect: '100-continue' }, body: IMAGE_BYTES }),
  },
  {
    name: 'upload again on an active image (409)',
    send: (c, ctx) => c.request({ method: 'PUT', path: `/v2/images/${ctx.ids.a}/file`, headers: { 'Content-Type': 'application/octet-stream' }, body: 'more' }),
  },
  {
    name: 'upload with a JSON content type (415)',
    send: (c, ctx) => c.request({ method: 'PUT', path: `/v2/images/${ctx.ids.minimal}/file`, headers: { 'Content-Type': 'application/json' }, body: '{}' }),
  },
  { name: 'upload to an unknown image (404)', send: (c) => c.request({ method: 'PUT', path: `/v2/images/${MISSING}/file`, headers: { 'Content-Type': 'application/octet-stream' }, body: 'x' }) },
  { name: 'show after upload', send: (c, ctx) => c.get(`/v2/images/${ctx.ids.a}`) },
  {
    name: 'download',
    send: async (c, ctx) => {
      const res = await c.get(`/v2/images/${ctx.ids.b}/file`);
      if (!res.body.equals(IMAGE_BYTES)) throw new Error('downloaded bytes differ from the uploaded ones');
      return res;
    },
  },
  { name: 'download a range (206)', send: (c, ctx) => c.get(`/v2/images/${ctx.ids.a}/file`, { Range: 'bytes=0-3' }) },
  { name: 'download a suffix range (206)', send: (c, ctx) => c.get(`/v2/images/${ctx.ids.a}/file`, { Range: 'bytes=-10' }) },
  { name: 'download an unsatisfiable range (416)', send: (c, ctx) => c.get(`/v2/images/${ctx.ids.a}/file`, { Range: 'bytes=999999999-' }) },
  { name: 'deactivate', send: (c, ctx) => c.request({ method: 'POST', path: `/v2/images/${ctx.ids.b}/actions/deactivate` }) },
  { name: 'download a deactivated image as a non-admin (403)', send: (c, ctx) => c.get(`/v2/images/${ctx.ids.b}/file`, MEMBER_OF_OWNER) },
  { name: 'reactivate', send: (c, ctx) => c.request({ method: 'POST', path: `/v2/images/${ctx.ids.b}/actions/reactivate` }) },
  { name: 'add a tag', send: (c, ctx) => c.request({ method: 'PUT', path: `/v2/images/${ctx.ids.a}/tags/added-tag` }) },
  { name: 'delete a tag', send: (c, ctx) => c.delete(`/v2/images/${ctx.ids.a}/tags/z`) },
  { name: 'delete a missing tag (404)', send: (c, ctx) => c.delete(`/v2/images/${ctx.ids.a}/tags/never-there`) },
  { name: 'share with another project', send: (c, ctx) => c.sendJson('POST', `/v2/images/${ctx.ids.b}/members`, { member: 'project-b' }) },
  { name: 'list members', send: (c, ctx) => c.get(`/v2/images/${ctx.ids.b}/members`) },
  { name: 'member accepts', send: (c, ctx) => c.sendJson('PUT', `/v2/images/${ctx.ids.b}/members/project-b`, { status: 'accepted' }, OTHER_PROJECT) },
  { name: 'member shows the shared image', send: (c, ctx) => c.get(`/v2/images/${ctx.ids.b}`, OTHER_PROJECT) },
  {
    name: 'member may not change it (403)',
    send: (c, ctx) => patch(c, ctx.ids.b, [{ op: 'replace', path: '/name', value: 'stolen' }], { ...OTHER_PROJECT, Accept: 'application/json' }),
  },
  { name: 'non-member sees 404 for a private image', send: (c, ctx) => c.get(`/v2/images/${ctx.ids.a}`, OTHER_PROJECT) },
  { name: 'remove the member', send: (c, ctx) => c.delete(`/v2/images/${ctx.ids.b}/members/project-b`) },
  { name: 'create for glance-direct import', send: (c, ctx) => create(c, ctx, 'imported', { name: `i-${ctx.run}`, disk_format: 'raw', container_format: 'bare' }) },
  {
    name: 'stage data',
    send: (c, ctx) =>
      c.request({ method: 'PUT', path: `/v2/images/${ctx.ids.imported}/stage`, headers: { 'Content-Type': 'application/octet-stream' }, body: chunked(IMAGE_BYTES) }),
  },
  { name: 'show while staged', send: (c, ctx) => c.get(`/v2/images/${ctx.ids.imported}`) },
  { name: 'import (202)', send: (c, ctx) => c.sendJson('POST', `/v2/images/${ctx.ids.imported}/import`, { method: { name: 'glance-direct' } }) },
  { name: 'imported image turns active', send: (c, ctx) => waitForStatus(c, ctx.ids.imported, 'active') },
  { name: 'tasks of the imported image', send: (c, ctx) => c.get(`/v2/images/${ctx.ids.imported}/tasks`) },
  { name: 'import with an unknown method (400)', send: (c, ctx) => c.sendJson('POST', `/v2/images/${ctx.ids.minimal}/import`, { method: { name: 'web-download' } }) },
  { name: 'create with a read-only attribute (403)', send: (c, ctx) => create(c, ctx, 'never', { name: 'ro', status: 'active' }, { Accept: 'application/json' }) },
  { name: 'create with a reserved attribute (403)', send: (c, ctx) => create(c, ctx, 'never', { name: 'rsv', os_glance_x: '1' }) },
  { name: 'create with a non-string extra property (400)', send: (c, ctx) => create(c, ctx, 'never', { name: 'n', some_number: 5 }, { Accept: 'application/json' }) },
  { name: 'create with a bad disk format (400)', send: (c, ctx) => create(c, ctx, 'never', { name: 'n', disk_format: 'floppy' }) },
  { name: 'create with malformed JSON (400, HTML)', send: (c) => c.request({ method: 'POST', path: '/v2/images', headers: { 'Content-Type': 'application/json' }, body: '{"name":' }) },
  {
    name: 'create with malformed JSON (400, JSON)',
    send: (c) => c.request({ method: 'POST', path: '/v2/images', headers: { 'Content-Type': 'application/json', Accept: 'application/json' }, body: '{"name":' }),
  },
  { name: 'create with an empty body (400)', send: (c) => c.request({ method: 'POST', path: '/v2/images', headers: { 'Content-Type': 'application/json' } }) },
  {
    name: 'create with a text/plain body (Glance parses it as JSON)',
    send: (c, ctx) =>
      c.request({ method: 'POST', path: '/v2/images', headers: { 'Content-Type': 'text/plain' }, body: JSON.stringify({ name: `t-${ctx.run}`, difftest_run: ctx.run }) }).then((res) => {
        if (res.status === 201) ctx.ids.text = res.json().id;
        return res;
      }),
  },
  { name: 'unknown image, no Accept (404 HTML)', send: (c) => c.get(`/v2/images/${MISSING}`) },
  { name: 'unknown image, Accept JSON (404 JSON)', send: (c) => c.get(`/v2/images/${MISSING}`, { Accept: 'application/json' }) },
  { name: 'unknown image, Accept text/plain (404 plain)', send: (c) => c.get(`/v2/images/${MISSING}`, { Accept: 'text/plain' }) },
  { name: 'unknown image, empty Accept (404 plain)', send: (c) => c.get(`/v2/images/${MISSING}`, { Accept: '' }) },
  { name: 'unknown image, Accept with q-values (404 JSON)', send: (c) => c.get(`/v2/images/${MISSING}`, { Accept: 'text/html;q=0.5, application/json' }) },
  { name: 'not a uuid (404)', send: (c) => c.get('/v2/images/not-a-uuid') },
  { name: 'delete a protected image (403)', send: (c, ctx) => c.delete(`/v2/images/${ctx.ids.c}`) },
  { name: 'unprotect', send: (c, ctx) => patch(c, ctx.ids.c, [{ op: 'replace', path: '/protected', value: false }]) },
  ...['a', 'b', 'c', 'minimal', 'imported', 'text'].map((key) => ({
    name: `delete ${key}`,
    send: (c: HttpClient, ctx: ScenarioContext) => c.delete(`/v2/images/${ctx.ids[key]}`),
  })),
  { name: 'show a deleted image (404)', send: (c, ctx) => c.get(`/v2/images/${ctx.ids.a}`) },
  { name: 'list after deletes', send: (c, ctx) => c.get(`/v2/images?difftest_run=${ctx.run}&sort_key=name&sort_dir=asc`) },
];
