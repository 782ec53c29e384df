import { startGlance, type RunningGlance } from '../harness/glance';
import { HttpClient } from '../harness/http';
import { isPortFree } from '../harness/ports';

describe('the Glance test harness', () => {
  let glance: RunningGlance;
  let client: HttpClient;

  beforeAll(async () => {
    glance = await startGlance();
    client = new HttpClient(glance.url);
  }, 90_000);

  afterAll(async () => {
    client?.destroy();
    await glance?.stop();
  });

  test('starts a real Glance that answers GET /versions', async () => {
    const res = await client.get('/versions');
    expect(res.status).toBe(200);
    // Glance 25 (Zed) reports Image API v2.15 as its current version.
    expect(res.json().versions).toContainEqual(expect.objectContaining({ id: 'v2.15', status: 'CURRENT' }));
  });

  test('keeps uploaded image data in the file store and serves it back', async () => {
    const data = Buffer.from('stx-glance-proxy smoke bytes\n');
    const created = await client.sendJson('POST', '/v2/images', {
      name: 'harness-smoke',
      disk_format: 'raw',
      container_format: 'bare',
    });
    expect(created.status).toBe(201);
    const id: string = created.json().id;

    const upload = await client.request({
      method: 'PUT',
      path: `/v2/images/${id}/file`,
      headers: { 'Content-Type': 'application/octet-stream' },
      body: data,
    });
    expect(upload.status).toBe(204);

    const shown = await client.get(`/v2/images/${id}`);
    expect(shown.status).toBe(200);
    const image = shown.json();
    expect(image).toMatchObject({ status: 'active', size: data.length, stores: 'fs', owner: 'test-project' });
    expect(image.direct_url).toBe(`file://${glance.storeDir}/${id}`);

    const download = await client.get(`/v2/images/${id}/file`);
    expect(download.status).toBe(200);
    expect(download.body.equals(data)).toBe(true);

    expect((await client.delete(`/v2/images/${id}`)).status).toBe(204);
    expect((await client.get(`/v2/images/${id}`)).status).toBe(404);
  });

  test('stop() ends the Glance process and frees its port', async () => {
    const { pid, port } = glance;
    await glance.stop();
    expect(() => process.kill(pid, 0)).toThrow(expect.objectContaining({ code: 'ESRCH' }));
    expect(await isPortFree(port)).toBe(true);
  });
});
